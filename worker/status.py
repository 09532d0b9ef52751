"""The diagnostic job `{"input": {"action": "status"}}`: what a user runs first on a new endpoint.

Answers without generating: software versions, the GPU and host memory, the engine's offload profile
and attention backend, whether it is loaded and warm, and every volume file with its size and check.
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
from typing import TYPE_CHECKING

import psutil
import torch

from worker.media import ffmpeg_version
from worker.preflight import GIB, volume_checks
from worker.settings import Settings

if TYPE_CHECKING:
    from worker.engine import Engine

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
    pipeline = engine.pipeline if engine is not None else None
    return {
        "loaded": engine is not None,
        "warm": engine is not None and engine.warm,
        "jobs_done": engine.jobs_done if engine is not None else 0,
        "device": str(engine.device) if engine is not None else settings.device,
        "offload_profile": getattr(pipeline, "profile", settings.offload_profile),
        "attention": getattr(pipeline, "attention", settings.attention),
        "multi_person": engine is not None and engine.multi_person,
        "self_test": settings.self_test,
    }


def _output(settings: Settings) -> dict:
    bucket = settings.bucket
    return {
        "uploads": bucket is not None,
        "bucket": {"endpoint_url": bucket.endpoint_url, "name": bucket.name} if bucket else None,
        "url_expiry_s": settings.url_expiry_s,
        "local_output_dir": None if bucket else str(settings.output_dir.resolve()),
        "max_base64_bytes": settings.max_base64_bytes,
    }
