"""Micro-benchmarks of the speed levers at SCAIL's shapes: GEMM precision and attention backend."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.measure import rel_error, time_cuda
from wan2gp_integration.gemm import use_gemm

TOKENS = 48_832
LINEAR_SHAPES = [(5120, 5120), (5120, 13824), (13824, 5120)]  # (in, out) of q/k/v/o, ffn.0, ffn.2


def quanto_int8(linear: torch.nn.Linear) -> torch.nn.Sequential:
    """A copy of `linear` with optimum-quanto int8 weights (as in the volume's DiT), wrapped so that quanto can swap it."""
    from optimum.quanto import freeze, qint8, quantize

    quant = torch.nn.Sequential(torch.nn.Linear(linear.in_features, linear.out_features, device="cuda", dtype=torch.bfloat16))
    quant[0].load_state_dict(linear.state_dict())
    quantize(quant, weights=qint8)
    freeze(quant)
    return quant


@torch.inference_mode()
def linear_variants(tokens: int = TOKENS) -> list[dict]:
    """bf16, quanto int8 (dequantise + bf16 GEMM) and fp8 per shape: TFLOP/s and error vs float64."""
    rows = []
    for in_f, out_f in LINEAR_SHAPES:
        x = torch.randn(tokens, in_f, device="cuda", dtype=torch.bfloat16)
        linear = torch.nn.Linear(in_f, out_f, device="cuda", dtype=torch.bfloat16)
        torch.nn.init.normal_(linear.weight, std=in_f**-0.5)
        ref = F.linear(x.double(), linear.weight.double(), linear.bias.double())
        flops = 2 * tokens * in_f * out_f
        variants = {"bf16": linear}
        variants["quanto-int8"] = quanto_int8(linear)
        variants["fp8"] = quanto_int8(linear)
        use_gemm(variants["fp8"], "fp8", prefix="")
        for name, layer in variants.items():
            timing = time_cuda(lambda layer=layer, x=x: layer(x), warmup=3, repeat=10)
            rows.append(
                {
                    "shape": f"{tokens}x{in_f}->{out_f}",
                    "variant": name,
                    "ms": timing.median * 1e3,
                    "tflops": flops / timing.median / 1e12,
                    "rel_err": rel_error(layer(x), ref),
                }
            )
    return rows


@torch.inference_mode()
def attention_variants(tokens: int = TOKENS, heads: int = 40, head_dim: int = 128) -> list[dict]:
    """SDPA backends (and sageattention when installed) on one sequence: ms and error vs cuDNN."""
    q, k, v = (torch.randn(1, heads, tokens, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * tokens * tokens * head_dim * heads
    backends = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    outputs, rows = {}, []
    for name, backend in backends.items():
        def run(backend=backend):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)
        try:
            timing = time_cuda(run, warmup=2, repeat=5)
        except RuntimeError as exc:
            rows.append({"variant": name, "error": str(exc)[:120]})
            continue
        outputs[name] = run()
        rows.append({"variant": name, "ms": timing.median * 1e3, "tflops": flops / timing.median / 1e12})
    try:
        from sageattention import sageattn
    except ImportError:
        sageattn = None
    if sageattn is not None:
        timing = time_cuda(lambda: sageattn(q, k, v, tensor_layout="HND", is_causal=False), warmup=2, repeat=5)
        outputs["sage"] = sageattn(q, k, v, tensor_layout="HND", is_causal=False)
        rows.append({"variant": "sage", "ms": timing.median * 1e3, "tflops": flops / timing.median / 1e12})
    reference = outputs.get("cudnn", next(iter(outputs.values())))
    for row in rows:
        if row["variant"] in outputs:
            row["rel_err_vs_cudnn"] = rel_error(outputs[row["variant"]], reference)
    return rows
