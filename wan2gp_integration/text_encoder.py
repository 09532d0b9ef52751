"""umT5-XXL text encoder: transformers' `UMT5EncoderModel` loaded from Wan's `models_t5_umt5-xxl-enc-bf16.pth`.

Wan's T5Encoder and transformers' UMT5 encoder are the same network (RMS norms without bias, unscaled
attention with a relative position bias in every block, gated tanh-GELU feed-forward); only the names
differ, see `wan_to_transformers`. Prompts are cleaned as Wan does (ftfy, HTML unescape, whitespace).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ftfy
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase, UMT5Config, UMT5EncoderModel

from common.errors import VolumeFileError
from common.files import check_keys, check_layout, load_pth, pth_shapes, require_file
from common.read_order import UNORDERED, ReadOrder

log = logging.getLogger(__name__)

UMT5_DIR = "umt5-xxl"  # the tokenizer folder, holding the weights too
UMT5_FILE = f"{UMT5_DIR}/models_t5_umt5-xxl-enc-bf16.pth"

TEXT_LEN = 512
_SHAPE_KEYS = ("token_embedding.weight", "blocks.0.attn.q.weight", "blocks.0.ffn.fc1.weight",
               "blocks.0.pos_embedding.embedding.weight")  # fmt: skip


@dataclass(frozen=True)
class UMT5EncoderConfig:
    """umT5 encoder dimensions, read from the tensor shapes of a Wan file (full: 256384/4096/4096/10240/64/24/32)."""

    vocab: int
    dim: int
    dim_attn: int
    dim_ffn: int
    num_heads: int
    num_layers: int
    num_buckets: int
    max_distance: int = 128

    @classmethod
    def from_state_dict(cls, shapes: Mapping[str, Sequence[int]], num_layers: int) -> UMT5EncoderConfig:
        vocab, dim = shapes["token_embedding.weight"]
        num_buckets, num_heads = shapes["blocks.0.pos_embedding.embedding.weight"]
        return cls(
            vocab=vocab,
            dim=dim,
            dim_attn=shapes["blocks.0.attn.q.weight"][0],
            dim_ffn=shapes["blocks.0.ffn.fc1.weight"][0],
            num_heads=num_heads,
            num_layers=num_layers,
            num_buckets=num_buckets,
        )

    def wan_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key of Wan's T5Encoder state dict (shared_pos=False) with its shape."""
        shapes: dict[str, tuple[int, ...]] = {"token_embedding.weight": (self.vocab, self.dim)}
        for i in range(self.num_layers):
            b = f"blocks.{i}"
            shapes |= {
                f"{b}.norm1.weight": (self.dim,),
                f"{b}.attn.q.weight": (self.dim_attn, self.dim),
                f"{b}.attn.k.weight": (self.dim_attn, self.dim),
                f"{b}.attn.v.weight": (self.dim_attn, self.dim),
                f"{b}.attn.o.weight": (self.dim, self.dim_attn),
                f"{b}.norm2.weight": (self.dim,),
                f"{b}.ffn.gate.0.weight": (self.dim_ffn, self.dim),
                f"{b}.ffn.fc1.weight": (self.dim_ffn, self.dim),
                f"{b}.ffn.fc2.weight": (self.dim, self.dim_ffn),
                f"{b}.pos_embedding.embedding.weight": (self.num_buckets, self.num_heads),
            }
        shapes["norm.weight"] = (self.dim,)
        return shapes

    def to_transformers(self) -> UMT5Config:
        return UMT5Config(
            vocab_size=self.vocab,
            d_model=self.dim,
            d_kv=self.dim_attn // self.num_heads,
            d_ff=self.dim_ffn,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            relative_attention_num_buckets=self.num_buckets,
            relative_attention_max_distance=self.max_distance,
            feed_forward_proj="gated-gelu",  # tanh GELU on the gate branch, as Wan's T5FeedForward
            dropout_rate=0.0,
            layer_norm_epsilon=1e-6,
            is_encoder_decoder=False,
            use_cache=False,
        )


# Wan block names -> transformers UMT5 block names (both a relative position bias per block).
_BLOCK_NAMES = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}


