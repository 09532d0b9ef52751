"""The generator's encoder files with random weights and Wan's key names: VAE, umT5-XXL + tokenizer, CLIP visual.

`full` has the real dimensions and dtypes (umT5 bf16, CLIP fp16, VAE fp32; about 13 GB, a few minutes);
`tiny` keeps every format and name with small dimensions. The tokenizer is always a small sentencepiece
unigram model trained here on generated text (no hub access): its ids just index the embedding rows.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import tempfile
from pathlib import Path
from typing import Literal

import sentencepiece as spm
import torch
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from transformers import AutoTokenizer

from wan2gp_integration.clip import CLIP_FILE, ClipVisionConfig
from wan2gp_integration.text_encoder import UMT5_DIR, UMT5_FILE, UMT5EncoderConfig
from wan2gp_integration.vae import VAE_FILE, VAEConfig, wan_vae_keys

log = logging.getLogger(__name__)

TINY_VOCAB = 512
_UMT5 = {
    "tiny": UMT5EncoderConfig(vocab=TINY_VOCAB, dim=128, dim_attn=128, dim_ffn=320, num_heads=2, num_layers=2, num_buckets=32),
    "full": UMT5EncoderConfig(vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240, num_heads=64, num_layers=24, num_buckets=32),
}  # fmt: skip
_CLIP = {
    "tiny": ClipVisionConfig(width=160, num_heads=2, num_layers=2, mlp_dim=640, patch_size=14, image_size=224, out_dim=128),
    "full": ClipVisionConfig(width=1280, num_heads=16, num_layers=32, mlp_dim=5120, patch_size=14, image_size=224, out_dim=1024),
}  # fmt: skip
_VAE = {"tiny": VAEConfig(base_dim=8), "full": VAEConfig(base_dim=96)}
_WORDS = (
    "a the an of and with in on at to from her his their slowly quickly gracefully person woman man girl boy "
    "dancer character dances dancing walks walking runs turns jumps spins waves raises lowers arms legs hands head "
    "smiles looks camera studio stage street park room light soft bright dark background white black red blue green "
    "dress shirt jacket skirt hair long short curly wearing stands standing sitting moves motion video high quality "
    "detailed realistic cinematic anime style 3d render, . ! ? 0 1 2 3 4 5 6 7 8 9 - ' \""
).split()


def _random_tensor(key: str, shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Weights of a plausible scale: norm gains near 1, small biases, matrices with std 1/sqrt(fan_in)."""
    if not shape:  # CLIP's log_scale
        return torch.tensor(math.log(1 / 0.07), dtype=dtype)
    tensor = torch.empty(shape, dtype=dtype)
    if key.endswith(".gamma") or ("norm" in key and len(shape) == 1):
        return tensor.normal_(1.0, 0.1, generator=generator)
    if key.endswith("bias"):
        return tensor.normal_(0.0, 0.02, generator=generator)
    return tensor.normal_(0.0, math.prod(shape[1:]) ** -0.5, generator=generator)


def _save_random(path: Path, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    state = {key: _random_tensor(key, shape, dtype, generator) for key, shape in shapes.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    log.info("wrote %s (%.1f M params)", path, sum(t.numel() for t in state.values()) / 1e6)


def vae_wan_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Wan VAE key -> shape, taken from diffusers' module through diffusers' own key converter."""
    with torch.device("meta"):
        module_shapes = {k: tuple(v.shape) for k, v in config.build().state_dict().items()}
    wan_keys = wan_vae_keys(config)
    diffusers_to_wan = convert_wan_vae_to_diffusers({key: key for key in wan_keys})
    if set(diffusers_to_wan) != set(module_shapes) or len(diffusers_to_wan) != len(wan_keys):
        raise RuntimeError("Wan VAE key layout and AutoencoderKLWan disagree")
    return {wan_key: module_shapes[name] for name, wan_key in diffusers_to_wan.items()}


def _training_text(seed: int, lines: int = 4000) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ka", "ri", "to", "me", "su", "la", "no", "vi", "de", "ze", "po", "an", "el", "or", "ш", "é", "の"]
    out = []
    for _ in range(lines):
        words = [
            rng.choice(_WORDS) if rng.random() < 0.75 else "".join(rng.choices(syllables, k=rng.randint(1, 3)))
            for _ in range(rng.randint(4, 24))
        ]
        out.append(" ".join(words))
    return out


def write_tokenizer(folder: Path, *, seed: int = 0) -> None:
    """A umT5-layout tokenizer folder (spiece.model, tokenizer.json, tokenizer_config.json, special_tokens_map.json)."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_text(seed)),
        model_writer=model,
        vocab_size=TINY_VOCAB,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,  # T5's special ids
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 0, "model_max_length": 512, **special}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    # transformers converts spiece.model to a fast tokenizer offline; keep only its tokenizer.json.
    with tempfile.TemporaryDirectory() as tmp:
        AutoTokenizer.from_pretrained(folder, local_files_only=True).save_pretrained(tmp)
        (folder / "tokenizer.json").write_bytes((Path(tmp) / "tokenizer.json").read_bytes())
    log.info("wrote tokenizer %s (%d pieces)", folder, TINY_VOCAB)


def write_encoder_files(root: Path, size: Literal["tiny", "full"], *, seed: int = 0) -> None:
    """Write the VAE, umT5 (+ tokenizer) and CLIP files under `root`, in the real formats with random weights."""
    root = Path(root)
    _save_random(root / VAE_FILE, vae_wan_shapes(_VAE[size]), torch.float32, seed)
    _save_random(root / CLIP_FILE, _CLIP[size].wan_shapes(), torch.float16, seed + 1)
    _save_random(root / UMT5_FILE, _UMT5[size].wan_shapes(), torch.bfloat16, seed + 2)
    write_tokenizer(root / UMT5_DIR, seed=seed)
