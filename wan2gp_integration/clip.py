"""CLIP ViT-H/14 visual tower (XLM-RoBERTa CLIP) from Wan's `...-onlyvisual.pth`, run by transformers' CLIPVisionModel.

Wan's VisionTransformer (pre-norm, patch conv without bias, exact GELU, cls token, learned positions) is the
computation of CLIPVisionModel with `hidden_act="gelu"`; the weights are renamed and `to_qkv` split in three.
Wan conditions the DiT on the tokens after all blocks but the last (block 31 of 32) without post_norm, so the
last block, `head` and `log_scale` are never loaded (`post_norm` only feeds the unused pooled output).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModel

from common.files import check_keys, check_layout, load_pth, pth_shapes
from common.read_order import UNORDERED, ReadOrder

log = logging.getLogger(__name__)

CLIP_FILE = "models_clip_open-clip-xlm-roberta-large-vit-huge-14-onlyvisual.pth"

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
_SHAPE_KEYS = ("visual.patch_embedding.weight", "visual.pos_embedding", "visual.transformer.0.mlp.0.weight", "visual.head")
_HEAD_DIM = 80


@dataclass(frozen=True)
class ClipVisionConfig:
    """ViT dimensions read from a Wan file (full: width 1280, 16 heads, 32 layers, mlp 5120, patch 14, 224px)."""

    width: int
    num_heads: int
    num_layers: int
    mlp_dim: int
    patch_size: int
    image_size: int
    out_dim: int

    @classmethod
    def from_state_dict(cls, shapes: Mapping[str, Sequence[int]], num_layers: int) -> ClipVisionConfig:
        width, _, patch, _ = shapes["visual.patch_embedding.weight"]
        grid = round((shapes["visual.pos_embedding"][1] - 1) ** 0.5)
        return cls(
            width=width,
            num_heads=width // _HEAD_DIM,
            num_layers=num_layers,
            mlp_dim=shapes["visual.transformer.0.mlp.0.weight"][0],
            patch_size=patch,
            image_size=grid * patch,
            out_dim=shapes["visual.head"][1],
        )

    def wan_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key of Wan's visual-only CLIP file with its shape (the text tower stripped, `log_scale` kept)."""
        w, tokens = self.width, (self.image_size // self.patch_size) ** 2 + 1
        shapes: dict[str, tuple[int, ...]] = {
            "visual.patch_embedding.weight": (w, 3, self.patch_size, self.patch_size),
            "visual.cls_embedding": (1, 1, w),
            "visual.pos_embedding": (1, tokens, w),
            "visual.pre_norm.weight": (w,),
            "visual.pre_norm.bias": (w,),
        }
        for i in range(self.num_layers):
            b = f"visual.transformer.{i}"
            shapes |= {
                f"{b}.norm1.weight": (w,),
                f"{b}.norm1.bias": (w,),
                f"{b}.attn.to_qkv.weight": (3 * w, w),
                f"{b}.attn.to_qkv.bias": (3 * w,),
                f"{b}.attn.proj.weight": (w, w),
                f"{b}.attn.proj.bias": (w,),
                f"{b}.norm2.weight": (w,),
                f"{b}.norm2.bias": (w,),
                f"{b}.mlp.0.weight": (self.mlp_dim, w),
                f"{b}.mlp.0.bias": (self.mlp_dim,),
                f"{b}.mlp.2.weight": (w, self.mlp_dim),
                f"{b}.mlp.2.bias": (w,),
            }
        shapes |= {"visual.post_norm.weight": (w,), "visual.post_norm.bias": (w,),
                   "visual.head": (w, self.out_dim), "log_scale": ()}  # fmt: skip
        return shapes

    def to_transformers(self) -> CLIPVisionConfig:
        """The config of the blocks Wan uses: all but the last."""
        return CLIPVisionConfig(
            hidden_size=self.width,
            intermediate_size=self.mlp_dim,
            num_hidden_layers=self.num_layers - 1,
            num_attention_heads=self.num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act="gelu",  # exact (erf) GELU, as Wan's nn.GELU()
            layer_norm_eps=1e-5,
            attention_dropout=0.0,
        )


_BLOCK_NAMES = {
    "norm1": "layer_norm1",
    "attn.proj": "self_attn.out_proj",
    "norm2": "layer_norm2",
    "mlp.0": "mlp.fc1",
    "mlp.2": "mlp.fc2",
}


def wan_to_transformers(state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename the first `num_layers` blocks (and the embeddings) of a Wan visual state dict to CLIPVisionModel's."""
    width = state["visual.pre_norm.weight"].shape[0]
    out = {
        "embeddings.patch_embedding.weight": state["visual.patch_embedding.weight"],
        "embeddings.class_embedding": state["visual.cls_embedding"].reshape(width),
        "embeddings.position_embedding.weight": state["visual.pos_embedding"].reshape(-1, width),
        "pre_layrnorm.weight": state["visual.pre_norm.weight"],
        "pre_layrnorm.bias": state["visual.pre_norm.bias"],
        "post_layernorm.weight": state["visual.post_norm.weight"],
        "post_layernorm.bias": state["visual.post_norm.bias"],
    }
    for i in range(num_layers):
        src, dst = f"visual.transformer.{i}", f"encoder.layers.{i}"
        for wan_name, hf_name in _BLOCK_NAMES.items():
            for p in ("weight", "bias"):
                out[f"{dst}.{hf_name}.{p}"] = state[f"{src}.{wan_name}.{p}"]
        for p in ("weight", "bias"):
            # Wan views to_qkv's output as (3, heads, head_dim): q, k, v are consecutive row blocks.
            q, k, v = state[f"{src}.attn.to_qkv.{p}"].chunk(3, dim=0)
            out |= {
                f"{dst}.self_attn.q_proj.{p}": q,
                f"{dst}.self_attn.k_proj.{p}": k,
                f"{dst}.self_attn.v_proj.{p}": v,
            }
    return out


def inspect_clip_file(path: Path) -> ClipVisionConfig:
    """Config of a visual-only CLIP .pth from its pickle alone; VolumeFileError when keys or shapes are wrong."""
    shapes = pth_shapes(path)
    check_keys(path, shapes, _SHAPE_KEYS)
    num_layers = len({k.split(".")[2] for k in shapes if k.startswith("visual.transformer.")})
    config = ClipVisionConfig.from_state_dict(shapes, num_layers)
    check_layout(path, shapes, config.wan_shapes(), "the visual-only Wan CLIP")
    return config


def load_wan_clip_state(path: Path, reads: ReadOrder = UNORDERED) -> tuple[ClipVisionConfig, dict[str, torch.Tensor]]:
    """(config, Wan-named state dict) of a visual-only CLIP .pth, checked by `inspect_clip_file` first."""
    config = inspect_clip_file(path)
    return config, load_pth(path, reads)


class ClipVisionEncoder:
    """Images in [-1, 1] -> CLIP tokens [B, 257, width] from the penultimate block, Wan's image conditioning."""

    def __init__(self, model: CLIPVisionModel, image_size: int, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.image_size = image_size
        self.device = device
        self.dtype = dtype
        self.mean = torch.tensor(MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(STD, device=device, dtype=dtype).view(1, 3, 1, 1)

    @classmethod
    def from_file(
        cls, path: Path, device: torch.device, dtype: torch.dtype, reads: ReadOrder = UNORDERED
    ) -> ClipVisionEncoder:
        config, state = load_wan_clip_state(Path(path), reads)
        hf_config = config.to_transformers()
        with torch.device("meta"):  # no random init: every weight comes from the file
            model = CLIPVisionModel(hf_config)
        converted = wan_to_transformers(state, hf_config.num_hidden_layers)
        model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in converted.items()}, assign=True)
        # The one non-persistent buffer (token positions 0..256) is in no state dict: rebuild it off meta.
        embeddings = model.embeddings
        embeddings.position_ids = torch.arange(embeddings.num_positions, device=device).expand(1, -1)
        log.info("CLIP visual loaded from %s (width %d, %d of %d blocks)", path, config.width,
                 hf_config.num_hidden_layers, config.num_layers)  # fmt: skip
        return cls(model.eval().requires_grad_(False), config.image_size, device, dtype)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [-1,1] -> [B,3,224,224] normalised with the CLIP mean and std (bicubic resize, as Wan)."""
        x = F.interpolate(images, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        return (x * 0.5 + 0.5 - self.mean) / self.std

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] in [-1,1] -> [B, 1 + (224/14)^2, width] (257 tokens for ViT-H/14)."""
        return self.model(pixel_values=self.preprocess(images)).last_hidden_state
