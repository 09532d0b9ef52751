"""Attention backends for the DiT, all on q, k, v laid out [B, L, heads, head_dim].

`set_backend(name)` picks one of "sdpa" (PyTorch scaled_dot_product_attention; on CUDA cuDNN first),
"flash" (flash_attn), "sage" (sageattention), "fp8" (cuDNN's fp8 SDPA through cudnn-frontend, for
self-attention on Hopper and newer; cross-attention stays on sdpa), "math" (plain PyTorch, the
reference) or "auto". On an H100 at SCAIL's 48,832 tokens cuDNN attention ran 83 ms per call,
flash 134 ms, sageattention 1.0.6 106 ms with 1.4% error, and cuDNN fp8 63 ms with 6% error per call
but 1.8-1.9% over a whole forward, inside the 2% guard (docs/PERFORMANCE.md). So "auto" is fp8 where
it runs (Hopper and newer, cudnn-frontend installed, a probe passed) and sdpa with cuDNN first elsewhere.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

log = logging.getLogger(__name__)

Backend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# cuDNN attention is the fastest fused kernel of PyTorch on Hopper; the others are fallbacks for
# shapes or dtypes it refuses.
_CUDA_SDPA_ORDER = [
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.MATH,
]


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if q.is_cuda:
        with sdpa_kernel(_CUDA_SDPA_ORDER, set_priority=True):
            out = F.scaled_dot_product_attention(q, k, v)
    else:
        out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2)


def _math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = torch.einsum("blhd,bmhd->bhlm", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("bhlm,bmhd->blhd", scores.softmax(dim=-1), v)


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from flash_attn import flash_attn_func

    return flash_attn_func(q, k, v)


def _sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False)


def _fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from wan2gp_integration.fp8_attention import fp8_attention

    if q.shape != k.shape or not q.is_cuda:  # cross-attention to the text and image tokens: small, stays bf16
        return _sdpa(q, k, v)
    return fp8_attention(q, k, v)


_BACKENDS: dict[str, Backend] = {"sdpa": _sdpa, "math": _math, "flash": _flash, "sage": _sage, "fp8": _fp8}
_PACKAGES = {"flash": "flash_attn", "sage": "sageattention", "fp8": "cudnn"}

_current: tuple[str, Backend] = ("sdpa", _sdpa)


def available_backends() -> list[str]:
    """Backend names usable in this environment."""
    return [name for name in _BACKENDS if name not in _PACKAGES or importlib.util.find_spec(_PACKAGES[name])]


def resolve_backend(name: str, device: torch.device | None = None) -> str:
    """The concrete backend for `name`; ValueError if unknown. "auto" is fp8 where cuDNN's fp8 attention
    can run on `device` (its error over a forward passed the 2% guard, docs/PERFORMANCE.md), else sdpa."""
    if name == "auto":
        return "fp8" if device is not None and _fp8_supported(device) else "sdpa"
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose auto, {', '.join(_BACKENDS)}")
    return name


def set_backend(name: str = "auto", device: torch.device | None = None) -> str:
    """Select the backend used by `attention`; falls back to sdpa, with a warning, when a package is
    missing or when fp8 cannot run on `device` (not Hopper or newer, or cuDNN refuses the graph)."""
    global _current
    chosen = resolve_backend(name, device)
    if chosen not in available_backends():
        log.warning("attention backend %r asked for but %s is not installed; using sdpa", chosen, _PACKAGES[chosen])
        chosen = "sdpa"
    elif chosen == "fp8" and (problem := _fp8_problem(device)):
        log.warning("attention backend fp8 cannot run here (%s); using sdpa", problem)
        chosen = "sdpa"
    _current = (chosen, _BACKENDS[chosen])
    log.info("attention backend: %s (asked: %s; available: %s)", chosen, name, ", ".join(available_backends()))
    return chosen


def _fp8_supported(device: torch.device) -> bool:
    from wan2gp_integration.fp8_attention import fp8_attention_supported

    return fp8_attention_supported(device)


def _fp8_problem(device: torch.device | None) -> str | None:
    if device is None or not _fp8_supported(device):
        return f"needs cudnn-frontend and a CUDA GPU of compute capability 9.0 or newer, not {device}"
    from wan2gp_integration.fp8_attention import fp8_attention_problem

    return fp8_attention_problem(device)


def current_backend() -> str:
    return _current[0]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention without mask: q [B, Lq, H, D], k and v [B, Lk, H, D] -> [B, Lq, H, D]."""
    return _current[1](q, k, v)
