"""A torch .pth state dict from one sequential read of its file, with the tensors as views of that buffer.

torch.load reads a .pth archive record by record and copies each into its own storage: on the H100
host it took the 11.4 GB umT5 file 8.6 s where one front-to-back read takes 6.6 s, and those 2 s sit on
the cold start's critical path (docs/PERFORMANCE.md). A .pth is a zip of uncompressed records, aligned
for exactly this use, plus a pickle (data.pkl) that names a record for every storage. Here the pickle is
read with an allowlist of the few globals a state dict of tensors needs; anything else (or a layout this
reader does not know) raises `UnsupportedArchive`, and the caller falls back to torch.load.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

# Storage classes a tensor's data can be pickled under, and the element type each one holds.
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # a zip entry's local file header (30 bytes)
_LOCAL_HEADER_SIGNATURE = b"PK\x03\x04"


class UnsupportedArchive(Exception):
    """The file is not a plain state dict of tensors in the zip layout this reader knows."""


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


def state_dict_from_buffer(path: Path, buffer: np.ndarray) -> dict[str, torch.Tensor]:
    """The state dict in `buffer` (the whole file at `path`, read front to back); tensors share its memory."""
    with zipfile.ZipFile(path) as archive:  # only the central directory at the file's end is read here
        entries = {info.filename: info for info in archive.infolist()}
    pickles = [name for name in entries if name.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise UnsupportedArchive(f"expected one data.pkl record, found {len(pickles)}")
    prefix = pickles[0][: -len("data.pkl")]
    byteorder = entries.get(prefix + "byteorder")
    if byteorder is not None and bytes(_record(buffer, byteorder)) != b"little":
        raise UnsupportedArchive("big-endian archive")

    def record_tensor(key: str, dtype: torch.dtype) -> torch.Tensor:
        info = entries.get(f"{prefix}data/{key}")
        if info is None:
            raise UnsupportedArchive(f"no record for storage {key}")
        start, size = _record_span(buffer, info)
        if size % dtype.itemsize or start % dtype.itemsize:
            raise UnsupportedArchive(f"record {key} is not aligned to {dtype}")
        if size == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(buffer, dtype=dtype, offset=start, count=size // dtype.itemsize)

    state = _StateDictUnpickler(bytes(_record(buffer, entries[pickles[0]])), record_tensor).load()
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise UnsupportedArchive("not a flat state dict of tensors")
    return dict(state)


def _record_span(buffer: np.ndarray, info: zipfile.ZipInfo) -> tuple[int, int]:
    """(offset in the file, size) of a stored record's bytes."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise UnsupportedArchive(f"record {info.filename} is compressed")
    header = bytes(buffer[info.header_offset : info.header_offset + _LOCAL_HEADER.size])
    if len(header) != _LOCAL_HEADER.size:
        raise UnsupportedArchive(f"record {info.filename} lies past the end of the file")
    fields = _LOCAL_HEADER.unpack(header)
    if fields[0] != _LOCAL_HEADER_SIGNATURE:
        raise UnsupportedArchive(f"record {info.filename} has no local header")
    name_length, extra_length = fields[9], fields[10]
    start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
    if start + info.file_size > len(buffer):
        raise UnsupportedArchive(f"record {info.filename} lies past the end of the file")
    return start, info.file_size


def _record(buffer: np.ndarray, info: zipfile.ZipInfo) -> np.ndarray:
    start, size = _record_span(buffer, info)
    return buffer[start : start + size]


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles data.pkl with only what a state dict of tensors needs; storages come from `record_tensor`."""

    def __init__(self, data: bytes, record_tensor) -> None:
        super().__init__(io.BytesIO(data))
        self._record_tensor = record_tensor
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UnsupportedArchive(f"global {module}.{name} is outside the state-dict allowlist")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsupportedArchive(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if key not in self._storages:
            elements = self._record_tensor(str(key), storage_type.dtype)
            if elements.numel() != numel:
                raise UnsupportedArchive(f"storage {key} holds {elements.numel()} elements, the pickle says {numel}")
            self._storages[key] = elements
        return self._storages[key]


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None) -> torch.Tensor:  # fmt: skip
    """A tensor over `storage` (a flat tensor of a record's elements), as torch.save described it."""
    if not isinstance(storage, torch.Tensor) or requires_grad or backward_hooks or metadata:
        raise UnsupportedArchive("a tensor with autograd state or metadata")
    return storage.as_strided(tuple(size), tuple(stride), offset)
