"""The Triton kernels of the int8 Linear (int8_gemm.py), run by Triton's interpreter on the CPU.

The interpreter is chosen when a kernel is defined, so each case runs in a fresh process with
TRITON_INTERPRET=1; on the GPU host the same kernel is compared with torch._int_mm (-m gpu).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
ROOT = Path(__file__).resolve().parents[2]

# Runs int8_gemm on random int8 operands and prints its largest error relative to a float64 product.
CASE = """
import json, sys, torch
from wan2gp_integration.int8_gemm import int8_gemm
m, n, k, with_bias = json.loads(sys.argv[1])
g = torch.Generator().manual_seed(0)
a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
w = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=g)
a_scale, w_scale = torch.rand(m, generator=g) + 0.5, torch.rand(n, generator=g) + 0.5
bias = torch.randn(n, generator=g).bfloat16() if with_bias else None
out = int8_gemm(a, w, a_scale, w_scale, bias, torch.float32)
ref = (a.double() @ w.double().t()) * a_scale.double()[:, None] * w_scale.double()[None, :]
ref = ref if bias is None else ref + bias.double()
print(json.dumps({"shape": list(out.shape), "dtype": str(out.dtype),
                  "error": ((out.double() - ref).abs().max() / ref.abs().max()).item()}))
"""


# Runs quantize_rows on bf16 rows (one all zero) and compares it with the reference in gemm.py's op.
QUANTIZE_CASE = """
import json, sys, torch
from wan2gp_integration.gemm import INT8_MAX, _row_absmax
from wan2gp_integration.int8_gemm import quantize_rows
m, k = json.loads(sys.argv[1])
x = torch.randn(m, k, generator=torch.Generator().manual_seed(0)).bfloat16() * 3
x[1] = 0
q, scale = quantize_rows(x)
ref_scale = _row_absmax(x) * (1 / INT8_MAX)
ref_q = torch.round(x / ref_scale).to(torch.int8)
print(json.dumps({"dtypes": [str(q.dtype), str(scale.dtype)], "mismatches": int((q != ref_q).sum()),
                  "scales_equal": torch.equal(scale, ref_scale.view(-1)), "zero_row": q[1].abs().max().item(),
                  "extremes": [q.min().item(), q.max().item()]}))
"""


def run_script(script: str, *args) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script, json.dumps(args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(m: int, n: int, k: int, with_bias: bool) -> dict:
    return run_script(CASE, m, n, k, with_bias)


def test_whole_tiles_with_a_bias_give_the_exact_scaled_product():
    result = run_case(512, 256, 256, True)
    assert result["shape"] == [512, 256] and result["dtype"] == "torch.float32"
    assert result["error"] < 1e-6  # int32 accumulation is exact; only the float32 epilogue rounds


def test_ragged_rows_columns_and_depth_are_computed_and_stored_within_bounds():
    # 300 rows and 130 columns end mid-tile; K = 200 is not a multiple of the 128-deep tiles
    result = run_case(300, 130, 200, False)
    assert result["shape"] == [300, 130] and result["error"] < 1e-6


def test_row_quantisation_rounds_each_row_to_127_steps_of_its_absmax_like_the_reference():
    # 300 columns fill part of a 512-wide block; row 1 is all zero
    result = run_script(QUANTIZE_CASE, 40, 300)
    assert result["dtypes"] == ["torch.int8", "torch.float32"]
    assert result["mismatches"] == 0 and result["scales_equal"]
    assert result["zero_row"] == 0 and result["extremes"] == [-127, 127]


@pytest.mark.gpu
def test_the_kernel_matches_torch_int_mm_on_the_gpu():
    from wan2gp_integration.int8_gemm import int8_gemm

    g = torch.Generator("cuda").manual_seed(0)
    a = torch.randint(-127, 128, (1000, 5120), dtype=torch.int8, device="cuda", generator=g)
    w = torch.randint(-127, 128, (1536, 5120), dtype=torch.int8, device="cuda", generator=g)
    ones_m, ones_n = torch.ones(1000, device="cuda"), torch.ones(1536, device="cuda")
    exact = torch._int_mm(a, w.t()).float()
    torch.testing.assert_close(int8_gemm(a, w, ones_m, ones_n, None, torch.float32), exact, rtol=0, atol=0)


@pytest.mark.gpu
def test_the_row_quantisation_on_the_gpu_is_the_reference_bit_for_bit():
    from wan2gp_integration.gemm import INT8_MAX, _row_absmax
    from wan2gp_integration.int8_gemm import quantize_rows

    x = torch.randn(4096, 13824, device="cuda", generator=torch.Generator("cuda").manual_seed(0)).bfloat16()
    q, scale = quantize_rows(x)
    ref_scale = _row_absmax(x) * (1 / INT8_MAX)
    assert torch.equal(scale, ref_scale.view(-1))
    assert torch.equal(q, torch.round(x / ref_scale).to(torch.int8))
