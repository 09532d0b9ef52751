"""Name an unsupported GPU architecture at start, not as "no kernel image is available" in the middle of a job.

    python -m worker.cuda_arch     # exits 1 when this PyTorch build misses one of TARGET_CAPABILITIES

A PyTorch CUDA build carries machine code (cubins) for a list of architectures, `torch.cuda.get_arch_list()`,
and sometimes PTX that the driver compiles for newer GPUs. The compatibility rules of CUDA binaries:
- `sm_XY` runs on compute capability X.Z for any Z >= Y (same major version);
- `sm_XYf` (family-specific) follows the same rule;
- `sm_XYa` (architecture-specific, e.g. sm_90a) runs on X.Y only;
- `compute_XY` (PTX) runs on any capability >= X.Y.
"""

from __future__ import annotations

import logging
import re
import sys

import torch

log = logging.getLogger(__name__)

_ARCH = re.compile(r"^(sm|compute)_(\d+)(\d)([af]?)$")

# The GPUs this worker is built for, by compute capability (what to name in errors and the README).
TARGET_CAPABILITIES: dict[tuple[int, int], str] = {
    (8, 0): "Ampere (A100)",
    (8, 6): "Ampere (A40, A10, RTX 3090, RTX A6000)",
    (8, 9): "Ada (L4, L40S, RTX 4090, RTX 6000 Ada)",
    (9, 0): "Hopper (H100, H200)",
    (10, 0): "Blackwell (B200)",
    (12, 0): "Blackwell (RTX 5090, RTX PRO 6000)",
}


class UnsupportedGpuError(RuntimeError):
    """This PyTorch build has no kernels that can run on the GPU it was started on."""


def parse_arch(entry: str) -> tuple[str, tuple[int, int], str]:
    """'sm_86' -> ('sm', (8, 6), ''); 'sm_90a' -> ('sm', (9, 0), 'a'); 'compute_120' -> ('compute', (12, 0), '')."""
    match = _ARCH.match(entry)
    if match is None:
        raise ValueError(f"not a CUDA architecture name: {entry!r}")
    kind, major, minor, suffix = match.groups()
    return kind, (int(major), int(minor)), suffix


def can_run(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a build compiled for `arch_list` has code that runs on a GPU of `capability`."""
    for entry in arch_list:
        kind, built, suffix = parse_arch(entry)
        if kind == "compute" and built <= capability:
            return True
        if kind == "sm" and suffix == "a" and built == capability:
            return True
        if kind == "sm" and suffix != "a" and built[0] == capability[0] and built[1] <= capability[1]:
            return True
    return False


def arch_name(capability: tuple[int, int]) -> str:
    """(8, 6) -> 'sm_86'."""
    return f"sm_{capability[0]}{capability[1]}"


def missing_targets(arch_list: list[str]) -> list[str]:
    """The target GPUs (see TARGET_CAPABILITIES) that a build for `arch_list` cannot run on."""
    return [f"{arch_name(cap)} {gpus}" for cap, gpus in TARGET_CAPABILITIES.items() if not can_run(cap, arch_list)]


def check_cuda_arch(device_index: int = 0) -> str:
    """Check that this PyTorch build runs on CUDA device `device_index` and return its name, e.g. 'sm_89'.

    Raises UnsupportedGpuError naming the GPU, its architecture and the architectures of this build.
    """
    capability = tuple(torch.cuda.get_device_capability(device_index))
    gpu = torch.cuda.get_device_name(device_index)
    arch_list = torch.cuda.get_arch_list()
    if not can_run(capability, arch_list):
        raise UnsupportedGpuError(
            f"GPU {gpu} ({arch_name(capability)}) is not supported by this image's PyTorch "
            f"{torch.__version__} (CUDA {torch.version.cuda}), built for {', '.join(arch_list)}. "
            f"Choose one of: {'; '.join(TARGET_CAPABILITIES.values())}."
        )
    log.info("GPU %s (%s) is supported by PyTorch %s", gpu, arch_name(capability), torch.__version__)
    return arch_name(capability)


def main() -> int:
    """Check the installed PyTorch build against every target GPU (the Docker build runs this)."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    arch_list = torch.cuda.get_arch_list()
    missing = missing_targets(arch_list)
    if missing:
        log.error("PyTorch %s built for %s has no kernels for: %s", torch.__version__, arch_list, "; ".join(missing))
        return 1
    log.info("PyTorch %s (CUDA %s) runs on %s", torch.__version__, torch.version.cuda, ", ".join(arch_list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
