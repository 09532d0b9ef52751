"""Attention backends for the DiT, all on q, k, v laid out [B, L, heads, head_dim].

`set_backend(name)` picks one of "sdpa" (PyTorch scaled_dot_product_attention; on CUDA cuDNN first),
"flash" (flash_attn), "sage" (sageattention), "math" (plain PyTorch, the reference) or "auto" (sdpa).
On an H100 at SCAIL's 48,832 tokens cuDNN attention ran 83 ms per call, flash 134 ms and
sageattention 1.0.6 106 ms with 1.4% error (docs/PERFORMANCE.md), so "auto" is sdpa with cuDNN
first; flash and sage are opt-in.
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


_BACKENDS: dict[str, Backend] = {"sdpa": _sdpa, "math": _math, "flash": _flash, "sage": _sage}
_PACKAGES = {"flash": "flash_attn", "sage": "sageattention"}

_current: tuple[str, Backend] = ("sdpa", _sdpa)


def available_backends() -> list[str]:
    """Backend names usable in this environment."""
    return [name for name in _BACKENDS if name not in _PACKAGES or importlib.util.find_spec(_PACKAGES[name])]


def resolve_backend(name: str) -> str:
    """The concrete backend for `name` ("auto" or one of the backends); ValueError if unknown."""
    if name == "auto":
        return "sdpa"
    if name not in _BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose auto, {', '.join(_BACKENDS)}")
    return name


def set_backend(name: str = "auto") -> str:
    """Select the backend used by `attention`; falls back to sdpa when a package is missing."""
    global _current
    chosen = resolve_backend(name)
    if chosen not in available_backends():
        log.warning("attention backend %r asked for but %s is not installed; using sdpa", chosen, _PACKAGES[chosen])
        chosen = "sdpa"
    _current = (chosen, _BACKENDS[chosen])
    log.info("attention backend: %s (asked: %s; available: %s)", chosen, name, ", ".join(available_backends()))
    return chosen


def current_backend() -> str:
    return _current[0]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention without mask: q [B, Lq, H, D], k and v [B, Lk, H, D] -> [B, Lq, H, D]."""
    return _current[1](q, k, v)
