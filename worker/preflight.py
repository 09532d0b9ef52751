"""Checks that a worker is fit to take jobs, each failure naming what is wrong.

Registered as RunPod fitness checks (run once before the job loop in production; a failure stops the
worker instead of letting it take jobs it cannot do) and reused by the status job.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psutil
import torch

from common.files import FileCheck
from pose.files import MATANYONE_FILE, SAM_FILE, check_pose_files
from wan2gp_integration.files import check_generator_files
from worker.cuda_arch import check_cuda_arch
from worker.settings import Settings

log = logging.getLogger(__name__)

GIB = 1 << 30


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


def check_memory(min_vram_gib: float, min_ram_gib: float) -> None:
    """NotFitError when free VRAM (device 0) or total host RAM is under what the offload profile needs."""
    ram = psutil.virtual_memory().total / GIB
    if ram < min_ram_gib:
        raise NotFitError(f"host RAM is {ram:.1f} GiB; the chosen offload profile needs {min_ram_gib:.0f} GiB")
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(0)
        if free / GIB < min_vram_gib:
            raise NotFitError(
                f"free VRAM is {free / GIB:.1f} GiB; the chosen offload profile needs {min_vram_gib:.0f} GiB"
            )


def register_fitness_checks(settings: Settings) -> None:
    """Register the volume, CUDA and memory checks with the RunPod SDK (they run in production only)."""
    from runpod.serverless import register_fitness_check

    register_fitness_check(lambda: check_volume(settings.model_root))
    if settings.device != "cpu":
        register_fitness_check(check_cuda)
