"""Page-locking host memory in place (cudaHostRegister), so that offloading copies it to the GPU asynchronously.

Registering memory that a read has just written ran at about 30 GiB/s on the H100 host, where
allocating page-locked memory first (cudaHostAlloc, what `Tensor.pin_memory` and mmgp's pinning use)
ran at 1.1 GiB/s, slower than the disk (bench/pin_probe.py).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

_ALIGNMENT = 256  # bytes between tensors moved into one buffer: any dtype's, and what CUDA copies like


def page_lock(buffer: np.ndarray) -> weakref.finalize:
    """Page-lock `buffer` in place (needs CUDA). Returns the finalizer that unlocks it, which runs when
    the buffer is freed (or when called)."""
    address = buffer.ctypes.data
    status = int(torch.cuda.cudart().cudaHostRegister(address, buffer.nbytes, 1))  # 1: cudaHostRegisterPortable
    if status:
        raise RuntimeError(f"cudaHostRegister of {buffer.nbytes} bytes failed with CUDA error {status}")
    # numpy calls weak-reference callbacks before it frees an array's memory.
    unlock = weakref.finalize(buffer, _unlock, address)
    unlock.atexit = False  # the process's end releases it; CUDA may be gone by then
    return unlock


def _unlock(address: int) -> None:
    status = int(torch.cuda.cudart().cudaHostUnregister(address))
    if status:
        log.warning("cudaHostUnregister failed with CUDA error %d", status)


def page_lock_module(module: nn.Module) -> int:
    """Page-lock the plain parameters and buffers of `module` that are not page-locked yet: they move
    into one new buffer, locked in place (needs CUDA when there is any). Returns the bytes moved.

    For a model whose weights are views of a page-locked file buffer: what loading made anew (dtype
    casts, float32 modulations) is all that is left, and one copy plus one registration beats pinning
    each tensor."""
    slots = [(owner, name, tensor) for owner, name, tensor in _plain_slots(module) if not tensor.is_pinned()]
    unique = list({id(tensor): tensor for _, _, tensor in slots}.values())  # tied weights move once
    offsets, size = [], 0
    for tensor in unique:
        offsets.append(size)
        size += -(-tensor.nbytes // _ALIGNMENT) * _ALIGNMENT
    if not size:
        return 0
    buffer = np.empty(size, dtype=np.uint8)
    moved = {}
    with torch.no_grad():
        for tensor, offset in zip(unique, offsets, strict=True):
            view = torch.frombuffer(buffer, dtype=tensor.dtype, offset=offset, count=tensor.numel())
            moved[id(tensor)] = view.view(tensor.shape).copy_(tensor)
    for owner, name, tensor in slots:
        if name in owner._parameters:
            owner._parameters[name].data = moved[id(tensor)]
        else:
            owner._buffers[name] = moved[id(tensor)]
    page_lock(buffer)
    return size


def _plain_slots(module: nn.Module) -> Iterator[tuple[nn.Module, str, torch.Tensor]]:
    """(owner, name, parameter or buffer) of each non-empty one on the CPU whose data is a plain
    torch.Tensor; quantized tensor subclasses (quanto's int8 weights) are left to the buffer they view."""
    for owner in module.modules():
        for name, tensor in (*owner._parameters.items(), *owner._buffers.items()):
            if tensor is None or type(tensor.data) is not torch.Tensor:
                continue
            if tensor.numel() and tensor.device.type == "cpu":
                yield owner, name, tensor
