"""Wan2.1 VAE: diffusers' `AutoencoderKLWan` loaded from Wan's `Wan2.1_VAE.pth`, with Wan's latent normalisation.

The causal 3D VAE compresses 4x8x8 (T_lat = 1 + (T-1)/4). Decoding already runs one latent frame at a time
with a feature cache (diffusers), so memory grows with the frame size, not the frame count; spatial tiling
bounds it further for large frames.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from common.files import check_keys, check_layout, load_pth, pth_shapes
from common.read_order import UNORDERED, ReadOrder

log = logging.getLogger(__name__)

VAE_FILE = "Wan2.1_VAE.pth"

# Per-channel statistics of Wan2.1 latents (wan/modules/vae.py): latent = (mu - mean) / std.
LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip

_SHAPE_KEYS = ("encoder.conv1.weight", "conv2.weight")


@dataclass(frozen=True)
class VAEConfig:
    """Wan VAE hyper-parameters; only `base_dim` and `z_dim` vary between the real and the tiny file."""

    base_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temperal_downsample: tuple[bool, ...] = (False, True, True)

    @classmethod
    def from_state_dict(cls, shapes: Mapping[str, Sequence[int]]) -> VAEConfig:
        return cls(base_dim=shapes["encoder.conv1.weight"][0], z_dim=shapes["conv2.weight"][0])

    def build(self) -> AutoencoderKLWan:
        """An AutoencoderKLWan with these dimensions (random weights, or meta under `torch.device('meta')`)."""
        return AutoencoderKLWan(
            base_dim=self.base_dim,
            z_dim=self.z_dim,
            dim_mult=list(self.dim_mult),
            num_res_blocks=self.num_res_blocks,
            temperal_downsample=list(self.temperal_downsample),
        )


def _residual_keys(prefix: str, in_dim: int, out_dim: int) -> list[str]:
    keys = [f"{prefix}.residual.0.gamma", f"{prefix}.residual.3.gamma"]
    keys += [f"{prefix}.residual.{i}.{p}" for i in (2, 6) for p in ("weight", "bias")]
    if in_dim != out_dim:
        keys += [f"{prefix}.shortcut.weight", f"{prefix}.shortcut.bias"]
    return keys


def _middle_keys(prefix: str, dim: int) -> list[str]:
    attention = [f"{prefix}.1.norm.gamma"] + [
        f"{prefix}.1.{n}.{p}" for n in ("to_qkv", "proj") for p in ("weight", "bias")
    ]
    return _residual_keys(f"{prefix}.0", dim, dim) + attention + _residual_keys(f"{prefix}.2", dim, dim)


def _conv_keys(prefix: str) -> list[str]:
    return [f"{prefix}.weight", f"{prefix}.bias"]


def wan_vae_keys(config: VAEConfig) -> list[str]:
    """Every key of a Wan VAE state dict with this config, following the layout of Wan's Encoder3d/Decoder3d."""
    mult = config.dim_mult
    last = len(mult) - 1
    keys = _conv_keys("encoder.conv1")
    dims = [config.base_dim * m for m in (1, *mult)]
    index = 0
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        for _ in range(config.num_res_blocks):
            keys += _residual_keys(f"encoder.downsamples.{index}", in_dim, out_dim)
            in_dim, index = out_dim, index + 1
        if i != last:
            keys += _conv_keys(f"encoder.downsamples.{index}.resample.1")
            if config.temperal_downsample[i]:
                keys += _conv_keys(f"encoder.downsamples.{index}.time_conv")
            index += 1
    keys += _middle_keys("encoder.middle", dims[-1])
    keys += ["encoder.head.0.gamma", *_conv_keys("encoder.head.2"), *_conv_keys("conv1"), *_conv_keys("conv2")]

    keys += _conv_keys("decoder.conv1")
    dims = [config.base_dim * m for m in (mult[-1], *mult[::-1])]
    keys += _middle_keys("decoder.middle", dims[0])
    temperal_upsample = config.temperal_downsample[::-1]
    index = 0
    for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        if i > 0:  # the previous upsample halved the channels
            in_dim //= 2
        for _ in range(config.num_res_blocks + 1):
            keys += _residual_keys(f"decoder.upsamples.{index}", in_dim, out_dim)
            in_dim, index = out_dim, index + 1
        if i != last:
            keys += _conv_keys(f"decoder.upsamples.{index}.resample.1")
            if temperal_upsample[i]:
                keys += _conv_keys(f"decoder.upsamples.{index}.time_conv")
            index += 1
    keys += ["decoder.head.0.gamma", *_conv_keys("decoder.head.2")]
    return keys


def inspect_vae_file(path: Path) -> VAEConfig:
    """Config of a Wan VAE .pth from its pickle alone; VolumeFileError when keys are missing or unexpected."""
    shapes = pth_shapes(path)
    check_keys(path, shapes, _SHAPE_KEYS)
    config = VAEConfig.from_state_dict(shapes)
    check_layout(path, set(shapes), wan_vae_keys(config), "a Wan2.1 VAE")
    return config


def load_wan_vae_state(path: Path, reads: ReadOrder = UNORDERED) -> tuple[VAEConfig, dict[str, torch.Tensor]]:
    """(config, diffusers-named state dict) of a Wan VAE .pth, checked by `inspect_vae_file` first."""
    config = inspect_vae_file(path)
    state = load_pth(path, reads)
    return config, convert_wan_vae_to_diffusers(state)


class WanVAE:
    """Wan2.1 VAE: video in [-1, 1] <-> normalised latents, as the DiT sees them."""

    def __init__(self, model: AutoencoderKLWan, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.mean = torch.tensor(LATENTS_MEAN, device=device, dtype=dtype).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(LATENTS_STD, device=device, dtype=dtype).view(1, -1, 1, 1, 1)

    @classmethod
    def from_file(cls, path: Path, device: torch.device, dtype: torch.dtype, reads: ReadOrder = UNORDERED) -> WanVAE:
        config, state = load_wan_vae_state(Path(path), reads)
        with torch.device("meta"):
            model = config.build()
        state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
        model.load_state_dict(state, strict=True, assign=True)
        log.info("VAE loaded from %s (base dim %d)", path, config.base_dim)
        return cls(model.eval().requires_grad_(False), device, dtype)

    @torch.inference_mode()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B,3,T,H,W] in [-1,1] (T = 4n+1, H and W multiples of 8) -> latents [B,16,1+(T-1)/4,H/8,W/8]."""
        mu = self.model.encode(video).latent_dist.mean
        return (mu - self.mean) / self.std

    @torch.inference_mode()
    def decode(
        self, latents: torch.Tensor, *, tiled: bool = False, tile_px: int = 256, stride_px: int = 192
    ) -> torch.Tensor:
        """latents [B,16,T_lat,h,w] -> video [B,3,1+4(T_lat-1),8h,8w] in [-1,1].

        `tiled` decodes overlapping `tile_px` tiles every `stride_px` pixels, blended at the seams, to bound
        memory on large frames (frames no larger than one tile decode whole).
        """
        if tiled:
            self.model.enable_tiling(tile_px, tile_px, stride_px, stride_px)
        else:
            self.model.disable_tiling()
        try:
            return self.model.decode(latents * self.std + self.mean).sample
        finally:
            self.model.clear_cache()  # drop the per-conv feature cache before the caller allocates
            if latents.device.type == "cuda":
                torch.cuda.empty_cache()
