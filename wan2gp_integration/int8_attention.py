"""8-bit attention for Hopper in Triton: int8 Q.K^T and e4m3 P.V (the SageAttention2 recipe).

At SCAIL's 48,832 tokens self-attention is ~70% of a forward (docs/PERFORMANCE.md). Hopper's tensor
cores run int8 and fp8 at twice the bf16 rate, so both products of the attention run in 8 bits:
- K is smoothed first: the mean key over the sequence is subtracted, per head and channel. Softmax is
  unchanged by it (each query's scores all shift by the same q.mean), and the keys' common offset no
  longer eats the int8 range.
- Q and K are int8 with one scale per token; the kernel quantises its Q tile itself (each Q tile is
  read once), K is quantised once before the launch (every program reads all of it).
- P = exp2(s - max) lies in (0, 1]; it enters the second product as e4m3 times 448 (e4m3's largest
  value), V as e4m3 with one scale per channel. Each block's P.V starts from a zero accumulator and is
  added in float32, because Hopper's fp8 MMA accumulates in reduced precision.

`quantized_attention_reference` computes the same quantised arithmetic in plain PyTorch: the
specification of the kernel, and what the CPU tests check.
"""

from __future__ import annotations

import math

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the reference below still works
    triton = None

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
INT8_MAX = 127.0
LOG2E = 1.4426950408889634


