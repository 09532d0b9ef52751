"""FP8 self-attention through cuDNN's fused SDPA (cudnn-frontend's graph API), on Hopper and newer.

K and V are centred over the sequence (exact for softmax attention, see `fp8_attention`), then Q, K and V
are cast to e4m3 with one scale per tensor; cuDNN runs Q.K^T and P.V on the fp8 tensor
cores (P quantised with the fixed scale 448, P lying in [0, 1]). On Hopper cuDNN writes O only in
e4m3 (bf16 output is Blackwell-only): O is a convex combination of V's rows, so |O| <= max|V| and V's
scale serves O too. One cuDNN graph is built per shape and kept.

The casts are plain PyTorch, so torch.compile fuses them into the ops that produce q, k and v; the
cuDNN call is a custom op that the compiler keeps whole.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from functools import cache, lru_cache

import torch
import torch.nn.functional as F

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0

# Tensor ids of the graph's inputs and outputs in the variant pack.
_Q, _K, _V, _O, _Q_DESCALE, _K_DESCALE, _V_DESCALE, _S_DESCALE, _S_SCALE, _O_SCALE, _O_AMAX = range(11)


def fp8_attention_supported(device: torch.device) -> bool:
    """cudnn-frontend installed and a Hopper or newer GPU (cuDNN's fp8 SDPA starts at compute capability 9.0)."""
    return (
        device.type == "cuda"
        and torch.cuda.get_device_capability(device) >= (9, 0)
        and importlib.util.find_spec("cudnn") is not None
    )


@cache
def fp8_attention_problem(device: torch.device) -> str | None:
    """None when a small fp8 attention runs on `device` and agrees with float32 attention; else what went wrong."""
    generator = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(1, 256, 2, 128, device=device, dtype=torch.bfloat16, generator=generator) for _ in range(3))
    try:
        out = fp8_attention(q, k, v).float()
    except Exception as exc:  # noqa: BLE001 - whatever cuDNN refuses, the caller falls back to bf16 SDPA
        return f"{type(exc).__name__}: {str(exc)[:200]}"
    ref = F.scaled_dot_product_attention(*(t.transpose(1, 2).float() for t in (q, k, v))).transpose(1, 2)
    error = float((out - ref).norm() / ref.norm())
    return None if error < 0.15 else f"probe result off by {error:.1%}"


@lru_cache(maxsize=8)
def _graph(batch: int, heads: int, seq_len: int, head_dim: int, device_index: int):
    import cudnn

    graph = cudnn.pygraph(
        io_data_type=cudnn.data_type.FP8_E4M3,
        intermediate_data_type=cudnn.data_type.FLOAT,
        compute_data_type=cudnn.data_type.FLOAT,
    )
    dims = (batch, heads, seq_len, head_dim)
    strides = (seq_len * heads * head_dim, head_dim, heads * head_dim, 1)  # the [B, N, H, D] memory layout
    scalar_shape = {"dim": (1, 1, 1, 1), "stride": (1, 1, 1, 1)}

    def scalar(uid: int):
        return graph.tensor(uid=uid, data_type=cudnn.data_type.FLOAT, **scalar_shape)

    q, k, v = (
        graph.tensor(uid=uid, dim=dims, stride=strides, data_type=cudnn.data_type.FP8_E4M3) for uid in (_Q, _K, _V)
    )
    o, _stats, _amax_s, amax_o = graph.sdpa_fp8(
        q=q, k=k, v=v,
        descale_q=scalar(_Q_DESCALE), descale_k=scalar(_K_DESCALE), descale_v=scalar(_V_DESCALE),
        descale_s=scalar(_S_DESCALE), scale_s=scalar(_S_SCALE), scale_o=scalar(_O_SCALE),
        generate_stats=False, attn_scale=1.0 / math.sqrt(head_dim), use_causal_mask=False,
    )  # fmt: skip
    o.set_uid(_O).set_output(True).set_dim(dims).set_stride(strides).set_data_type(cudnn.data_type.FP8_E4M3)
    amax_o.set_uid(_O_AMAX).set_output(True).set_data_type(cudnn.data_type.FLOAT)
    amax_o.set_dim(scalar_shape["dim"]).set_stride(scalar_shape["stride"])
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    device = torch.device("cuda", device_index)
    workspace = torch.empty(graph.get_workspace_size(), dtype=torch.uint8, device=device)
    constants = {
        _S_SCALE: torch.full((1, 1, 1, 1), E4M3_MAX, device=device),
        _S_DESCALE: torch.full((1, 1, 1, 1), 1.0 / E4M3_MAX, device=device),
        _O_AMAX: torch.empty((1, 1, 1, 1), device=device),
    }
    return graph, cudnn.create_handle(), workspace, constants


@torch.library.custom_op("scail::cudnn_sdpa_fp8", mutates_args=())
def cudnn_sdpa_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, descale_q: torch.Tensor,
                   descale_k: torch.Tensor, descale_v: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """e4m3 q, k, v [B, N, H, D] (contiguous) with float32 descales [1, 1, 1, 1] -> e4m3 O scaled by 1/descale_v."""
    import cudnn

    batch, seq_len, heads, head_dim = q.shape
    graph, handle, workspace, constants = _graph(batch, heads, seq_len, head_dim, q.device.index or 0)
    out = torch.empty_like(q)
    cudnn.set_stream(handle, torch.cuda.current_stream(q.device).cuda_stream)
    pack = {_Q: q, _K: k, _V: v, _Q_DESCALE: descale_q, _K_DESCALE: descale_k, _V_DESCALE: descale_v,
            _O_SCALE: 1.0 / descale_v, _O: out, **constants}  # fmt: skip
    graph.execute(pack, workspace, handle=handle)
    return out


@cudnn_sdpa_fp8.register_fake
def _(q, k, v, descale_q, descale_k, descale_v):
    return torch.empty_like(q)


def to_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (e4m3 tensor, float32 descale [1, 1, 1, 1]) with one scale for the whole tensor."""
    amax = x.abs().amax().float().clamp_min(1e-6)
    return (x * (E4M3_MAX / amax)).to(E4M3).contiguous(), (amax / E4M3_MAX).reshape(1, 1, 1, 1)


def e4m3_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cuDNN's fp8 attention as it is: q, k, v [B, N, H, D] on CUDA -> [B, N, H, D] float32."""
    (q8, dq), (k8, dk), (v8, dv) = to_e4m3(q), to_e4m3(k), to_e4m3(v)
    return cudnn_sdpa_fp8(q8, k8, v8, dq, dk, dv).float() * dv.reshape(())


def centred(attend: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """attend(q, k - mean(k), v - mean(v)) + mean(v), means over the sequence (dim 1 of [B, N, H, D]), in float32.

    The same as attend(q, k, v) for softmax attention: a vector taken off every key shifts each query's
    logits by one constant, which softmax ignores, and each row of P sums to 1, so P (V - m) + m = P V.
    What it changes is what a low-precision `attend` must hold: the parts every token shares (the
    modulation's shift reaches every k and v) no longer spend e4m3's 3 mantissa bits, in V and in O.
    """
    k, v = k.float(), v.float()
    v_mean = v.mean(dim=1, keepdim=True)
    return attend(q, k - k.mean(dim=1, keepdim=True), v - v_mean) + v_mean


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention without mask in e4m3, K and V centred: q, k, v [B, N, H, D] bf16 on CUDA -> bf16."""
    return centred(e4m3_attention, q, k, v).to(q.dtype)
