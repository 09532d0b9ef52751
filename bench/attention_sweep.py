"""8-bit levers at SCAIL's CFG shapes (batch 2, 48,832 tokens): cuDNN's fp8 attention against its bf16
attention, and compiled fp8 Linears against bf16 and quanto int8.

    python -m bench.attention_sweep --out build/bench/bench-sweep.json
"""

from __future__ import annotations

import argparse
import itertools
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
    """cuDNN attention in bf16 and in fp8 (with its e4m3 casts) against float32 attention."""
    from wan2gp_integration.fp8_attention import fp8_attention, to_e4m3

    torch.manual_seed(0)
    q, k, v = (torch.randn(batch, tokens, heads, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = 4 * batch * tokens * tokens * head_dim * heads
    exact = exact_attention(q, k, v)
    rows = []
    for name, fn in (("cudnn bf16", lambda: cudnn_attention(q, k, v)), ("cudnn fp8 e4m3, casts included", lambda: fp8_attention(q, k, v))):
        timing = time_cuda(fn, warmup=2, repeat=5)
        rows.append({"variant": name, "ms": timing.median * 1e3, "tflops": flops / timing.median / 1e12, "rel_err": rel_error(fn(), exact)})
        log.info("%s", rows[-1])
    timing = time_cuda(lambda: [to_e4m3(t) for t in (q, k, v)], warmup=2, repeat=5)
    rows.append({"variant": "  of which the eager e4m3 casts of q, k, v", "ms": timing.median * 1e3})
    return rows


@torch.inference_mode()
def linear_rows(tokens: int) -> list[dict]:
    """bf16, quanto int8 and fp8 Linears, each eager and compiled, on the DiT's three GEMM shapes."""
    from wan2gp_integration.fp8 import use_fp8_linears

    rows = []
    for in_f, out_f in LINEAR_SHAPES:
        x = torch.randn(tokens, in_f, device="cuda", dtype=torch.bfloat16)
        bf16 = torch.nn.Linear(in_f, out_f, device="cuda", dtype=torch.bfloat16)
        torch.nn.init.normal_(bf16.weight, std=in_f**-0.5)
        quant = quanto_int8(bf16)
        reference = F.linear(x.float(), quant[0].weight.dequantize().float(), quant[0].bias.float())
        fp8 = quanto_int8(bf16)
        use_fp8_linears(fp8, prefix="")
        variants = {"bf16": bf16, "quanto-int8": quant, "fp8": fp8}
        for (name, layer), compiled in itertools.product(variants.items(), (False, True)):
            fn = torch.compile(layer) if compiled else layer
            timing = time_cuda(lambda fn=fn, x=x: fn(x), warmup=3, repeat=10)
            row = {"shape": f"{tokens}x{in_f}->{out_f}", "variant": name + (" compiled" if compiled else ""),
                   "ms": timing.median * 1e3, "tflops": 2 * tokens * in_f * out_f / timing.median / 1e12,
                   "rel_err_vs_int8_weights": rel_error(fn(x), reference)}  # fmt: skip
            rows.append(row)
            log.info("%s", row)
    return rows


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument("--skip-linear", action="store_true")
    args = parser.parse_args()
    result = {"cudnn": torch.backends.cudnn.version(), "attention": attention_rows(batch=2, tokens=args.tokens)}
    if not args.skip_linear:
        result["linear"] = linear_rows(2 * args.tokens)
    report(result, Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