def smooth_and_quantize_k(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k [B, N, H, D] -> (int8 [B, N, H, D], float32 scale [B, N, H]) after subtracting the mean key."""
    k = k.float()
    k = k - k.mean(dim=1, keepdim=True)
    amax = k.abs().amax(dim=-1).clamp_min(1e-6)
    return (k * (INT8_MAX / amax)[..., None]).round().to(torch.int8), amax / INT8_MAX


def quantize_v_transposed(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v [B, N, H, D] -> (e4m3 [B, H, D, N], float32 scale [B, H, D]): one scale per channel.

    The sequence axis is the contiguous one because Hopper's fp8 MMA wants its reduction axis there.
    """
    amax = v.float().abs().amax(dim=1).clamp_min(1e-6)  # [B, H, D]
    scale = amax / E4M3_MAX
    v_q = (v.float() / scale[:, None]).to(E4M3)
    return v_q.permute(0, 2, 3, 1).contiguous(), scale


def quantize_q(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q [B, N, H, D] -> (int8, float32 scale [B, N, H]): what the kernel does to each Q tile."""
    amax = q.float().abs().amax(dim=-1).clamp_min(1e-6)
    return (q.float() * (INT8_MAX / amax)[..., None]).round().to(torch.int8), amax / INT8_MAX


def quantized_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The kernel's arithmetic in PyTorch (one softmax over the whole row): q, k, v [B, N, H, D] -> bf16."""
    q_i8, q_scale = quantize_q(q)
    k_i8, k_scale = smooth_and_quantize_k(k)
    v_t, v_scale = quantize_v_transposed(v)
    scores = torch.einsum("bnhd,bmhd->bhnm", q_i8.float(), k_i8.float())
    scores = scores * q_scale.permute(0, 2, 1)[..., None] * k_scale.permute(0, 2, 1)[:, :, None, :]
    scores = scores * (LOG2E / math.sqrt(q.shape[-1]))
    p = torch.exp2(scores - scores.amax(dim=-1, keepdim=True))
    row_sum = p.sum(dim=-1, keepdim=True)
    p_q = (p * E4M3_MAX).to(E4M3).float()
    out = torch.einsum("bhnm,bhdm->bnhd", p_q, v_t.float())
    out = out / (row_sum.permute(0, 2, 1, 3) * E4M3_MAX) * v_scale[:, None]
    return out.to(torch.bfloat16)


if triton is not None:

    @triton.jit
    def _attend_block(
        acc, m_i, l_i, q_i8, q_scale, k_ptrs, ks_ptrs, v_ptrs, start, seq_len,
        stride_kn, stride_ksn,
        BLOCK_N: tl.constexpr, MASKED: tl.constexpr, PV_FP8: tl.constexpr,
    ):  # fmt: skip
        offs_n = start + tl.arange(0, BLOCK_N)
        if MASKED:
            in_seq = offs_n < seq_len
            k = tl.load(k_ptrs + start * stride_kn, mask=in_seq[:, None], other=0)
            k_scale = tl.load(ks_ptrs + start * stride_ksn, mask=in_seq, other=0.0)
            v = tl.load(v_ptrs + start, mask=in_seq[None, :], other=0.0)
        else:
            k = tl.load(k_ptrs + start * stride_kn)
            k_scale = tl.load(ks_ptrs + start * stride_ksn)
            v = tl.load(v_ptrs + start)
        s = tl.dot(q_i8, tl.trans(k), out_dtype=tl.int32).to(tl.float32) * q_scale[:, None] * k_scale[None, :]
        if MASKED:
            s = tl.where(in_seq[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if PV_FP8:
            pv = tl.dot((p * 448.0).to(tl.float8e4nv), tl.trans(v))
        else:
            pv = tl.dot(p.to(tl.bfloat16), tl.trans(v))
        return acc * alpha[:, None] + pv, m_new, l_i

    @triton.jit
    def _int8_attention_kernel(
        Q, K, KS, VT, VS, Out, seq_len, num_heads, qk_scale,
        stride_qb, stride_qn, stride_qh,
        stride_kb, stride_kn, stride_kh,
        stride_ksb, stride_ksn, stride_ksh,
        stride_vb, stride_vh, stride_vd,
        stride_vsb, stride_vsh,
        stride_ob, stride_on, stride_oh,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PV_FP8: tl.constexpr,
    ):  # fmt: skip
        pid_m = tl.program_id(0)
        batch, head = tl.program_id(1) // num_heads, tl.program_id(1) % num_heads
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        offs_n = tl.arange(0, BLOCK_N)
        in_seq_m = offs_m < seq_len

        q_ptrs = Q + batch * stride_qb + head * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :]
        q = tl.load(q_ptrs, mask=in_seq_m[:, None], other=0.0).to(tl.float32)
        q_amax = tl.maximum(tl.max(tl.abs(q), axis=1), 1e-6)
        q_scaled = q * (127.0 / q_amax)[:, None]
        q_i8 = (q_scaled + tl.where(q_scaled >= 0, 0.5, -0.5)).to(tl.int8)  # round half away from zero
        q_scale = q_amax / 127.0 * qk_scale

        k_ptrs = K + batch * stride_kb + head * stride_kh + offs_n[:, None] * stride_kn + offs_d[None, :]
        ks_ptrs = KS + batch * stride_ksb + head * stride_ksh + offs_n * stride_ksn
        v_ptrs = VT + batch * stride_vb + head * stride_vh + offs_d[:, None] * stride_vd + offs_n[None, :]

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        full_blocks_end = (seq_len // BLOCK_N) * BLOCK_N
        for start in range(0, full_blocks_end, BLOCK_N):
            acc, m_i, l_i = _attend_block(
                acc, m_i, l_i, q_i8, q_scale, k_ptrs, ks_ptrs, v_ptrs, start, seq_len,
                stride_kn, stride_ksn, BLOCK_N, False, PV_FP8,
            )  # fmt: skip
        if full_blocks_end < seq_len:
            acc, m_i, l_i = _attend_block(
                acc, m_i, l_i, q_i8, q_scale, k_ptrs, ks_ptrs, v_ptrs, full_blocks_end, seq_len,
                stride_kn, stride_ksn, BLOCK_N, True, PV_FP8,
            )  # fmt: skip

        v_scale = tl.load(VS + batch * stride_vsb + head * stride_vsh + offs_d)
        p_scale = 448.0 if PV_FP8 else 1.0
        out = acc / (l_i * p_scale)[:, None] * v_scale[None, :]
        o_ptrs = Out + batch * stride_ob + head * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :]
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=in_seq_m[:, None])


# Tile shape and launch settings for Hopper: chosen by the sweep of bench/attention_sweep.py.
BLOCK_M, BLOCK_N, NUM_WARPS, NUM_STAGES = 128, 128, 8, 3


def int8_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, block_m: int = BLOCK_M, block_n: int = BLOCK_N,
    num_warps: int = NUM_WARPS, num_stages: int = NUM_STAGES, pv_fp8: bool = True,
) -> torch.Tensor:  # fmt: skip
    """Softmax attention without mask: q, k, v [B, N, H, 128] bf16 on CUDA -> [B, N, H, 128] bf16.

    `pv_fp8=False` keeps P.V in bf16 (only Q.K^T in int8): slower, about a third of the error.
    """
    if triton is None:
        raise RuntimeError("int8 attention needs Triton (a CUDA build of PyTorch)")
    batch, seq_len, heads, head_dim = q.shape
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"int8 attention wants equal q/k/v shapes, got {q.shape}, {k.shape}, {v.shape}")
    q = q.contiguous() if q.stride(-1) != 1 else q
    k_i8, k_scale = smooth_and_quantize_k(k)
    if pv_fp8:
        v_t, v_scale = quantize_v_transposed(v)
    else:
        v_t = v.to(torch.bfloat16).permute(0, 2, 3, 1).contiguous()
        v_scale = torch.ones(batch, heads, head_dim, device=v.device)
    out = torch.empty_like(q, dtype=torch.bfloat16)
    grid = (triton.cdiv(seq_len, block_m), batch * heads)
    _int8_attention_kernel[grid](
        q, k_i8, k_scale, v_t, v_scale, out, seq_len, heads, LOG2E / math.sqrt(head_dim),
        q.stride(0), q.stride(1), q.stride(2),
        k_i8.stride(0), k_i8.stride(1), k_i8.stride(2),
        k_scale.stride(0), k_scale.stride(1), k_scale.stride(2),
        v_t.stride(0), v_t.stride(1), v_t.stride(2),
        v_scale.stride(0), v_scale.stride(1),
        out.stride(0), out.stride(1), out.stride(2),
        HEAD_DIM=head_dim, BLOCK_M=block_m, BLOCK_N=block_n, PV_FP8=pv_fp8, num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    return out
