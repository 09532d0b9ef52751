"""A model root holding only the generator files (tiny), built once per session: the pipeline tests need no pose files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

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


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core runner OpenMP spinning costs 10x otherwise."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
