"""The peer: diffusers' WanTransformer3DModel at SCAIL's shapes (in_channels 20, I2V-14B config).

diffusers has no pose-token branch, so the peer runs the same token count as one video grid:
28 latent frames x 32 x 218 latent pixels / (1,2,2) patches = 48,832 tokens, SCAIL's count at 896x512x81.
"""

from __future__ import annotations

import logging

import torch

from bench.measure import reset_vram_peak, time_cuda, vram_peak_gib

log = logging.getLogger(__name__)

PEER_LATENT_SHAPE = (16 + 4, 28, 32, 218)  # (C, F, h, w): 28 * 16 * 109 = 48,832 tokens


def build_peer(dtype: torch.dtype = torch.bfloat16, num_layers: int = 40) -> torch.nn.Module:
    """A randomly initialised I2V-14B-shaped WanTransformer3DModel on the GPU."""
    from diffusers import WanTransformer3DModel

    with torch.device("cuda"):
        model = WanTransformer3DModel(
            in_channels=20,
            out_channels=16,
            num_layers=num_layers,
            image_dim=1280,
            added_kv_proj_dim=5120,
        ).to(dtype)
    for param in model.parameters():
        param.data.normal_(0, 0.02)
    return model.eval().requires_grad_(False)


def peer_inputs(batch: int, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    generator = torch.Generator("cuda").manual_seed(0)
    return {
        "hidden_states": torch.randn(batch, *PEER_LATENT_SHAPE, device="cuda", dtype=dtype, generator=generator),
        "timestep": torch.full((batch,), 500.0, device="cuda"),
        "encoder_hidden_states": torch.randn(batch, 512, 4096, device="cuda", dtype=dtype, generator=generator),
        "encoder_hidden_states_image": torch.randn(batch, 257, 1280, device="cuda", dtype=dtype, generator=generator),
    }


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """optimum-quanto qint8 weights, frozen, as the peer's int8 variant."""
    from optimum.quanto import freeze, qint8, quantize

    quantize(model, weights=qint8)
    freeze(model)
    return model


@torch.inference_mode()
def bench_peer(model: torch.nn.Module, *, batch: int, repeat: int = 2) -> dict[str, float]:
    """Seconds per forward of `batch` sequences and peak VRAM."""
    inputs = peer_inputs(batch)
    reset_vram_peak()
    timing = time_cuda(lambda: model(**inputs, return_dict=False), warmup=1, repeat=repeat)
    return {"seconds": timing.median, "spread": timing.spread, "vram_peak_gib": vram_peak_gib()}
