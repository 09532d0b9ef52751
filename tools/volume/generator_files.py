"""The generator's files of a volume: the SCAIL DiT, VAE, umT5 + tokenizer, CLIP."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tools.volume.dit_file import write_dit_file
from tools.volume.encoder_files import write_encoder_files


def write_generator_files(root: Path, size: Literal["tiny", "full"], *, seed: int = 0) -> None:
    write_encoder_files(root, size, seed=seed)
    write_dit_file(root, size, seed=seed)
