"""Checks that a worker is fit to take jobs, each failure naming what is wrong.

Registered as RunPod fitness checks (run once before the job loop in production; a failure stops the
worker instead of letting it take jobs it cannot do) and reused by the status job.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from common.files import FileCheck
from pose.files import MATANYONE_FILE, SAM_FILE, check_pose_files
from wan2gp_integration import offload
from wan2gp_integration.files import check_generator_files
from worker.cuda_arch import check_cuda_arch
from worker.settings import Settings

log = logging.getLogger(__name__)

GIB = 1 << 30
MIN_STREAMING_VRAM_BYTES = 12e9
MIN_RAM_BYTES = 24e9


class NotFitError(RuntimeError):
    """The worker cannot serve jobs here; the message says why."""


def volume_checks(root: Path) -> list[FileCheck]:
    """One FileCheck per file the worker reads (SAM and MatAnyone only when present: they are optional)."""
    multi_person = (root / SAM_FILE).exists() or (root / MATANYONE_FILE).exists()
    return check_generator_files(root) + check_pose_files(root, multi_person=multi_person)


def check_volume(root: Path) -> None:
    """NotFitError listing every volume file that is missing or malformed."""
    if not root.is_dir():
        raise NotFitError(f"model root {root} does not exist (is the network volume attached? SCAIL_MODEL_ROOT)")
    bad = [check for check in volume_checks(root) if not check.ok]
    if bad:
        listed = "; ".join(f"{check.name}: {check.problem}" for check in bad)
        raise NotFitError(f"{len(bad)} model file(s) under {root} failed their checks: {listed}")


def check_cuda() -> str:
    """NotFitError unless CUDA runs a kernel on device 0 with this build; returns its arch, e.g. 'sm_90'."""
    if not torch.cuda.is_available():
        raise NotFitError("CUDA is not available (no GPU visible, or the driver does not match this image)")
    arch = check_cuda_arch(0)
    try:
        probe = torch.ones(1024, device="cuda")
        probe.mul_(2).sum().item()
        torch.cuda.synchronize()
    except RuntimeError as exc:
        raise NotFitError(f"CUDA is visible but unusable on this host: {exc}") from None
    return arch


def profile_requirements(profile: int) -> tuple[float, float]:
    """(VRAM, host RAM) in bytes that offload `profile` needs: the thresholds it is chosen by, and floors
    for the streaming profiles (a DiT block plus the activations of 81 frames at 896x512; the int8 DiT
    and the text encoder quantized on the fly in RAM for profile 5)."""
    whole_vram = offload.HIGH_VRAM_BYTES
    return {
        1: (whole_vram, offload.HIGH_RAM_BYTES),
        2: (MIN_STREAMING_VRAM_BYTES, offload.HIGH_RAM_BYTES),
        3: (whole_vram, offload.LOW_RAM_BYTES),
        4: (MIN_STREAMING_VRAM_BYTES, offload.LOW_RAM_BYTES),
        5: (MIN_STREAMING_VRAM_BYTES, MIN_RAM_BYTES),
    }[profile]


def check_memory(settings: Settings) -> int:
    """NotFitError when GPU 0 or the host has less memory than the offload profile needs; returns the profile."""
    device = torch.device("cuda", 0)
    profile = offload.resolve_profile(settings.offload_profile, device)  # Settings holds it to 1..5
    need_vram, need_ram = profile_requirements(profile)
    vram = torch.cuda.get_device_properties(device).total_memory
    ram = offload.host_ram_bytes()
    name = f"offload profile {profile} ({offload.PROFILE_NAMES[profile]})"
    if vram < need_vram:
        raise NotFitError(f"GPU has {vram / GIB:.1f} GiB of VRAM; {name} needs {need_vram / GIB:.1f} GiB")
    if ram < need_ram:
        raise NotFitError(f"host has {ram / GIB:.1f} GiB of RAM; {name} needs {need_ram / GIB:.1f} GiB")
    return profile


def register_fitness_checks(settings: Settings) -> None:
    """Register the volume, CUDA and memory checks with the RunPod SDK (they run in production only)."""
    from runpod.serverless import register_fitness_check

    register_fitness_check(lambda: check_volume(settings.model_root))
    if settings.device != "cpu":
        register_fitness_check(check_cuda)
        register_fitness_check(lambda: check_memory(settings))
