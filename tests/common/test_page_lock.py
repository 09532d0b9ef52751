"""Page-locking host memory in place (common/page_lock.py)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import common.page_lock as page_lock_module_file
from common.page_lock import page_lock, page_lock_module


@pytest.fixture
def locked_buffers(monkeypatch) -> list[np.ndarray]:
    """Records the buffers handed to page_lock instead of registering them (CUDA is not needed to move tensors)."""
    buffers: list[np.ndarray] = []
    monkeypatch.setattr(page_lock_module_file, "page_lock", buffers.append)
    return buffers


def _inside(tensor: torch.Tensor, buffer: np.ndarray) -> bool:
    start = buffer.ctypes.data
    return start <= tensor.data_ptr() and tensor.data_ptr() + tensor.nbytes <= start + buffer.nbytes


def test_loose_parameters_and_buffers_move_into_one_locked_buffer(locked_buffers):
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    moved = page_lock_module(model)
    assert len(locked_buffers) == 1 and moved == locked_buffers[0].nbytes
    after = model.state_dict()
    assert all(torch.equal(after[name], tensor) and after[name].dtype == tensor.dtype for name, tensor in before.items())
    assert all(_inside(tensor, locked_buffers[0]) for tensor in after.values())


def test_moved_tensors_are_aligned_for_any_dtype(locked_buffers):
    model = torch.nn.Module()
    model.odd = torch.nn.Parameter(torch.ones(3, dtype=torch.int8), requires_grad=False)
    model.wide = torch.nn.Parameter(torch.ones(2, dtype=torch.float64), requires_grad=False)
    page_lock_module(model)
    assert (model.wide.data_ptr() - locked_buffers[0].ctypes.data) % 256 == 0
    assert torch.equal(model.wide, torch.ones(2, dtype=torch.float64))


def test_tied_parameters_move_once_and_stay_tied(locked_buffers):
    first, second = torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False)
    second.weight = first.weight
    model = torch.nn.Sequential(first, second)
    assert page_lock_module(model) == 4 * 4 * 4 + 256 - 64  # one float32 weight, rounded to the alignment
    assert model[0].weight is model[1].weight and _inside(model[1].weight, locked_buffers[0])


def test_a_module_with_nothing_loose_locks_nothing(locked_buffers):
    model = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Flatten())
    assert page_lock_module(model) == 0
    assert locked_buffers == []


@pytest.mark.gpu
def test_page_lock_module_pins_what_was_not():
    model = torch.nn.Linear(64, 64)
    kept = model.bias.data.pin_memory()
    model.bias.data = kept
    page_lock_module(model)
    assert model.weight.is_pinned() and model.bias.data_ptr() == kept.data_ptr()


@pytest.mark.gpu
def test_page_lock_pins_in_place_until_unlocked():
    buffer = np.arange(1 << 20, dtype=np.int32).view(np.uint8)
    unlock = page_lock(buffer)
    assert torch.from_numpy(buffer).is_pinned()
    unlock()
    assert not torch.from_numpy(buffer).is_pinned()
    assert np.array_equal(buffer.view(np.int32), np.arange(1 << 20, dtype=np.int32))


@pytest.mark.gpu
def test_a_page_locked_buffer_is_unlocked_when_freed():
    buffer = np.ones(1 << 20, dtype=np.uint8)
    unlock = page_lock(buffer)
    del buffer
    gc.collect()
    assert not unlock.alive
