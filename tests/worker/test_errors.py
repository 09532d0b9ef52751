"""Every failure becomes {"error": ...} without a traceback; CUDA OOM and fatal CUDA errors refresh the worker."""

from __future__ import annotations

import torch

from common.errors import InputError, JobCancelled, VolumeFileError
from worker.errors import error_response


def test_input_error_message_is_passed_through():
    assert error_response(InputError("width: must be a multiple of 32")) == {"error": "width: must be a multiple of 32"}


def test_volume_file_error_names_the_file():
    answer = error_response(VolumeFileError("/runpod-volume/x.safetensors", "missing"))
    assert answer == {"error": "model file /runpod-volume/x.safetensors: missing"}


def test_cancelled_job_says_so_and_keeps_the_worker():
    assert error_response(JobCancelled()) == {"error": "job cancelled"}


def test_cuda_oom_refreshes_the_worker():
    answer = error_response(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert answer["refresh_worker"] is True and "CUDA out of memory" in answer["error"]


def test_fatal_cuda_error_refreshes_the_worker():
    answer = error_response(RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors ..."))
    assert answer["refresh_worker"] is True
    assert "illegal memory access" in answer["error"] and "\n" not in answer["error"]


def test_unexpected_error_is_named_without_a_traceback():
    try:
        {}["missing"]
    except KeyError as exc:
        answer = error_response(exc)
    assert answer == {"error": "internal error: KeyError: 'missing'"}


def test_ordinary_runtime_error_does_not_refresh_the_worker():
    assert "refresh_worker" not in error_response(RuntimeError("shape mismatch"))
