"""mmgp offload profiles: which one fits this GPU and host, and setting it up.

Profiles (mmgp's numbering): 1 HighRAM_HighVRAM (every model pinned in RAM, each loaded whole into
VRAM), 2 HighRAM_LowVRAM (pinned, streamed block by block under budgets), 3 LowRAM_HighVRAM (only
the transformer pinned, loaded whole), 4 LowRAM_LowVRAM (transformer pinned, streamed; Wan2GP's
default), 5 VerylowRAM_LowVRAM (nothing pinned, streamed). The real volume holds a 16.6 GB int8 DiT
and an 11.4 GB bf16 umT5, about 30 GB in all.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import torch
import torch._inductor.config
from torch import nn

log = logging.getLogger(__name__)

PROFILE_NAMES = {
    1: "HighRAM_HighVRAM",
    2: "HighRAM_LowVRAM",
    3: "LowRAM_HighVRAM",
    4: "LowRAM_LowVRAM",
    5: "VerylowRAM_LowVRAM",
}
# Enough VRAM to hold the int8 DiT whole plus the activations of 81 frames at 896x512 (an A100-40GB reports 42.3e9).
HIGH_VRAM_BYTES = 38e9
# Enough RAM to pin every model (about 30 GB) beside the pose models and the job's frames.
HIGH_RAM_BYTES = 60e9
# Enough RAM to pin the transformer (16.6 GB) and keep the text encoder unpinned.
LOW_RAM_BYTES = 30e9
# Wan2GP's budgets (MB of VRAM per model at a time) for the block-streaming profiles.
STREAMING_BUDGETS = {"transformer": 100, "text_encoder": 100, "*": 3000}
_STREAMING_PROFILES = (2, 4, 5)
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def choose_profile(vram_bytes: float, ram_bytes: float) -> int:
    """The fastest profile that fits `vram_bytes` of GPU memory and `ram_bytes` of host memory."""
    high_vram = vram_bytes >= HIGH_VRAM_BYTES
    if ram_bytes >= HIGH_RAM_BYTES:
        return 1 if high_vram else 2
    if ram_bytes >= LOW_RAM_BYTES:
        return 3 if high_vram else 4
    return 5


def host_ram_bytes() -> int:
    """Physical memory, capped by the container's cgroup limit when there is one."""
    total = _meminfo_total()
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))  # cgroup v1 reports "unlimited" as a huge number; min() handles it
    return total


def _meminfo_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemTotal")


def resolve_profile(configured: int | None, device: torch.device) -> int:
    """`configured` when given (validated), otherwise the choice for this GPU's VRAM and the host's RAM."""
    if configured is not None:
        if configured not in PROFILE_NAMES:
            raise ValueError(f"offload profile must be one of 1..5, got {configured}")
        return configured
    vram = torch.cuda.get_device_properties(device).total_memory
    ram = host_ram_bytes()
    profile = choose_profile(vram, ram)
    log.info("offload profile %d (%s) for %.1f GB VRAM, %.1f GB RAM", profile, PROFILE_NAMES[profile], vram / 1e9,
             ram / 1e9)  # fmt: skip
    return profile


def profile_options(profile_no: int, *, compile: bool = False, pin_memory: bool | None = None) -> dict:
    """Keyword arguments for `mmgp.offload.profile` besides the modules and the profile number.

    The DiT is int8 already (no quantization on the fly). The text encoder is quantized on the fly only
    for profile 5, where RAM cannot hold it in bf16 beside the DiT. Budgets go in as a dict: mmgp
    silently ignores a bare number. Profiles 1 and 3 load models whole, so they get no budgets.
    `compile` lets mmgp torch.compile the transformer's blocks (it keeps block streaming working).
    `pin_memory` None keeps mmgp's pinning for the streaming profiles (their asynchronous block copies
    need it) and turns it off for the whole-model profiles 1 and 3: on an H100, pinning cost profile 1
    a cold start of 70 s instead of 28 s and gained nothing per step (docs/PERFORMANCE.md).
    """
    options: dict = {"quantizeTransformer": False, "verboseLevel": 0}
    if compile:
        options["compile"] = ["transformer"]
    if pin_memory is None and profile_no not in _STREAMING_PROFILES:
        pin_memory = False
    if pin_memory is not None:
        options["pinnedMemory"] = pin_memory
    if profile_no != 5:
        options["extraModelsToQuantize"] = []
    if profile_no in _STREAMING_PROFILES:
        options["budgets"] = dict(STREAMING_BUDGETS)
    return options


def pins_transformer(profile_no: int, pin_memory: bool | None) -> bool:
    """Whether mmgp keeps the transformer in page-locked RAM under these options (see `profile_options`):
    forced by `pin_memory`, else mmgp's own defaults, where profiles 2 and 4 pin it and 5 pins nothing."""
    return pin_memory if pin_memory is not None else profile_no in (2, 4)


def setup_offload(modules: dict[str, nn.Module], profile_no: int, *, compile: bool = False,
                  pin_memory: bool | None = None) -> object:  # fmt: skip
    """Hand `modules` ("transformer", "text_encoder", "vae", ...) to mmgp under `profile_no`; returns mmgp's handle.

    Keep the handle alive as long as the modules are used. mmgp leaves torch's default device set to
    cuda; it is restored here so later allocations stay explicit.
    """
    from mmgp import offload  # imports CUDA helpers; only the CUDA path needs it

    if compile:
        # Let inductor round to bf16 wherever eager does: fused float32 chains otherwise drift from the
        # eager bf16 reference (1.69% over a forward on the H100 instead of 0.80%, at the same speed).
        torch._inductor.config.emulate_precision_casts = True
    previous = torch.get_default_device()
    # mmgp collects garbage up to three times while it sets up. Each full pass walked every object the
    # libraries and models had made so far (0.4 s on the H100 host); frozen, those are skipped.
    gc.freeze()
    try:
        handle = offload.profile(modules, profile_no, **profile_options(profile_no, compile=compile, pin_memory=pin_memory))
    finally:
        gc.unfreeze()
        torch.set_default_device(previous)
    log.info("mmgp profile %d (%s) set up for %s", profile_no, PROFILE_NAMES[profile_no], ", ".join(modules))
    return handle
