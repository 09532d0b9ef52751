"""The SCAIL DiT: Wan2.1 I2V-14B with a second patch embedding for pose latents.

Module and parameter names are the checkpoint's keys (Wan's original names), so the state dict of
`ScailDiT` loads the volume's file as is. Token layout: [video (reference frame + latents) | pose];
pose tokens go through every block and are dropped before the head.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from wan2gp_integration.attention import attention
from wan2gp_integration.rope import apply_rope, rope_tables

HEAD_DIM = 128
PATCH = (1, 2, 2)


@dataclass(frozen=True)
class DiTConfig:
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 20
    out_dim: int = 16
    text_dim: int = 4096
    clip_dim: int = 1280
    freq_dim: int = 256
    eps: float = 1e-6

    @classmethod
    def full(cls) -> DiTConfig:
        """SCAIL-Preview 14B."""
        return cls(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

    @classmethod
    def tiny(cls) -> DiTConfig:
        """The tiny volume's DiT (head_dim stays 128)."""
        return cls(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=128, clip_dim=160)

    @classmethod
    def from_state_dict(cls, shapes: Mapping[str, Sequence[int] | torch.Tensor]) -> DiTConfig:
        """Config from a state dict's tensors or shapes (plain or quanto int8 keys)."""

        def shape(name: str) -> tuple[int, ...]:
            value = shapes[name] if name in shapes else shapes[f"{name}._data"]
            return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)

        dim, in_dim = shape("patch_embedding.weight")[:2]
        blocks = {int(m.group(1)) for key in shapes if (m := re.match(r"blocks\.(\d+)\.", key))}
        return cls(
            dim=dim,
            ffn_dim=shape("blocks.0.ffn.0.weight")[0],
            num_heads=dim // HEAD_DIM,
            num_layers=len(blocks),
            in_dim=in_dim,
            out_dim=shape("head.head.weight")[0] // math.prod(PATCH),
            text_dim=shape("text_embedding.0.weight")[1],
            clip_dim=shape("img_emb.proj.1.weight")[1],
            freq_dim=shape("time_embedding.0.weight")[1],
        )

    def as_wan_config(self) -> dict[str, Any]:
        """The config JSON stored in the checkpoint's metadata (Wan's names)."""
        return {
            "_class_name": "WanModel",
            "model_type": "i2v",
            "patch_size": list(PATCH),
            "text_len": 512,
            "dim": self.dim,
            "ffn_dim": self.ffn_dim,
            "freq_dim": self.freq_dim,
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "text_dim": self.text_dim,
            "num_heads": self.num_heads,
            "num_layers": self.num_layers,
            "eps": self.eps,
            "scail": asdict(self),
        }


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t [B] -> [B, dim] float32: [cos | sin] of t * 10000^(-i/(dim/2)), computed in float64 as Wan does."""
    half = dim // 2
    exponents = torch.arange(half, dtype=torch.float64, device=t.device) / half
    angles = torch.outer(t.to(torch.float64), 10000.0**-exponents)
    return torch.cat([angles.cos(), angles.sin()], dim=1).float()


def modulate(norm: nn.LayerNorm, x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """norm(x) * (1 + scale) + shift in float32 (shift, scale [B, 1, dim] float32), back in x's dtype."""
    return (norm(x.float()) * (1 + scale) + shift).type_as(x)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """x + y * gate with the float32 gate of the reference; the residual stream keeps x's dtype."""
    return (x.float() + y.float() * gate).type_as(x)


# Sequence slice of the FFN: large enough for full-speed GEMMs, small enough to cap the hidden activation.
FFN_CHUNK_TOKENS = 12_288


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        # RMSNorm over all heads together (Wan's qk norm)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim], rope [L, 1, head_dim/2] complex -> [B, L, dim]."""
        q = apply_rope(self.norm_q(self.q(x)).unflatten(2, (self.num_heads, -1)), rope)
        k = apply_rope(self.norm_k(self.k(x)).unflatten(2, (self.num_heads, -1)), rope)
        v = self.v(x).unflatten(2, (self.num_heads, -1))
        return self.o(attention(q, k, v).flatten(2))


