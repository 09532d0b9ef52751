"""The 8-bit speed options: int8 and e4m3 GEMMs for the int8 Linears (gemm.py) and cuDNN fp8 attention (fp8_attention.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from optimum.quanto import freeze, qint8, quantize

from wan2gp_integration import attention as attn
from wan2gp_integration.files import DIT_FILE
from wan2gp_integration.fp8_attention import centred
from wan2gp_integration.gemm import fp8_linear, gemm_problem, int8_linear, is_int8_linear, resolve_gemm, use_gemm
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


def test_int8_linear_is_exact_when_the_activations_lie_on_the_int8_grid():
    layer = int8_model()["blocks"][0]["q"]
    x = torch.randint(-126, 127, (2, 20, 64)).float()
    x[..., 0] = 127  # every token's absmax is 127: its int8 scale is exactly 1
    weight = layer.weight._data.double() * layer.weight._scale.double()
    reference = F.linear(x.double(), weight, layer.bias.double())
    out = int8_linear(x, layer.weight._data, layer.weight._scale, layer.bias)  # float32 in, float32 out
    assert out.shape == (2, 20, 48) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference, rtol=1e-5, atol=1e-4)


def test_int8_linear_is_the_int8_linear_within_int8_activation_rounding():
    layer = int8_model()["blocks"][0]["q"]
    x = torch.randn(3, 40, 64, dtype=torch.bfloat16)
    reference = F.linear(x.float(), layer.weight.dequantize().float(), layer.bias.float())
    error = rel_error(int8_linear(x, layer.weight._data, layer.weight._scale, layer.bias), reference)
    # one rounding step of 1/127 of each token's absmax, and a bf16 output: well under a percent or two
    assert 0.001 < error < 0.02


def test_torch_compile_sees_the_int8_linear_as_one_opaque_op():
    layer = int8_model()["blocks"][0]["q"]
    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    x = torch.randn(4, 64, dtype=torch.bfloat16)
    compiled = torch.compile(lambda t: int8_linear(t, layer.weight._data, layer.weight._scale, layer.bias),
                             backend=capture, fullgraph=True)  # fmt: skip
    torch.testing.assert_close(compiled(x), int8_linear(x, layer.weight._data, layer.weight._scale, layer.bias))
    targets = [node.target for node in graphs[0].graph.nodes if node.op == "call_function"]
    assert torch.ops.scail.int8_linear in targets
    assert not any("round" in str(target) or "_int_mm" in str(target) for target in targets)


def test_fp8_linear_is_the_int8_linear_within_e4m3_precision():
    layer = int8_model()["blocks"][0]["q"]
    x = torch.randn(3, 40, 64, dtype=torch.bfloat16)
    reference = F.linear(x.float(), layer.weight.dequantize().float(), layer.bias.float())
    out = fp8_linear(x, layer.weight._data, layer.weight._scale, layer.bias)
    assert out.shape == (3, 40, 48) and out.dtype == torch.bfloat16
    # e4m3 keeps 3 mantissa bits: a few percent off, but far from a wrong product
    assert 0.005 < rel_error(out, reference) < 0.06


def test_an_all_zero_token_gives_the_bias_not_nan():
    layer = int8_model()["blocks"][0]["q"]
    out = int8_linear(torch.zeros(1, 64, dtype=torch.bfloat16), layer.weight._data, layer.weight._scale, layer.bias)
    torch.testing.assert_close(out[0], layer.bias)


def test_only_int8_linears_under_the_prefix_change_mode():
    model = int8_model()
    assert use_gemm(model, "int8") == 1
    assert "forward" in model["blocks"][0]["q"].__dict__
    assert "forward" not in model["blocks"][0]["norm"].__dict__  # a plain Linear stays as it is
    assert "forward" not in model["head"].__dict__  # outside blocks.


def test_the_bf16_mode_restores_quantos_forward():
    model, twin = int8_model(), int8_model()
    use_gemm(model, "int8")
    use_gemm(model, "bf16")
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    assert "forward" not in model["blocks"][0]["q"].__dict__
    torch.testing.assert_close(model["blocks"][0]["q"](x), twin["blocks"][0]["q"](x))


def test_an_unknown_gemm_mode_is_refused():
    with pytest.raises(ValueError, match="bf16, int8, fp8"):
        use_gemm(int8_model(), "int4")


def test_a_gemm_mode_leaves_the_weights_untouched():
    model, twin = int8_model(), int8_model()
    use_gemm(model, "fp8")
    for (name, value), (_, expected) in zip(model.state_dict().items(), twin.state_dict().items(), strict=True):
        assert torch.equal(value, expected), name


@pytest.mark.parametrize(("mode", "kernel"), [("int8", int8_linear), ("fp8", fp8_linear)])
def test_a_switched_layer_computes_through_its_kernel(mode, kernel):
    model, twin = int8_model(), int8_model()
    use_gemm(model, mode)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    layer, original = model["blocks"][0]["q"], twin["blocks"][0]["q"]
    torch.testing.assert_close(layer(x), kernel(x, layer.weight._data, layer.weight._scale, layer.bias))
    assert not torch.equal(layer(x), original(x))


def test_the_volume_dit_block_linears_are_int8_and_all_switch(generator_root):
    dit = load_dit(generator_root / DIT_FILE, torch.device("cpu"), torch.float32)
    linears_in_blocks = [m for n, m in dit.named_modules() if n.startswith("blocks.") and isinstance(m, torch.nn.Linear)]
    assert linears_in_blocks and all(is_int8_linear(m) for m in linears_in_blocks)
    assert use_gemm(dit, "int8") == len(linears_in_blocks)


def test_auto_gemms_on_the_cpu_are_quantos_without_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_gemm("auto", torch.device("cpu")) == "bf16"
    assert caplog.text == ""


@pytest.mark.parametrize("mode", ["int8", "fp8"])
def test_8bit_gemms_asked_for_on_the_cpu_fall_back_to_bf16_and_say_why(mode, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_gemm(mode, torch.device("cpu")) == "bf16"
    assert f"{mode} GEMMs asked for" in caplog.text and "no 8-bit tensor cores" in caplog.text


H100_SHARED_MEMORY, RTX_4090_SHARED_MEMORY = 227 * 1024, 99 * 1024


def fake_gpu(monkeypatch, capability: tuple[int, int], shared_memory: int = H100_SHARED_MEMORY) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    properties = SimpleNamespace(shared_memory_per_block_optin=shared_memory)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)


@pytest.mark.parametrize(
    ("capability", "setting", "expected"),
    [
        ((9, 0), "auto", "int8"),  # measured: faster inside the engine, 1.2% from bf16
        ((10, 0), "auto", "int8"),
        ((8, 0), "auto", "bf16"),  # an A100 runs int8, but its speed is unmeasured
        ((9, 0), "int8", "int8"),
        ((8, 0), "int8", "int8"),
        ((8, 0), "fp8", "bf16"),  # an A100 has no fp8 tensor cores
        ((8, 9), "fp8", "fp8"),
        ((7, 5), "int8", "bf16"),
        ((9, 0), "bf16", "bf16"),
    ],
)
def test_which_gemm_mode_runs_on_which_gpu(monkeypatch, capability, setting, expected):
    fake_gpu(monkeypatch, capability)
    assert resolve_gemm(setting, torch.device("cuda")) == expected


def test_a_gpu_without_room_for_the_int8_tiles_keeps_bf16_gemms_and_says_why(monkeypatch, caplog):
    fake_gpu(monkeypatch, (12, 0), RTX_4090_SHARED_MEMORY)  # an RTX 5090: Blackwell, but consumer shared memory
    assert resolve_gemm("auto", torch.device("cuda")) == "bf16"
    with caplog.at_level(logging.WARNING):
        assert resolve_gemm("int8", torch.device("cuda")) == "bf16"
    assert "144 KiB of shared memory" in caplog.text and "99 KiB" in caplog.text


def test_an_unknown_gemm_setting_is_refused_before_anything_loads():
    with pytest.raises(ValueError, match="auto or one of bf16, int8, fp8"):
        resolve_gemm("fast", torch.device("cpu"))


def test_the_cpu_has_no_8bit_gemms():
    assert gemm_problem("int8", torch.device("cpu")) is not None
    assert gemm_problem("bf16", torch.device("cpu")) is None


def test_a_cpu_pipeline_asked_for_int8_gemms_keeps_quantos_and_says_so(generator_root, caplog):
    with caplog.at_level(logging.WARNING):
        pipe = ScailPipeline.from_model_root(generator_root, torch.device("cpu"), gemm="int8")
    assert "int8 GEMMs asked for" in caplog.text and pipe.gemm == "bf16"
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
def test_centring_shrinks_the_fp8_attention_error_when_tokens_share_an_offset():
    if torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("cuDNN fp8 attention needs Hopper or newer")
    from wan2gp_integration.fp8_attention import e4m3_attention, fp8_attention

    g = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 2000, 4, 128, device="cuda", generator=g) for _ in range(3))
    shared = torch.randn(2, 1, 1, 4, 128, device="cuda", generator=g) * 2
    q, k, v = q.bfloat16(), (k + shared[0]).bfloat16(), (v + shared[1]).bfloat16()
    exact = exact_attention(q, k, v)
    assert rel_error(fp8_attention(q, k, v), exact) < 0.5 * rel_error(e4m3_attention(q, k, v), exact)


@pytest.mark.gpu
@pytest.mark.parametrize(("mode", "kernel", "limit"), [("int8", int8_linear, 0.02), ("fp8", fp8_linear, 0.06)])
def test_8bit_gemms_match_the_int8_linear_on_the_gpu(mode, kernel, limit):
    if gemm_problem(mode, torch.device("cuda")):
        pytest.skip(gemm_problem(mode, torch.device("cuda")))
    layer = int8_model()["blocks"][0]["q"].cuda()
    x = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
    reference = F.linear(x.float(), layer.weight.dequantize().float(), layer.bias.float())
    assert 0.001 < rel_error(kernel(x, layer.weight._data, layer.weight._scale, layer.bias), reference) < limit


@pytest.mark.gpu
def test_the_cuda_int8_linear_computes_what_the_cpu_reference_does():
    layer = int8_model()["blocks"][0]["q"]
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(1))  # float32: compare before any bf16 rounding
    reference = int8_linear(x, layer.weight._data, layer.weight._scale, layer.bias)
    on_gpu = layer.cuda()
    out = int8_linear(x.cuda(), on_gpu.weight._data, on_gpu.weight._scale, on_gpu.bias)
    torch.testing.assert_close(out.cpu(), reference, rtol=1e-6, atol=1e-6)  # the epilogue may fuse a multiply-add


@pytest.mark.gpu
@pytest.mark.parametrize(("attention", "gemm"), [("auto", "int8"), ("fp8", "fp8")])
def test_the_8bit_modes_generate_under_mmgp(generator_root, attention, gemm):
    try:
        pipe = ScailPipeline.from_model_root(generator_root, torch.device("cuda"), profile=4, attention=attention, gemm=gemm)
        assert pipe.gemm == (gemm if gemm_problem(gemm, torch.device("cuda")) is None else "bf16")
        reference = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        pose = np.random.default_rng(1).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
        frames = pipe.generate(reference, pose, "a dancer", negative_prompt=None, seed=0, steps=2, guidance_scale=5.0,
                               shift=7.0, sampler="unipc")  # fmt: skip
        assert frames.shape == (5, 64, 64, 3) and frames.std() > 0
        pipe.release_job_memory()
    finally:
        attn.set_backend("sdpa")


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float64 softmax attention in the [B, N, H, D] layout."""
    return F.scaled_dot_product_attention(*(t.double().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)


def test_centring_k_and_v_leaves_softmax_attention_unchanged():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 30, 3, 16, generator=g) for _ in range(3))
    shared_k, shared_v = torch.randn(1, 1, 3, 16, generator=g) * 5, torch.randn(1, 1, 3, 16, generator=g) * 5
    out = centred(exact_attention, q, k + shared_k, v + shared_v)
    torch.testing.assert_close(out.double(), exact_attention(q, k + shared_k, v + shared_v), rtol=1e-5, atol=1e-5)


def test_centring_hands_the_inner_attention_zero_mean_keys_and_values():
    seen = {}

    def record(q, k, v):
        seen.update(k=k, v=v)
        return exact_attention(q, k, v)

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 20, 2, 8, generator=g) + 3 for _ in range(3))
    centred(record, q, k, v)
    assert seen["k"].mean(dim=1).abs().max() < 1e-5 and seen["v"].mean(dim=1).abs().max() < 1e-5
