"""ScailDiT forward contract, config inference and attention backends (tiny random model, CPU float32)."""

from __future__ import annotations

import pytest
import torch

from tools.volume.dit_file import random_model
from wan2gp_integration import attention as attn
from wan2gp_integration.dit import DiTConfig, ScailDiT

FRAMES, H, W = 3, 4, 8  # latent grid: reference + 2 latents, 4x8 -> 2x4 video tokens, 1x2 pose tokens


@pytest.fixture(scope="module")
def model() -> ScailDiT:
    return random_model(DiTConfig.tiny(), seed=1)


def inputs(cfg: DiTConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(batch, cfg.in_dim, FRAMES, H, W, generator=g),
        "pose": torch.randn(batch, cfg.in_dim, FRAMES - 1, H // 2, W // 2, generator=g),
        "t": torch.full((batch,), 700.0),
        "context": torch.randn(batch, 512, cfg.text_dim, generator=g),
        "clip_tokens": torch.randn(batch, 257, cfg.clip_dim, generator=g),
    }


def run(model: ScailDiT, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**kwargs)


def test_config_from_state_dict_of_tiny_model(model):
    assert DiTConfig.from_state_dict(model.state_dict()) == DiTConfig.tiny()


def test_config_from_shapes_of_full_model():
    with torch.device("meta"):
        shapes = {k: list(v.shape) for k, v in ScailDiT(DiTConfig.full()).state_dict().items()}
    assert DiTConfig.from_state_dict(shapes) == DiTConfig.full()


def test_full_model_has_16_4_billion_parameters():
    with torch.device("meta"):
        full = ScailDiT(DiTConfig.full())
    total = sum(p.numel() for p in full.parameters())
    in_blocks = sum(m.weight.numel() for m in full.blocks.modules() if isinstance(m, torch.nn.Linear))
    assert round(total / 1e9, 2) == 16.39 and round(in_blocks / 1e9, 2) == 16.15


def test_forward_returns_video_latent_shape(model):
    out = run(model, **inputs(model.cfg))
    assert out.shape == (2, model.cfg.out_dim, FRAMES, H, W)
    assert torch.isfinite(out).all()


def test_pose_tokens_change_the_video_prediction(model):
    a = inputs(model.cfg)
    b = dict(a, pose=a["pose"] + 1)
    assert not torch.allclose(run(model, **a), run(model, **b))


def test_forward_without_pose_keeps_the_video_shape(model):
    out = run(model, **dict(inputs(model.cfg), pose=None))
    assert out.shape == (2, model.cfg.out_dim, FRAMES, H, W)


def test_batch_entries_are_independent(model):
    """CFG runs both branches as one batch: each entry must equal its own single-entry pass."""
    batch = inputs(model.cfg)
    batch["context"][1] = 0  # the unconditional branch differs only in the text
    together = run(model, **batch)
    for i in range(2):
        alone = run(model, **{k: v[i : i + 1] for k, v in batch.items()})
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(together[0], together[1])


def test_mismatched_pose_grid_is_refused(model):
    bad = inputs(model.cfg)
    bad["pose"] = bad["pose"][:, :, :1]
    with pytest.raises(ValueError, match="pose latents"):
        run(model, **bad)


def test_latent_size_must_be_a_multiple_of_4(model):
    bad = inputs(model.cfg)
    bad["x"] = bad["x"][..., :6]
    with pytest.raises(ValueError, match="multiples of 4"):
        run(model, **bad)


def test_to_dtype_keeps_time_path_and_modulation_float32():
    model = random_model(DiTConfig.tiny(), seed=2).to_dtype(torch.bfloat16)
    assert model.blocks[0].self_attn.q.weight.dtype == torch.bfloat16
    assert model.time_embedding[0].weight.dtype == torch.float32
    assert model.time_projection[1].weight.dtype == torch.float32
    assert model.blocks[0].modulation.dtype == torch.float32
    assert model.head.modulation.dtype == torch.float32


def test_sdpa_and_math_attention_agree():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 9, 2, 16, generator=g) for _ in range(3))
    k, v = k[:, :5], v[:, :5]  # cross-attention: other key length
    torch.testing.assert_close(attn._sdpa(q, k, v), attn._math(q, k, v), atol=1e-5, rtol=1e-5)


def test_auto_backend_on_cpu_is_sdpa():
    previous = attn.current_backend()
    try:
        assert attn.set_backend("auto") == "sdpa"
    finally:
        attn.set_backend(previous)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown attention backend"):
        attn.set_backend("xformers")


def test_chunked_ffn_equals_the_whole_sequence_ffn(monkeypatch):
    import wan2gp_integration.dit as dit_module

    torch.manual_seed(0)
    block = dit_module.DiTBlock(dit_module.DiTConfig.tiny())
    x = torch.randn(2, 50, dit_module.DiTConfig.tiny().dim)
    whole = block.ffn(x)
    monkeypatch.setattr(dit_module, "FFN_CHUNK_TOKENS", 16)
    torch.testing.assert_close(block.chunked_ffn(x), whole)
