"""The generator's files on the model volume (names relative to the model root) and their cheap checks.

Checks read safetensors headers and .pth pickles onto the meta device only (no tensor data), so a
missing, truncated or wrong file is reported in seconds. The pipeline runs them while the DiT is read
and cancels the reads when one fails; the worker's preflight runs them on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common.errors import VolumeFileError
from common.files import FileCheck, require_file
from wan2gp_integration.clip import CLIP_FILE, inspect_clip_file
from wan2gp_integration.loading import DIT_FILE, inspect_dit_file
from wan2gp_integration.text_encoder import UMT5_DIR, UMT5_FILE, inspect_umt5_file
from wan2gp_integration.vae import VAE_FILE, inspect_vae_file

# The file names live beside their loaders; re-exported here.
__all__ = ["CLIP_FILE", "DIT_FILE", "UMT5_DIR", "UMT5_FILE", "VAE_FILE", "check_generator_files",
           "require_generator_files"]  # fmt: skip

TOKENIZER_CONFIG = "tokenizer_config.json"
# Either the fast tokenizer or the sentencepiece model it can be rebuilt from.
TOKENIZER_MODELS = ("tokenizer.json", "spiece.model")


def check_tokenizer_dir(path: Path) -> None:
    """A google/umt5-xxl style folder: tokenizer_config.json and tokenizer.json or spiece.model."""
    if not path.is_dir():
        raise VolumeFileError(path, "missing tokenizer folder")
    require_file(path / TOKENIZER_CONFIG)
    if not any((path / name).is_file() for name in TOKENIZER_MODELS):
        raise VolumeFileError(path, f"no {' or '.join(TOKENIZER_MODELS)} in the tokenizer folder")


# Each check reads headers or pickles only and raises VolumeFileError naming the problem.
GENERATOR_FILES: dict[str, Callable[[Path], object]] = {
    DIT_FILE: inspect_dit_file,
    VAE_FILE: inspect_vae_file,
    CLIP_FILE: inspect_clip_file,
    UMT5_FILE: inspect_umt5_file,
    UMT5_DIR: check_tokenizer_dir,
}


def _size(path: Path) -> int | None:
    """Bytes of a file, or of a folder's files without the umT5 weights (reported on their own); None if absent."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name != Path(UMT5_FILE).name)
    return None


def check_generator_files(root: Path) -> list[FileCheck]:
    """One FileCheck per generator file, in load order (DiT, VAE, CLIP, umT5, tokenizer folder)."""
    root = Path(root)
    checks = []
    for name, check in GENERATOR_FILES.items():
        path = root / name
        try:
            check(path)
            problem = None
        except VolumeFileError as exc:
            problem = exc.problem
        checks.append(FileCheck(name, path, _size(path), problem))
    return checks


def require_generator_files(root: Path) -> None:
    """VolumeFileError naming the first generator file that fails its check."""
    for check in check_generator_files(root):
        if not check.ok:
            raise VolumeFileError(check.path, check.problem)