class CrossAttention(nn.Module):
    """Attention to the text tokens plus, summed before `o`, attention to the CLIP image tokens."""

    def __init__(self, dim: int, num_heads: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.k_img, self.v_img = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_q = nn.RMSNorm(dim, eps=eps)
        self.norm_k = nn.RMSNorm(dim, eps=eps)
        self.norm_k_img = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_img: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim], context [B, 512, dim], context_img [B, 257, dim] -> [B, L, dim]."""
        heads = (self.num_heads, -1)
        q = self.norm_q(self.q(x)).unflatten(2, heads)
        text = attention(q, self.norm_k(self.k(context)).unflatten(2, heads), self.v(context).unflatten(2, heads))
        image = attention(
            q, self.norm_k_img(self.k_img(context_img)).unflatten(2, heads), self.v_img(context_img).unflatten(2, heads)
        )
        return self.o((text + image).flatten(2))


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.modulation = nn.Parameter(torch.empty(1, 6, cfg.dim))
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm3 = nn.LayerNorm(cfg.dim, eps=cfg.eps)
        self.cross_attn = CrossAttention(cfg.dim, cfg.num_heads, cfg.eps)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.dim, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, cfg.dim)
        )

    def forward(
        self,
        x: torch.Tensor,
        e: torch.Tensor,
        rope: torch.Tensor,
        context: torch.Tensor,
        context_img: torch.Tensor,
    ) -> torch.Tensor:
        """x [B, L, dim]; e [B, 6, dim] float32 time projection -> [B, L, dim]."""
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + e).chunk(6, dim=1)
        x = gated_residual(x, self.self_attn(modulate(self.norm1, x, shift1, scale1), rope), gate1)
        x = x + self.cross_attn(self.norm3(x), context, context_img)
        return gated_residual(x, self.chunked_ffn(modulate(self.norm2, x, shift2, scale2)), gate2)

    def chunked_ffn(self, x: torch.Tensor) -> torch.Tensor:
        """The FFN over slices of the sequence: its hidden activation [B, L, ffn_dim] is the largest
        tensor of a step (2.7 GB at 48,832 tokens and B=2), and slicing bounds the VRAM peak."""
        if x.shape[1] <= FFN_CHUNK_TOKENS:
            return self.ffn(x)
        return torch.cat([self.ffn(part) for part in x.split(FFN_CHUNK_TOKENS, dim=1)], dim=1)


class ImageEmbedding(nn.Module):
    """CLIP tokens -> model width: LayerNorm, Linear, GELU, Linear, LayerNorm."""

    def __init__(self, clip_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(clip_dim),
            nn.Linear(clip_dim, clip_dim),
            nn.GELU(),
            nn.Linear(clip_dim, dim),
            nn.LayerNorm(dim),
        )

    def forward(self, clip_tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(clip_tokens)


class Head(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(PATCH))
        self.modulation = nn.Parameter(torch.empty(1, 2, cfg.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, L, dim], e [B, dim] float32 time embedding -> [B, L, out_dim * 4]."""
        shift, scale = (self.modulation + e[:, None]).chunk(2, dim=1)
        return self.head(modulate(self.norm, x, shift, scale))


class ScailDiT(nn.Module):
    # Kept in float32 at load time (mmgp and `to_dtype` honour a module's `_lock_dtype` for its own
    # parameters): the reference computes the time embedding and the modulation in float32. The
    # blocks' and the head's only direct parameter is their `modulation`.
    FLOAT32_MODULES = ("time_embedding", "time_projection")

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=PATCH, stride=PATCH)
        self.pose_patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=PATCH, stride=PATCH)
        self.text_embedding = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.img_emb = ImageEmbedding(cfg.clip_dim, cfg.dim)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        locked = [*self.blocks, self.head]
        for name in self.FLOAT32_MODULES:
            locked += self.get_submodule(name).modules()
        for module in locked:
            module._lock_dtype = torch.float32

    def to_dtype(self, dtype: torch.dtype) -> ScailDiT:
        """Cast the plain floating-point parameters to `dtype`, those of float32-locked modules to float32."""
        for module in self.modules():
            target = getattr(module, "_lock_dtype", dtype)
            for param in module.parameters(recurse=False):
                if param.dtype.is_floating_point and type(param.data) is torch.Tensor:
                    param.data = param.data.to(target)
        return self

    def forward(
        self,
        x: torch.Tensor,
        pose: torch.Tensor | None,
        t: torch.Tensor,
        context: torch.Tensor,
        clip_tokens: torch.Tensor,
    ) -> torch.Tensor:
        """Flow prediction for the video latents.

        x [B, 20, F, h, w]: [reference latent ; noisy latents] (F = T+1) with the 4-channel mask;
        pose [B, 20, F-1, h/2, w/2] (pose latents + 4 ones channels) or None (plain Wan backbone);
        t [B] in 0..1000 (pass float64 under mmgp: its hook casts float32 inputs of the model to
        the model dtype, which would round t in bf16); context [B, 512, text_dim]; clip_tokens [B, 257, clip_dim]
        -> [B, out_dim, F, h, w].
        """
        batch, _, frames, h, w = x.shape
        grid = (frames, h // PATCH[1], w // PATCH[2])
        if h % 4 or w % 4:  # the pose token grid is half the video token grid
            raise ValueError(f"latent height and width must be multiples of 4 (pixels of 32), got {h}x{w}")
        if pose is not None and tuple(pose.shape[2:]) != (frames - 1, h // 2, w // 2):
            raise ValueError(f"pose latents {tuple(pose.shape)} do not match video latents {tuple(x.shape)}")

        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)
        video_len = tokens.shape[1]
        if pose is not None:
            pose_tokens = self.pose_patch_embedding(pose).flatten(2).transpose(1, 2)
            tokens = torch.cat([tokens, pose_tokens], dim=1)
        rope = rope_tables(self.cfg.dim // self.cfg.num_heads, grid, pose is not None, x.device)

        e = self.time_embedding(sinusoidal_embedding(t, self.cfg.freq_dim))
        e6 = self.time_projection(e).unflatten(1, (6, self.cfg.dim))
        context = self.text_embedding(context)
        context_img = self.img_emb(clip_tokens)

        for block in self.blocks:
            tokens = block(tokens, e6, rope, context, context_img)

        out = self.head(tokens[:, :video_len], e)
        return self.unpatchify(out, grid)

    def unpatchify(self, out: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """[B, f*h*w, pt*ph*pw*C] -> [B, C, f*pt, h*ph, w*pw]."""
        f, h, w = grid
        pt, ph, pw = PATCH
        out = out.unflatten(1, (f, h, w)).unflatten(-1, (pt, ph, pw, self.cfg.out_dim))
        return out.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(out.shape[0], self.cfg.out_dim, f * pt, h * ph, w * pw)
