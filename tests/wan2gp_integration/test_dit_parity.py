"""The Wan backbone path of ScailDiT (no pose tokens) against diffusers' WanTransformer3DModel.

Same random float32 weights, converted to diffusers' names by diffusers' own converter of Wan keys.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

from tools.volume.dit_file import random_model
from wan2gp_integration.dit import HEAD_DIM, PATCH, DiTConfig


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    cfg = DiTConfig.tiny()
    ours = random_model(cfg, seed=3)
    state = {k: v.clone() for k, v in ours.state_dict().items() if not k.startswith("pose_patch_embedding.")}
    reference = WanTransformer3DModel(
        patch_size=PATCH,
        num_attention_heads=cfg.num_heads,
        attention_head_dim=HEAD_DIM,
        in_channels=cfg.in_dim,
        out_channels=cfg.out_dim,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=cfg.eps,
        image_dim=cfg.clip_dim,
        added_kv_proj_dim=cfg.dim,
    )
    reference.load_state_dict(convert_wan_transformer_to_diffusers(state), strict=True)
    return ours, reference.eval()


def test_backbone_matches_diffusers_wan_transformer(models):
    ours, reference = models
    cfg = ours.cfg
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, cfg.in_dim, 3, 4, 8, generator=g)
    t = torch.tensor([999.0, 312.5])
    context = torch.randn(2, 512, cfg.text_dim, generator=g)
    clip_tokens = torch.randn(2, 257, cfg.clip_dim, generator=g)
    with torch.no_grad():
        out = ours(x, None, t, context, clip_tokens)
        expected = reference(x, t, context, clip_tokens, return_dict=False)[0]
    assert out.shape == expected.shape == (2, cfg.out_dim, 3, 4, 8)
    relative = ((out - expected).norm() / expected.norm()).item()
    assert relative < 1e-4, relative
