"""The diagnostic job `{"input": {"action": "status"}}`: what a user runs first on a new endpoint.

Answers without generating: software versions, the GPU and host memory, the engine's offload profile
and attention backend, whether it is loaded and warm, and every volume file with its size and check.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform

import psutil
import torch

from wan2gp_integration import offload
from wan2gp_integration.attention import current_backend, resolve_backend
from wan2gp_integration.gemm import resolve_gemm
from worker.engine import Engine
from worker.media import ffmpeg_version
from worker.models import choose_device
from worker.preflight import GIB, volume_checks
from worker.settings import Settings

log = logging.getLogger(__name__)

_PACKAGES = (
    "runpod", "torch", "torchvision", "mmgp", "optimum-quanto", "diffusers", "transformers",
    "onnxruntime", "onnxruntime-gpu", "numpy", "pydantic", "boto3", "imageio-ffmpeg",
)  # fmt: skip


def status_report(settings: Settings, engine: Engine | None, startup_error: str | None = None) -> dict:
    """The status job's answer (plain JSON types)."""
    files = [check.as_dict() for check in volume_checks(settings.model_root)] if settings.model_root.is_dir() else []
    return {
        "status": "ready" if engine is not None else "not ready",
        "startup_error": startup_error,
        "versions": _versions(),
        "gpu": _gpu(),
        "host": _host(),
        "engine": _engine(settings, engine),
        "volume": {
            "model_root": str(settings.model_root),
            "exists": settings.model_root.is_dir(),
            "all_ok": bool(files) and all(entry["ok"] for entry in files),
            "files": files,
        },
        "output": _output(settings),
    }


def _versions() -> dict:
    versions = {"python": platform.python_version(), "cuda": torch.version.cuda, "ffmpeg": ffmpeg_version()}
    if torch.backends.cudnn.is_available():
        versions["cudnn"] = torch.backends.cudnn.version()
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _gpu() -> dict | None:
    if not torch.cuda.is_available():
        return None
    free, total = torch.cuda.mem_get_info(0)
    major, minor = torch.cuda.get_device_capability(0)
    return {
        "name": torch.cuda.get_device_name(0),
        "compute_capability": f"{major}.{minor}",
        "count": torch.cuda.device_count(),
        "vram_free_gib": round(free / GIB, 2),
        "vram_total_gib": round(total / GIB, 2),
        "arch_list": torch.cuda.get_arch_list(),
    }


def _host() -> dict:
    memory = psutil.virtual_memory()
    return {
        "ram_total_gib": round(memory.total / GIB, 2),
        "ram_available_gib": round(memory.available / GIB, 2),
        "cpu_count": psutil.cpu_count(),
    }


def _engine(settings: Settings, engine: Engine | None) -> dict:
    device = engine.device if engine is not None else choose_device(settings.device)
    return {
        "loaded": engine is not None,
        "warm": engine is not None and engine.warm,
        "jobs_done": engine.jobs_done if engine is not None else 0,
        "device": str(device),
        "offload_profile": _profile(settings, device),
        # Once loaded, the backend in use (a missing package falls back); before, what the setting resolves to.
        "attention": current_backend() if engine is not None else _attention(settings.attention, device),
        "gemm": engine.pipeline.gemm if engine is not None else _gemm(settings, device),
        "multi_person": engine is not None and engine.multi_person,
        "self_test": settings.self_test,
    }


def _profile(settings: Settings, device: torch.device) -> dict | None:
    """The mmgp profile in use on CUDA, with its name; None on CPU (models stay resident)."""
    if device.type != "cuda":
        return None
    number = offload.resolve_profile(settings.offload_profile, device)
    return {"number": number, "name": offload.PROFILE_NAMES[number], "configured": settings.offload_profile is not None}


def _attention(name: str, device: torch.device) -> str:
    try:
        return resolve_backend(name, device)
    except ValueError as exc:
        return f"invalid: {exc}"


def _gemm(settings: Settings, device: torch.device) -> str:
    """The GEMM mode a load would use for the blocks' int8 Linears (wan2gp_integration.gemm)."""
    return resolve_gemm(settings.gemm, device)


def _output(settings: Settings) -> dict:
    bucket = settings.bucket
    return {
        "uploads": bucket is not None,
        "bucket": {"endpoint_url": bucket.endpoint_url, "name": bucket.name} if bucket else None,
        "url_expiry_s": settings.url_expiry_s,
        "local_output_dir": None if bucket else str(settings.output_dir.resolve()),
        "max_base64_bytes": settings.max_base64_bytes,
    }
