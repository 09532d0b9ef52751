"""Generator file checks: names relative to the root, cheap header / key checks, the first bad file named."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from common.errors import VolumeFileError
from wan2gp_integration.files import (
    CLIP_FILE,
    DIT_FILE,
    UMT5_DIR,
    UMT5_FILE,
    VAE_FILE,
    check_generator_files,
    require_generator_files,
)

ALL_FILES = [DIT_FILE, VAE_FILE, CLIP_FILE, UMT5_FILE, UMT5_DIR]


def _problem(root: Path, name: str) -> str | None:
    return {check.name: check for check in check_generator_files(root)}[name].problem


def test_every_file_of_a_complete_root_passes(generator_root):
    checks = check_generator_files(generator_root)
    assert [c.name for c in checks] == ALL_FILES
    assert all(c.ok and c.size for c in checks), [c.as_dict() for c in checks if not c.ok]


def test_require_passes_on_a_complete_root(generator_root):
    require_generator_files(generator_root)


@pytest.mark.parametrize("name", [DIT_FILE, VAE_FILE, CLIP_FILE, UMT5_FILE])
def test_a_missing_file_is_reported_missing_and_named(broken_root, name):
    (broken_root / name).unlink()
    assert _problem(broken_root, name) == "missing"
    with pytest.raises(VolumeFileError, match=name.split("/")[-1]) as info:
        require_generator_files(broken_root)
    assert info.value.path == str(broken_root / name)


def test_other_files_still_pass_when_one_is_missing(broken_root):
    (broken_root / VAE_FILE).unlink()
    assert [c.name for c in check_generator_files(broken_root) if not c.ok] == [VAE_FILE]


def test_a_truncated_dit_file_is_reported(broken_root):
    path = broken_root / DIT_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in _problem(broken_root, DIT_FILE)


def test_a_dit_file_without_its_quantization_map_is_reported(broken_root):
    path = broken_root / DIT_FILE
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + length].replace(b"quantization_map_base64", b"quantization_xxx_base64")
    path.write_bytes(data[:8] + header + data[8 + length :])
    assert "quantization map" in _problem(broken_root, DIT_FILE)


def test_a_pth_with_a_missing_key_is_reported_naming_it(broken_root):
    path = broken_root / VAE_FILE
    state = torch.load(path, weights_only=True)
    del state["decoder.conv1.weight"]
    torch.save(state, path)
    assert "decoder.conv1.weight" in _problem(broken_root, VAE_FILE)


def test_a_pth_with_a_wrong_shape_is_reported(broken_root):
    path = broken_root / UMT5_FILE
    state = torch.load(path, weights_only=True)
    state["blocks.1.attn.o.weight"] = state["blocks.1.attn.o.weight"][:, :-1].clone()
    torch.save(state, path)
    assert "blocks.1.attn.o.weight" in _problem(broken_root, UMT5_FILE)


def test_the_wrong_checkpoint_under_a_name_is_reported(broken_root):
    (broken_root / CLIP_FILE).write_bytes((broken_root / VAE_FILE).read_bytes())
    assert "missing keys" in _problem(broken_root, CLIP_FILE)


def test_a_file_that_is_not_a_pth_archive_is_reported(broken_root):
    (broken_root / CLIP_FILE).write_bytes(b"not a zip at all")
    assert "not a torch .pth archive" in _problem(broken_root, CLIP_FILE)


def test_a_tokenizer_folder_without_a_model_is_reported(broken_root):
    for name in ("tokenizer.json", "spiece.model"):
        (broken_root / UMT5_DIR / name).unlink()
    assert "tokenizer.json or spiece.model" in _problem(broken_root, UMT5_DIR)


def test_a_tokenizer_folder_with_only_the_sentencepiece_model_passes(broken_root):
    (broken_root / UMT5_DIR / "tokenizer.json").unlink()
    assert _problem(broken_root, UMT5_DIR) is None


def test_checks_read_no_tensor_data(generator_root, monkeypatch):
    """A cheap check: torch.load only ever maps onto the meta device."""
    locations = []
    real_load = torch.load

    def spy(*args, **kwargs):
        locations.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    check_generator_files(generator_root)
    assert locations and set(locations) == {"meta"}
