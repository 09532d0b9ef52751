"""8-bit levers at SCAIL's CFG shapes (batch 2, 48,832 tokens): cuDNN's fp8 attention against its bf16
attention, and the int8 Linears' GEMM modes (bf16, int8, fp8), compiled.

    python -m bench.attention_sweep --out build/bench/bench-sweep.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.levers import LINEAR_SHAPES, TOKENS, quanto_int8
from bench.measure import rel_error, report, time_cuda

log = logging.getLogger(__name__)


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float32 SDPA (memory-efficient kernel) as the accuracy reference; [B, N, H, D] layout."""
    q, k, v = (t.float().transpose(1, 2) for t in (q, k, v))
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2)


def cudnn_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


@torch.inference_mode()
def attention_rows(batch: int, tokens: int, heads: int = 40, head_dim: int = 128) -> list[dict]:
    """cuDNN attention in bf16 and in fp8 (plain, and with K and V centred) against float32 attention,
    on random q, k, v and on k, v that share an offset across tokens (as the modulation's shift gives)."""
    from wan2gp_integration.fp8_attention import e4m3_attention, fp8_attention, to_e4m3

    flops = 4 * batch * tokens * tokens * head_dim * heads
    rows = []
    for inputs, offset in (("zero-mean", 0.0), ("k, v offset by a shared vector", 2.0)):
        torch.manual_seed(0)
        q, k, v = (torch.randn(batch, tokens, heads, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        shared = torch.randn(2, 1, 1, heads, head_dim, device="cuda") * offset
        k, v = (k + shared[0]).bfloat16(), (v + shared[1]).bfloat16()
        exact = exact_attention(q, k, v)
        variants = (("cudnn bf16", cudnn_attention), ("cudnn fp8 e4m3, casts included", e4m3_attention),
                    ("cudnn fp8 e4m3, K and V centred (fp8_attention)", fp8_attention))  # fmt: skip
        for name, attend in variants:
            timing = time_cuda(lambda attend=attend, qkv=(q, k, v): attend(*qkv), warmup=2, repeat=5)
            rows.append({"inputs": inputs, "variant": name, "ms": timing.median * 1e3,
                         "tflops": flops / timing.median / 1e12, "rel_err": rel_error(attend(q, k, v), exact)})  # fmt: skip
            log.info("%s", rows[-1])
    timing = time_cuda(lambda: [to_e4m3(t) for t in (q, k, v)], warmup=2, repeat=5)
    rows.append({"variant": "  of which the eager e4m3 casts of q, k, v", "ms": timing.median * 1e3})
    return rows


@torch.inference_mode()
def linear_rows(tokens: int) -> list[dict]:
    """quanto int8 Linears computed as bf16, int8 and fp8 GEMMs, compiled, on the DiT's three GEMM
    shapes, against float64 products of the int8 weights."""
    from wan2gp_integration.gemm import GEMM_MODES, use_gemm

    rows = []
    for in_f, out_f in LINEAR_SHAPES:
        x = torch.randn(tokens, in_f, device="cuda", dtype=torch.bfloat16)
        bf16 = torch.nn.Linear(in_f, out_f, device="cuda", dtype=torch.bfloat16)
        torch.nn.init.normal_(bf16.weight, std=in_f**-0.5)
        layer = quanto_int8(bf16)
        weight = layer[0].weight
        reference = F.linear(x.double(), weight._data.double() * weight._scale.double(), layer[0].bias.double())
        for mode in GEMM_MODES:
            use_gemm(layer, mode, prefix="")
            torch._dynamo.reset()
            fn = torch.compile(layer)
            timing = time_cuda(lambda fn=fn, x=x: fn(x), warmup=3, repeat=10)
            rows.append({"shape": f"{tokens}x{in_f}->{out_f}", "variant": f"{mode} GEMM, compiled", "ms": timing.median * 1e3,
                         "tflops": 2 * tokens * in_f * out_f / timing.median / 1e12,
                         "rel_err_vs_int8_weights": rel_error(fn(x), reference)})  # fmt: skip
            log.info("%s", rows[-1])
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--skip-linear", action="store_true")
    parser.add_argument("--skip-attention", action="store_true")
    args = parser.parse_args()
    result: dict = {"cudnn": torch.backends.cudnn.version()}
    if not args.skip_attention:
        result["attention"] = attention_rows(batch=2, tokens=args.tokens)
    if not args.skip_linear:
        result["linear"] = linear_rows(2 * args.tokens)
    report(result, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
