"""The 8-bit speed options: fp8 GEMMs for the int8 Linears (fp8.py) and cuDNN fp8 attention (fp8_attention.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from optimum.quanto import freeze, qint8, quantize

from wan2gp_integration import attention as attn
from wan2gp_integration.files import DIT_FILE
from wan2gp_integration.fp8 import fp8_linear, fp8_supported, is_int8_linear, use_fp8_linears
from wan2gp_integration.loading import load_dit
from wan2gp_integration.pipeline import ScailPipeline


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def int8_model(seed: int = 0) -> torch.nn.Module:
    """blocks.0 (an int8 Linear and a plain one) and an int8 head, as quanto leaves the volume's DiT."""
    torch.manual_seed(seed)
    blocks = torch.nn.ModuleList([torch.nn.ModuleDict({"q": torch.nn.Linear(64, 48), "norm": torch.nn.Linear(48, 48)})])
    model = torch.nn.ModuleDict({"blocks": blocks, "head": torch.nn.Linear(48, 32)}).to(torch.bfloat16)
    quantize(model, weights=qint8, exclude=["blocks.0.norm"])
    freeze(model)
    return model.requires_grad_(False)


def test_fp8_linear_is_the_int8_linear_within_e4m3_precision():
    layer = int8_model()["blocks"][0]["q"]
    x = torch.randn(3, 40, 64, dtype=torch.bfloat16)
    reference = F.linear(x.float(), layer.weight.dequantize().float(), layer.bias.float())
    out = fp8_linear(x, layer.weight._data, layer.weight._scale, layer.bias)
    assert out.shape == (3, 40, 48) and out.dtype == torch.bfloat16
    # e4m3 keeps 3 mantissa bits: a few percent off, but far from a wrong product
    assert 0.005 < rel_error(out, reference) < 0.06


def test_only_int8_linears_under_the_prefix_switch_to_fp8():
    model = int8_model()
    assert use_fp8_linears(model) == 1
    assert "forward" in model["blocks"][0]["q"].__dict__
    assert "forward" not in model["blocks"][0]["norm"].__dict__  # a plain Linear stays as it is
    assert "forward" not in model["head"].__dict__  # outside blocks.


def test_fp8_compute_leaves_the_weights_untouched():
    model, twin = int8_model(), int8_model()
    use_fp8_linears(model)
    for (name, value), (_, expected) in zip(model.state_dict().items(), twin.state_dict().items(), strict=True):
        assert torch.equal(value, expected), name


def test_a_switched_layer_computes_through_fp8_linear():
    model, twin = int8_model(), int8_model()
    use_fp8_linears(model)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    layer, original = model["blocks"][0]["q"], twin["blocks"][0]["q"]
    torch.testing.assert_close(layer(x), fp8_linear(x, layer.weight._data, layer.weight._scale, layer.bias))
    assert not torch.equal(layer(x), original(x))


def test_the_volume_dit_block_linears_are_int8_and_all_switch(generator_root):
    dit = load_dit(generator_root / DIT_FILE, torch.device("cpu"), torch.float32)
    linears_in_blocks = [m for n, m in dit.named_modules() if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    assert linears_in_blocks and all(is_int8_linear(m) for m in linears_in_blocks)
    assert use_fp8_linears(dit) == len(linears_in_blocks)


def test_the_cpu_has_no_fp8_compute():
    assert not fp8_supported(torch.device("cpu"))


def test_a_cpu_pipeline_asked_for_fp8_linears_keeps_int8_and_says_so(generator_root, caplog):
    with caplog.at_level(logging.WARNING):
        pipe = ScailPipeline.from_model_root(generator_root, torch.device("cpu"), fp8_linear=True)
    assert "no fp8 tensor cores" in caplog.text
    assert not any("forward" in m.__dict__ for m in pipe.dit.modules())


def test_auto_attention_without_a_gpu_resolves_to_bf16_sdpa():
    assert attn.resolve_backend("auto", torch.device("cpu")) == "sdpa"
    assert attn.resolve_backend("auto") == "sdpa"


def test_fp8_attention_asked_for_on_the_cpu_falls_back_to_sdpa_with_a_warning(caplog):
    previous = attn.current_backend()
    try:
        with caplog.at_level(logging.WARNING):
            assert attn.set_backend("fp8", torch.device("cpu")) == "sdpa"
        assert "fp8" in caplog.text
    finally:
        attn.set_backend(previous)


def test_the_fp8_backend_sends_cross_attention_to_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 9, 2, 16, generator=g), torch.randn(1, 5, 2, 16, generator=g), torch.randn(1, 5, 2, 16, generator=g)
    torch.testing.assert_close(attn._fp8(q, k, v), attn._sdpa(q, k, v))


@pytest.mark.gpu
def test_cudnn_fp8_attention_matches_exact_attention_within_fp8_precision():
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("cuDNN fp8 attention needs Hopper or newer")
    from wan2gp_integration.fp8_attention import fp8_attention

    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 1000, 4, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    exact = F.scaled_dot_product_attention(*(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
    out = fp8_attention(q, k, v)
    assert out.shape == q.shape and out.dtype == torch.bfloat16
    assert 0.005 < rel_error(out, exact) < 0.1


@pytest.mark.gpu
def test_fp8_gemms_match_the_int8_linear_on_the_gpu():
    if not fp8_supported(torch.device("cuda")):
        pytest.skip("needs fp8 tensor cores")
    layer = int8_model()["blocks"][0]["q"].cuda()
    x = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
    reference = F.linear(x.float(), layer.weight.dequantize().float(), layer.bias.float())
    assert 0.005 < rel_error(fp8_linear(x, layer.weight._data, layer.weight._scale, layer.bias), reference) < 0.06


@pytest.mark.gpu
def test_the_fast_mode_generates_under_mmgp(generator_root):
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the fast mode's attention needs Hopper or newer")
    try:
        pipe = ScailPipeline.from_model_root(generator_root, torch.device("cuda"), profile=4, attention="fp8", fp8_linear=True)
        assert attn.current_backend() == "fp8"
        reference = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        pose = np.random.default_rng(1).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
        frames = pipe.generate(reference, pose, "a dancer", negative_prompt=None, seed=0, steps=2, guidance_scale=5.0,
                               shift=7.0, sampler="unipc")  # fmt: skip
        assert frames.shape == (5, 64, 64, 3) and frames.std() > 0
        pipe.release_job_memory()
    finally:
        attn.set_backend("sdpa")
