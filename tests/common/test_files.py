"""Shared file checks and sequential reads (common/files.py)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from common.errors import VolumeFileError
from common.files import (
    check_layout,
    load_safetensors_sequential,
    pth_shapes,
    read_safetensors_header,
    read_sequential,
)


@pytest.fixture
def safetensors_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    tensors = {
        "a.weight": torch.randn(3, 5).to(torch.bfloat16),
        "a.weight._data": torch.randint(-128, 127, (4, 6), dtype=torch.int8),
        "b": torch.arange(7, dtype=torch.float32),
    }
    save_file(tensors, str(path), metadata={"quantization_format": "quanto"})
    return path


def test_sequential_read_returns_every_byte(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    assert read_sequential(path).tobytes() == data


def test_sequential_safetensors_load_equals_safetensors_own_loader(safetensors_file):
    tensors, metadata = load_safetensors_sequential(safetensors_file)
    reference = load_file(str(safetensors_file))
    assert set(tensors) == set(reference)
    for name, tensor in reference.items():
        assert tensors[name].dtype == tensor.dtype
        assert torch.equal(tensors[name], tensor)
    assert metadata == {"quantization_format": "quanto"}


@pytest.mark.gpu
def test_page_locked_loads_are_pinned(safetensors_file):
    tensors, _ = load_safetensors_sequential(safetensors_file, page_locked=True)
    reference = load_file(str(safetensors_file))
    assert all(tensors[name].is_pinned() and torch.equal(tensors[name], t) for name, t in reference.items())


def test_truncated_safetensors_names_the_file(safetensors_file):
    data = safetensors_file.read_bytes()
    safetensors_file.write_bytes(data[:-10])
    with pytest.raises(VolumeFileError, match=r"weights.safetensors: truncated"):
        read_safetensors_header(safetensors_file)


def test_layout_check_names_a_missing_key(tmp_path):
    with pytest.raises(VolumeFileError, match="missing keys: b"):
        check_layout(tmp_path / "f.pth", {"a": (1,)}, {"a": (1,), "b": (2,)}, "a test model")


def test_layout_check_names_an_unexpected_key_and_the_model_expected(tmp_path):
    with pytest.raises(VolumeFileError, match=r"unexpected keys: c \(not a test model\?\)"):
        check_layout(tmp_path / "f.pth", {"a": (1,), "c": (3,)}, {"a": (1,)}, "a test model")


def test_layout_check_names_a_wrong_shape(tmp_path):
    with pytest.raises(VolumeFileError, match=r"tensor a has shape \(2,\), expected \(1,\)"):
        check_layout(tmp_path / "f.pth", {"a": (2,)}, {"a": (1,)}, "a test model")


def test_layout_check_of_keys_alone_ignores_shapes(tmp_path):
    check_layout(tmp_path / "f.pth", {"a"}, {"a": (1,)}, "a test model")


def test_pth_shapes_lists_every_key_with_its_shape(tmp_path):
    path = tmp_path / "state.pth"
    torch.save({"a.weight": torch.zeros(2, 3), "b": torch.zeros(4)}, path)
    assert pth_shapes(path) == {"a.weight": (2, 3), "b": (4,)}


def test_pth_shapes_of_a_non_dict_names_what_it_found(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(2), path)
    with pytest.raises(VolumeFileError, match="tensor.pth: expected a state dict, found Tensor"):
        pth_shapes(path)
