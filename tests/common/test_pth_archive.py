"""Reading .pth state dicts from one sequential read (common/pth_archive.py) and load_pth's fallback to torch.load."""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import VolumeFileError
from common.files import load_pth, read_sequential
from common.pth_archive import UnsupportedArchive, state_dict_from_buffer


def saved(tmp_path: Path, state, name: str = "state.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def mixed_state() -> dict[str, torch.Tensor]:
    """Every storage type the volume's files use, plus views that share a storage and an empty tensor."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 4, generator=g).bfloat16()
    return {
        "weight": weight,
        "row": weight[2],  # shares weight's storage, at an offset
        "transposed": weight.t(),  # shares it with other strides
        "float": torch.randn(3, 5, generator=g),
        "half": torch.randn(7, generator=g).half(),
        "index": torch.arange(9),
        "flags": torch.tensor([True, False, True]),
        "int8": torch.randint(-127, 128, (2, 8), dtype=torch.int8, generator=g),
        "empty": torch.empty(0, 3),
    }


def assert_same_state(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(expected)
    for key, value in expected.items():
        got = loaded[key]
        assert got.dtype == value.dtype and got.shape == value.shape and got.stride() == value.stride(), key
        assert torch.equal(got, value), key


def test_a_state_dict_reads_back_equal_to_torch_load(tmp_path):
    path = saved(tmp_path, mixed_state())
    assert_same_state(state_dict_from_buffer(path, read_sequential(path)), torch.load(path, weights_only=True))


def test_the_tensors_are_views_of_the_one_read_buffer(tmp_path):
    path = saved(tmp_path, mixed_state())
    buffer = read_sequential(path)
    start, end = buffer.ctypes.data, buffer.ctypes.data + buffer.nbytes
    state = state_dict_from_buffer(path, buffer)
    assert all(start <= t.data_ptr() < end for t in state.values() if t.numel())
    assert state["row"].untyped_storage().data_ptr() == state["weight"].untyped_storage().data_ptr()


def test_a_global_outside_the_allowlist_is_refused_not_called(tmp_path):
    class Trap:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    path = tmp_path / "trap.pth"
    torch.save({"weight": torch.zeros(2), "trap": Trap()}, path, _use_new_zipfile_serialization=True)
    with pytest.raises(UnsupportedArchive, match="posix.system|os.system"):
        state_dict_from_buffer(path, read_sequential(path))


def test_a_compressed_record_is_not_taken(tmp_path):
    path = saved(tmp_path, {"weight": torch.ones(64)})
    packed = tmp_path / "packed.pth"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    with pytest.raises(UnsupportedArchive, match="compressed"):
        state_dict_from_buffer(packed, read_sequential(packed))


def test_load_pth_reads_the_archive_itself_without_torch_load(tmp_path, monkeypatch):
    path = saved(tmp_path, mixed_state())
    expected = torch.load(path, weights_only=True)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    assert_same_state(load_pth(path), expected)


def test_load_pth_falls_back_to_torch_load_for_an_archive_it_does_not_take(tmp_path, caplog):
    path = saved(tmp_path, {"weight": torch.nn.Parameter(torch.ones(3))})  # a Parameter: outside the allowlist
    with caplog.at_level(logging.INFO, logger="common.files"):
        state = load_pth(path)
    assert torch.equal(state["weight"], torch.ones(3))
    assert "reading it with torch.load" in caplog.text and "_rebuild_parameter" in caplog.text


def test_load_pth_of_a_truncated_archive_names_the_file_and_the_problem(tmp_path):
    path = saved(tmp_path, {"weight": torch.ones(1000)})
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(VolumeFileError, match=r"state.pth.*truncated or corrupt"):
        load_pth(path)


def test_load_pth_of_an_archive_missing_a_storage_record_names_the_file(tmp_path):
    path = saved(tmp_path, {"weight": torch.ones(1000)})
    broken = tmp_path / "broken.pth"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        for info in source.infolist():
            if not info.filename.endswith("/data/0"):
                target.writestr(info.filename, source.read(info))
    with pytest.raises(VolumeFileError, match=r"broken.pth.*unreadable"):
        load_pth(broken)


def test_the_volume_encoder_files_read_back_equal_to_torch_load(tmp_path):
    from tools.volume.encoder_files import write_encoder_files
    from wan2gp_integration.files import CLIP_FILE, UMT5_FILE, VAE_FILE

    write_encoder_files(tmp_path, "tiny")
    for name in (UMT5_FILE, CLIP_FILE, VAE_FILE):
        path = tmp_path / name
        assert_same_state(state_dict_from_buffer(path, read_sequential(path)), torch.load(path, weights_only=True))


def test_the_tensors_keep_the_read_buffer_alive(tmp_path):
    path = saved(tmp_path, {"weight": torch.arange(1000, dtype=torch.float32)})
    state = state_dict_from_buffer(path, read_sequential(path))  # the buffer is referenced only by the tensors
    np.testing.assert_array_equal(state["weight"].numpy(), np.arange(1000, dtype=np.float32))
