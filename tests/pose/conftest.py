"""Fixtures shared by the pose tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.volume.mask_files import write_mask_files


@pytest.fixture(scope="session")
def mask_root(tmp_path_factory) -> Path:
    """A model root holding the tiny SAM and MatAnyone files (`mask/`), written once per session."""
    root = tmp_path_factory.mktemp("mask")
    write_mask_files(root, "tiny")
    return root
