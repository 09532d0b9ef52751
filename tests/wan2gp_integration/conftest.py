"""A model root holding only the generator files (tiny), built once per session: the pipeline tests need no pose files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tools.volume.generator_files import write_generator_files


@pytest.fixture(scope="session")
def generator_root(tmp_path_factory) -> Path:
    """DiT int8, VAE, CLIP, umT5 + tokenizer in the real formats with tiny random weights. Read-only for tests."""
    root = tmp_path_factory.mktemp("generator")
    write_generator_files(root, "tiny")
    return root


@pytest.fixture
def broken_root(generator_root, tmp_path) -> Path:
    """A writable copy of the generator files, for tests that damage one."""
    copy = tmp_path / "root"
    shutil.copytree(generator_root, copy)
    return copy
