"""Map any failure of a job to the answer RunPod gets: `{"error": "..."}`, never a traceback.

A CUDA out-of-memory or a fatal CUDA error leaves the process in a state the next job should not
inherit, so those also set `refresh_worker` (RunPod restarts the worker after answering).
"""

from __future__ import annotations

import logging

import torch

from common.errors import JobCancelled, ScailError
from worker.storage import StorageError

log = logging.getLogger(__name__)

# Messages of errors after which the CUDA context cannot be trusted any more.
_FATAL_CUDA_MARKERS = (
    "cuda error",
    "cudnn_status",
    "cublas_status",
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "nccl error",
    "cuda driver",
    "ecc error",
)


def error_response(exc: BaseException, job_id: str = "-") -> dict:
    """The job's answer for `exc`; logs the traceback of anything unexpected."""
    if isinstance(exc, JobCancelled):
        log.info("job %s: %s", job_id, exc)
        return {"error": str(exc)}
    if isinstance(exc, ScailError | StorageError):  # InputError, VolumeFileError: their message is the answer
        log.warning("job %s failed: %s", job_id, exc)
        return {"error": str(exc)}
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "cuda out of memory" in str(exc).lower():
        log.error("job %s: CUDA out of memory", job_id, exc_info=exc)
        return {
            "error": "CUDA out of memory: try a smaller width/height or fewer num_frames, or a lower "
            "SCAIL_OFFLOAD_PROFILE; the worker restarts after this job",
            "refresh_worker": True,
        }
    if isinstance(exc, MemoryError):
        log.error("job %s: host out of memory", job_id, exc_info=exc)
        return {"error": "host RAM exhausted: try a smaller job; the worker restarts after this job", "refresh_worker": True}
    if is_fatal_cuda_error(exc):
        log.error("job %s: fatal CUDA error", job_id, exc_info=exc)
        return {"error": f"fatal CUDA error ({_first_line(exc)}); the worker restarts after this job", "refresh_worker": True}
    log.error("job %s: unexpected failure", job_id, exc_info=exc)
    return {"error": f"internal error: {type(exc).__name__}: {_first_line(exc)}"}


def is_fatal_cuda_error(exc: BaseException) -> bool:
    """True for errors that leave the CUDA context unusable (launch failures, asserts, driver errors)."""
    if torch.cuda.is_available() and isinstance(exc, torch.AcceleratorError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _FATAL_CUDA_MARKERS)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
