"""Checks and sequential reads of weight files, shared by the generator and the pose loaders.

Network volumes are slow under mmap (random page faults over the network), so weights are read
front to back into one buffer and tensors are views of it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import time
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from common.errors import VolumeFileError
from common.page_lock import page_lock
from common.pth_archive import UnsupportedArchive, state_dict_from_buffer
from common.read_order import UNORDERED, ReadOrder

log = logging.getLogger(__name__)

_SAFETENSORS_DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
# One read() per chunk: between chunks the reading thread takes the GIL back, which the threads
# building models and importing the compiler hold for milliseconds at a time (bench/start_probe.py).
_READ_CHUNK = 1 << 30


def load_pth(path: Path, reads: ReadOrder = UNORDERED) -> dict[str, torch.Tensor]:
    """A torch .pth state dict in RAM: one front-to-back read in its turn of `reads`, the tensors views of
    that buffer (common/pth_archive.py); torch.load (no mmap) for an archive that reader does not take."""
    buffer = read_sequential(path, reads)
    try:
        return state_dict_from_buffer(path, buffer)
    except zipfile.BadZipFile:
        raise VolumeFileError(path, "not a torch .pth archive (truncated or corrupt)") from None
    except (UnsupportedArchive, pickle.UnpicklingError, RuntimeError, ValueError, EOFError) as exc:
        log.info("%s: %s; reading it with torch.load", path.name, exc)
    del buffer
    return _torch_load(path, "cpu")


def _torch_load(path: Path, map_location: str) -> object:
    """torch.load with torch's safe unpickler; VolumeFileError naming the file when it fails."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise VolumeFileError(path, f"unreadable .pth ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class FileCheck:
    """The outcome of checking one volume file; `problem` is None when it passed."""

    name: str
    path: Path
    size: int | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_dict(self) -> dict:
        return {"file": self.name, "size": self.size, "ok": self.ok, "problem": self.problem}


def require_file(path: Path) -> int:
    """Size of `path`; VolumeFileError when it is missing or empty."""
    if not path.is_file():
        raise VolumeFileError(path, "missing")
    size = path.stat().st_size
    if size == 0:
        raise VolumeFileError(path, "empty file")
    return size


def read_safetensors_header(path: Path) -> tuple[dict, dict[str, str]]:
    """(tensor entries, __metadata__) of a safetensors file, validated against its size."""
    size = require_file(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise VolumeFileError(path, "truncated: no safetensors header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len <= 0 or header_len > min(size - 8, 100 << 20):
            raise VolumeFileError(path, f"not a safetensors file (header length {header_len})")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VolumeFileError(path, f"unreadable safetensors header ({exc})") from None
    metadata = header.pop("__metadata__", None) or {}
    data_len = size - 8 - header_len
    end = max((entry["data_offsets"][1] for entry in header.values()), default=0)
    if end > data_len:
        raise VolumeFileError(path, f"truncated: tensors need {end} bytes of data, the file has {data_len}")
    return header, metadata


def check_keys(path: Path, present: Iterable[str], required: Iterable[str]) -> None:
    """VolumeFileError naming the first few required keys that are absent."""
    missing = sorted(set(required) - set(present))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise VolumeFileError(path, f"missing keys: {shown} (wrong or corrupt checkpoint?)")


def check_layout(
    path: Path,
    found: Mapping[str, Sequence[int]] | Iterable[str],
    expected: Mapping[str, Sequence[int]] | Iterable[str],
    what: str,
) -> None:
    """VolumeFileError for missing or unexpected keys and, where both sides carry shapes, a wrong shape.

    `what` names the checkpoint the file should be ("a Wan2.1 VAE"), for the unexpected-keys message."""
    found_keys, expected_keys = set(found), set(expected)
    check_keys(path, found_keys, expected_keys)
    unexpected = sorted(found_keys - expected_keys)
    if unexpected:
        raise VolumeFileError(path, f"unexpected keys: {', '.join(unexpected[:5])} (not {what}?)")
    if isinstance(found, Mapping) and isinstance(expected, Mapping):
        for key, shape in expected.items():
            if tuple(found[key]) != tuple(shape):
                raise VolumeFileError(path, f"tensor {key} has shape {tuple(found[key])}, expected {tuple(shape)}")


def pth_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """key -> shape of a torch .pth state dict, unpickled onto the meta device (no tensor data read)."""
    require_file(path)
    if not zipfile.is_zipfile(path):
        raise VolumeFileError(path, "not a torch .pth archive (truncated or corrupt)")
    state = _torch_load(path, "meta")
    if not isinstance(state, dict):
        raise VolumeFileError(path, f"expected a state dict, found {type(state).__name__}")
    return {key: tuple(value.shape) for key, value in state.items()}


def read_sequential(path: Path, reads: ReadOrder = UNORDERED) -> np.ndarray:
    """The whole file as uint8, read front to back in large chunks (no mmap) in its turn of `reads`."""
    size = require_file(path)
    # np.empty, not bytearray: zero-filling 16 GB first costs as much as a third of the read.
    buffer = np.empty(size, dtype=np.uint8)
    with reads.turn(path):
        started = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead window
            _read_into(f, path, buffer, reads)
    log.info("read %s (%.1f GB) in %.1f s", path.name, size / 1e9, time.perf_counter() - started)
    return buffer


def _read_into(f: BinaryIO, path: Path, buffer: np.ndarray, reads: ReadOrder) -> None:
    """Fill `buffer` with the file's bytes, in large chunks, until done or `reads` are cancelled."""
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        reads.raise_if_cancelled()
        n = f.readinto(view[done : done + _READ_CHUNK])
        if not n:
            raise VolumeFileError(path, f"truncated while reading at byte {done}")
        done += n


def _tensor_from(path: Path, name: str, entry: dict, buffer, offset: int) -> torch.Tensor:
    """The tensor of a safetensors header `entry` whose data starts at `offset` in `buffer`."""
    dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
    if dtype is None:
        raise VolumeFileError(path, f"tensor {name}: unsupported dtype {entry['dtype']}")
    start, end = entry["data_offsets"]
    if start == end:
        return torch.empty(entry["shape"], dtype=dtype)
    return torch.frombuffer(buffer, dtype=dtype, offset=offset, count=(end - start) // dtype.itemsize).view(entry["shape"])


def load_safetensors_sequential(
    path: Path, reads: ReadOrder = UNORDERED, *, page_locked: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a safetensors file read sequentially in its turn of `reads`; tensors share
    one buffer, page-locked after the read when `page_locked` (needs CUDA)."""
    header, metadata = read_safetensors_header(path)
    buffer = read_sequential(path, reads)
    if page_locked:
        page_lock(buffer)
    (header_len,) = struct.unpack("<Q", buffer[:8].tobytes())
    base = 8 + header_len
    tensors = {name: _tensor_from(path, name, entry, buffer, base + entry["data_offsets"][0]) for name, entry in header.items()}
    return tensors, metadata
