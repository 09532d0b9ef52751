"""Session fixtures shared by all tests: the tiny volume in the real file formats."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def tiny_volume(tmp_path_factory) -> Path:
    """A complete model root with tiny random weights, built once per test session."""
    from tools.make_volume import build_volume

    root = tmp_path_factory.mktemp("volume")
    build_volume(root, "tiny")
    return root
