"""The generator's files on the model volume (names relative to the model root) and their cheap checks.

Checks read safetensors headers and .pth pickles onto the meta device only (no tensor data), so a
missing, truncated or wrong file is reported in seconds, before any multi-GB load starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from common.errors import VolumeFileError
from common.files import FileCheck, check_keys, check_layout, pth_keys, require_file
from wan2gp_integration.clip import CLIP_FILE, ClipVisionConfig
from wan2gp_integration.loading import DIT_FILE, inspect_dit_file
from wan2gp_integration.text_encoder import UMT5_DIR, UMT5_FILE, UMT5EncoderConfig
from wan2gp_integration.vae import VAE_FILE, VAEConfig, wan_vae_keys

# The file names live beside their loaders; re-exported here.
__all__ = ["CLIP_FILE", "DIT_FILE", "UMT5_DIR", "UMT5_FILE", "VAE_FILE", "check_generator_files",
           "require_generator_files"]  # fmt: skip

TOKENIZER_CONFIG = "tokenizer_config.json"
# Either the fast tokenizer or the sentencepiece model it can be rebuilt from.
TOKENIZER_MODELS = ("tokenizer.json", "spiece.model")


def _pth_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """key -> shape of a .pth state dict, unpickled onto the meta device (no tensor data read)."""
    pth_keys(path)  # a clear VolumeFileError for a missing, truncated or non-dict file
    state = torch.load(path, map_location="meta", weights_only=True, mmap=False)
    return {key: tuple(value.shape) for key, value in state.items()}


def _layer_count(keys: dict[str, tuple[int, ...]], prefix: str) -> int:
    """How many numbered blocks `<prefix><i>.` the keys hold."""
    return len({key[len(prefix) :].split(".", 1)[0] for key in keys if key.startswith(prefix)})


def check_dit_file(path: Path) -> None:
    """The int8 (or bf16) SCAIL DiT: safetensors header, quantization map, every ScailDiT key."""
    inspect_dit_file(path)


def check_vae_file(path: Path) -> None:
    """Wan2.1 VAE .pth with exactly Wan's key layout."""
    shapes = _pth_shapes(path)
    check_keys(path, shapes, ("encoder.conv1.weight", "conv2.weight"))
    config = VAEConfig.from_state_dict(shapes)
    check_layout(path, set(shapes), wan_vae_keys(config), "a Wan2.1 VAE")


def check_umt5_file(path: Path) -> None:
    """umT5 encoder .pth with Wan's keys and consistent shapes."""
    shapes = _pth_shapes(path)
    check_keys(path, shapes, ("token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.fc1.weight",
                              "blocks.0.pos_embedding.embedding.weight"))  # fmt: skip
    config = UMT5EncoderConfig.from_state_dict(shapes, _layer_count(shapes, "blocks."))
    check_layout(path, shapes, config.wan_shapes(), "a Wan umT5 encoder")


def check_clip_file(path: Path) -> None:
    """Visual-only CLIP .pth with Wan's keys and consistent shapes."""
    shapes = _pth_shapes(path)
    check_keys(path, shapes, ("visual.patch_embedding.weight", "visual.pos_embedding",
                              "visual.transformer.0.mlp.0.weight", "visual.head"))  # fmt: skip
    config = ClipVisionConfig.from_state_dict(shapes, _layer_count(shapes, "visual.transformer."))
    check_layout(path, shapes, config.wan_shapes(), "the visual-only Wan CLIP")


def check_tokenizer_dir(path: Path) -> None:
    """A google/umt5-xxl style folder: tokenizer_config.json and tokenizer.json or spiece.model."""
    if not path.is_dir():
        raise VolumeFileError(path, "missing tokenizer folder")
    require_file(path / TOKENIZER_CONFIG)
    if not any((path / name).is_file() for name in TOKENIZER_MODELS):
        raise VolumeFileError(path, f"no {' or '.join(TOKENIZER_MODELS)} in the tokenizer folder")


GENERATOR_FILES: dict[str, Callable[[Path], None]] = {
    DIT_FILE: check_dit_file,
    VAE_FILE: check_vae_file,
    CLIP_FILE: check_clip_file,
    UMT5_FILE: check_umt5_file,
    UMT5_DIR: check_tokenizer_dir,
}


def _size(path: Path) -> int | None:
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
