"""The Triton int8 GEMM kernel (int8_gemm.py), run by Triton's interpreter on the CPU.

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


def run_case(m: int, n: int, k: int, with_bias: bool) -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CASE, json.dumps([m, n, k, with_bias])], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_whole_tiles_with_a_bias_give_the_exact_scaled_product():
    result = run_case(512, 256, 256, True)
    assert result["shape"] == [512, 256] and result["dtype"] == "torch.float32"
    assert result["error"] < 1e-6  # int32 accumulation is exact; only the float32 epilogue rounds


def test_ragged_rows_columns_and_depth_are_computed_and_stored_within_bounds():
    # 300 rows and 130 columns end mid-tile; K = 200 is not a multiple of the 128-deep tiles
    result = run_case(300, 130, 200, False)
    assert result["shape"] == [300, 130] and result["error"] < 1e-6


@pytest.mark.gpu
def test_the_kernel_matches_torch_int_mm_on_the_gpu():
    from wan2gp_integration.int8_gemm import int8_gemm

    g = torch.Generator("cuda").manual_seed(0)
    a = torch.randint(-127, 128, (1000, 5120), dtype=torch.int8, device="cuda", generator=g)
    w = torch.randint(-127, 128, (1536, 5120), dtype=torch.int8, device="cuda", generator=g)
    ones_m, ones_n = torch.ones(1000, device="cuda"), torch.ones(1536, device="cuda")
    exact = torch._int_mm(a, w.t()).float()
    torch.testing.assert_close(int8_gemm(a, w, ones_m, ones_n, None, torch.float32), exact, rtol=0, atol=0)
