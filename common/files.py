"""Checks and sequential reads of weight files, shared by the generator and the pose loaders.

Network volumes are slow under mmap (random page faults over the network), so weights are read
front to back into one buffer and tensors are views of it.
"""

from __future__ import annotations

import json
import logging
import pickle
import struct
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from common.errors import VolumeFileError
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
_READ_CHUNK = 64 << 20


def load_pth(path: Path, reads: ReadOrder = UNORDERED) -> dict[str, torch.Tensor]:
    """A torch .pth state dict in RAM: one front-to-back read in its turn of `reads`, the tensors views of
    that buffer (common/pth_archive.py); torch.load (no mmap) for an archive that reader does not take."""
    with reads.turn(path):
        buffer = read_sequential(path)
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


def read_sequential(path: Path) -> np.ndarray:
    """The whole file as uint8, read front to back in large chunks (no mmap)."""
    size = require_file(path)
    # np.empty, not bytearray: zero-filling 16 GB first costs as much as a third of the read.
    buffer = np.empty(size, dtype=np.uint8)
    with open(path, "rb", buffering=0) as f:
        _read_into(f, path, buffer, 0)
    return buffer


def _read_into(f: BinaryIO, path: Path, buffer: np.ndarray, offset: int) -> None:
    """Fill `buffer` with the file's bytes from `offset` on, in large chunks."""
    view, done = memoryview(buffer), 0
    f.seek(offset)
    while done < len(buffer):
        n = f.readinto(view[done : done + _READ_CHUNK])
        if not n:
            raise VolumeFileError(path, f"truncated while reading at byte {offset + done}")
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


def plan_pieces(header: Mapping[str, dict], piece_bytes: int) -> list[tuple[int, int, list[str]]]:
    """Split a safetensors data section at tensor boundaries into (start, end, tensor names) pieces of
    about `piece_bytes` (a larger tensor is a piece of its own), in file order."""
    pieces: list[tuple[int, int, list[str]]] = []
    for name in sorted(header, key=lambda key: header[key]["data_offsets"][0]):
        start, end = header[name]["data_offsets"]
        if pieces and end - pieces[-1][0] <= piece_bytes:
            first, _, names = pieces[-1]
            pieces[-1] = (first, end, [*names, name])
        else:
            pieces.append((start, end, [name]))
    return pieces


def pinned_empty(size: int) -> np.ndarray:
    """`size` bytes of page-locked host memory (needs CUDA), as a numpy view of a torch tensor."""
    return torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy()


def load_safetensors_in_pieces(
    path: Path,
    allocate: Callable[[int], np.ndarray] = pinned_empty,
    piece_bytes: int = 1 << 30,
    reads: ReadOrder = UNORDERED,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) like `load_safetensors_sequential`, in buffers from `allocate` (by default
    page-locked memory, which lets offloading copy to the GPU asynchronously without pinning afterwards).

    Page-locking is slower than the disk (mmgp took 16 s to pin the 16.6 GB DiT on the H100 host), so a
    second thread allocates the pieces from the start, also while the read waits for its turn of `reads`."""
    header, metadata = read_safetensors_header(path)
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
    base = 8 + header_len
    pieces = plan_pieces(header, piece_bytes)
    tensors: dict[str, torch.Tensor] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pin") as allocator, open(path, "rb", buffering=0) as f:
        buffers = [allocator.submit(allocate, end - start) for start, end, _ in pieces]
        with reads.turn(path):
            for (start, _, names), future in zip(pieces, buffers, strict=True):
                buffer = future.result()
                _read_into(f, path, buffer, base + start)
                for name in names:
                    offset = header[name]["data_offsets"][0] - start
                    tensors[name] = _tensor_from(path, name, header[name], buffer, offset)
    return tensors, metadata


def load_safetensors_sequential(
    path: Path, reads: ReadOrder = UNORDERED
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of a safetensors file read sequentially in its turn of `reads`; tensors share one buffer."""
    header, metadata = read_safetensors_header(path)
    with reads.turn(path):
        buffer = read_sequential(path)
    (header_len,) = struct.unpack("<Q", buffer[:8].tobytes())
    base = 8 + header_len
    tensors = {name: _tensor_from(path, name, entry, buffer, base + entry["data_offsets"][0]) for name, entry in header.items()}
    return tensors, metadata