def wan_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Wan T5Encoder state dict to UMT5EncoderModel's names (the embedding is shared by both slots)."""
    out = {"shared.weight": state["token_embedding.weight"], "encoder.embed_tokens.weight": state["token_embedding.weight"],
           "encoder.final_layer_norm.weight": state["norm.weight"]}  # fmt: skip
    for key, value in state.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            out[f"encoder.block.{index}.{_BLOCK_NAMES[rest]}"] = value
    return out


def inspect_umt5_file(path: Path) -> UMT5EncoderConfig:
    """Config of a umT5 encoder .pth from its pickle alone; VolumeFileError when keys or shapes are wrong."""
    shapes = pth_shapes(path)
    check_keys(path, shapes, _SHAPE_KEYS)
    num_layers = len({k.split(".")[1] for k in shapes if k.startswith("blocks.")})
    config = UMT5EncoderConfig.from_state_dict(shapes, num_layers)
    check_layout(path, shapes, config.wan_shapes(), "a Wan umT5 encoder")
    return config


def load_wan_umt5_state(path: Path, reads: ReadOrder = UNORDERED) -> tuple[UMT5EncoderConfig, dict[str, torch.Tensor]]:
    """(config, Wan-named state dict) of a umT5 encoder .pth, checked by `inspect_umt5_file` first."""
    config = inspect_umt5_file(path)
    return config, load_pth(path, reads)


def load_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    """The umT5 tokenizer from a google/umt5-xxl style folder, offline."""
    if not (tokenizer_dir / "tokenizer.json").is_file():
        require_file(tokenizer_dir / "spiece.model")
    try:
        return AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise VolumeFileError(tokenizer_dir, f"unreadable tokenizer folder ({exc})") from None


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: ftfy repair, double HTML unescape, whitespace collapsed."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


class TextEncoder:
    """Prompts -> umT5 hidden states [B, 512, dim], each row cut to its tokens and zero-padded, as Wan feeds the DiT."""

    def __init__(self, model: UMT5EncoderModel, tokenizer: PreTrainedTokenizerBase, device: torch.device):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device

    @classmethod
    def from_files(
        cls, weights: Path, tokenizer_dir: Path, device: torch.device, dtype: torch.dtype, reads: ReadOrder = UNORDERED
    ) -> TextEncoder:
        weights, tokenizer_dir = Path(weights), Path(tokenizer_dir)
        config, state = load_wan_umt5_state(weights, reads)
        tokenizer = load_tokenizer(tokenizer_dir)
        tokenizer.padding_side = "right"  # rows past a prompt's tokens are then the padding
        if len(tokenizer) > config.vocab:
            raise VolumeFileError(tokenizer_dir, f"{len(tokenizer)} tokens but {weights.name} embeds {config.vocab}")
        with torch.device("meta"):
            model = UMT5EncoderModel(config.to_transformers())
        # Cast tensor by tensor (one bf16 copy at a time) and assign: no random init, no second full copy.
        state = {k: v.to(device=device, dtype=dtype) for k, v in wan_to_transformers(state).items()}
        model.load_state_dict(state, strict=True, assign=True)
        model.encoder.embed_tokens.weight = model.shared.weight  # one Parameter for both slots, moved once
        log.info("umT5 encoder loaded from %s (%d blocks, dim %d)", weights, config.num_layers, config.dim)
        return cls(model.eval().requires_grad_(False), tokenizer, device)

    @property
    def dim(self) -> int:
        return self.model.config.d_model

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """prompts -> [B, 512, dim]; rows past each prompt's token count (eos included) are zero."""
        # Padding to the longest prompt instead of 512 gives the same states for the real tokens (padded keys
        # are masked and the position bias depends only on offsets) at a fraction of the cost.
        tokens = self.tokenizer(
            [clean_prompt(p) for p in prompts],
            padding="longest",
            truncation=True,
            max_length=TEXT_LEN,
            add_special_tokens=True,
            return_tensors="pt",
        ).to(self.device)
        mask = tokens.attention_mask
        hidden = self.model(input_ids=tokens.input_ids, attention_mask=mask).last_hidden_state
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.pad(hidden, (0, 0, 0, TEXT_LEN - hidden.shape[1]))
