"""The two Triton kernels of an int8 Linear (CUDA): per-token activation rounding, and an int8 x int8 GEMM
with the dequantisation fused into its epilogue.

quantize_rows: scale[m] = absmax_m * (1 / 127), q[m, k] = round(x[m, k] / scale[m]), in one pass over x.
int8_gemm: out[m, n] = (sum_k a[m, k] w[n, k]) * a_scale[m] * w_scale[n] + bias[n], accumulated exactly in int32.

Both are plain launchers, called from the opaque custom op in gemm.py (why opaque: see there), so
torch.compile never traces into them.

Why our own kernel: torch._int_mm lowers to cuBLAS, whose int8 GEMM is no faster than bf16 on Hopper,
and inductor's Triton int8 templates run only under GEMM autotuning, which autotunes every GEMM of every
compiled module (minutes of a first step). This is the configuration that autotuning picked for all
three of the DiT's large shapes on the H100 (256x128x128 tiles, 3 stages, 8 warps), with the scales and
the bias applied before the one bf16 store, so no int32 product ever reaches memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M = 256, 128, 128, 8
NUM_STAGES, NUM_WARPS = 3, 8
# The GEMM's pipelined int8 tiles of a and w: 144 KiB, more than the ~100 KiB of consumer GPUs (sm_86/89/120).
SHARED_MEMORY_BYTES = NUM_STAGES * (BLOCK_M * BLOCK_K + BLOCK_K * BLOCK_N)
# Adding and subtracting 1.5 * 2**23 rounds a float32 of magnitude under 2**22 to the nearest integer,
# ties to even, as torch.round does (libdevice's rint has no counterpart in Triton's CPU interpreter).
ROUNDING_MAGIC = tl.constexpr(12582912.0)
INV_127 = tl.constexpr(1 / 127)


@triton.jit
def _quantize_rows_kernel(x_ptr, q_ptr, scale_ptr, K, stride_xm, stride_qm, BLOCK_K: tl.constexpr):
    # One program per row, the whole row in registers (K <= 16384 in the DiT): x is read once.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_K)
    x = tl.load(x_ptr + row * stride_xm + cols, mask=cols < K, other=0.0).to(tl.float32)
    absmax = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-12)  # an all-zero row gets scale ~0, not a division by 0
    scale = absmax * INV_127  # a product, as in the reference: torch's CUDA division by a scalar is one too
    # An IEEE division (Triton's "/" is approximate): the rounding of torch.round(x / scale), so the int8
    # values match the reference in gemm.py bit for bit.
    q = (tl.math.div_rn(x, scale) + ROUNDING_MAGIC) - ROUNDING_MAGIC
    tl.store(q_ptr + row * stride_qm + cols, q.to(tl.int8), mask=cols < K)
    tl.store(scale_ptr + row, scale)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (unit stride along K) -> int8 [M, K] rounded to 127 steps of each row's absmax, scales [M] float32."""
    m, k = x.shape
    q = torch.empty((m, k), device=x.device, dtype=torch.int8)
    scale = torch.empty(m, device=x.device, dtype=torch.float32)
    block_k = triton.next_power_of_2(k)
    _quantize_rows_kernel[(m,)](x, q, scale, k, x.stride(0), q.stride(0), BLOCK_K=block_k,
                                num_warps=16 if block_k > 8192 else 8)  # fmt: skip
    return q, scale


@triton.jit
def _int8_gemm_kernel(
    a_ptr, w_ptr, out_ptr, a_scale_ptr, w_scale_ptr, bias_ptr,
    M, N, K,
    stride_am, stride_ak, stride_wn, stride_wk, stride_om, stride_on,
    HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    # Tiles are visited in groups of GROUP_M rows so that neighbouring programs share w tiles in L2.
    pid = tl.program_id(0)
    tiles_m, tiles_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = GROUP_M * tiles_n
    first_m = (pid // group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % group_rows
    pid_n = (pid % group) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    # Out-of-range rows and columns read row 0 / column 0 (valid memory); their results are never stored.
    safe_rows = tl.where(rows < M, rows, 0)
    safe_cols = tl.where(cols < N, cols, 0)
    a_tile = a_ptr + safe_rows[:, None] * stride_am + ks[None, :] * stride_ak
    w_tile = w_ptr + ks[:, None] * stride_wk + safe_cols[None, :] * stride_wn  # w^T: [BLOCK_K, BLOCK_N]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_tile)
            w = tl.load(w_tile)
        else:
            in_k = ks < K - k * BLOCK_K
            a = tl.load(a_tile, mask=in_k[None, :], other=0)
            w = tl.load(w_tile, mask=in_k[:, None], other=0)
        acc = tl.dot(a, w, acc, out_dtype=tl.int32)
        a_tile += BLOCK_K * stride_ak
        w_tile += BLOCK_K * stride_wk

    out = acc.to(tl.float32) * tl.load(a_scale_ptr + safe_rows)[:, None] * tl.load(w_scale_ptr + safe_cols)[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + safe_cols).to(tl.float32)[None, :]
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    tl.store(out_ptr + rows[:, None] * stride_om + cols[None, :] * stride_on, out.to(out_ptr.dtype.element_ty), mask=mask)


def int8_gemm(a: torch.Tensor, w: torch.Tensor, a_scale: torch.Tensor, w_scale: torch.Tensor,
              bias: torch.Tensor | None, out_dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    """a [M, K] int8, w [N, K] int8, a_scale [M] and w_scale [N] float32, bias [N] or None -> [M, N] out_dtype."""
    (m, k), n = a.shape, w.shape[0]
    out = torch.empty((m, n), device=a.device, dtype=out_dtype)
    grid = (triton.cdiv(m, BLOCK_M) * triton.cdiv(n, BLOCK_N),)
    _int8_gemm_kernel[grid](
        a, w, out, a_scale, w_scale, bias if bias is not None else a_scale,
        m, n, k,
        a.stride(0), a.stride(1), w.stride(0), w.stride(1), out.stride(0), out.stride(1),
        HAS_BIAS=bias is not None, EVEN_K=k % BLOCK_K == 0,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
        num_stages=NUM_STAGES, num_warps=NUM_WARPS,
    )  # fmt: skip
    return out
