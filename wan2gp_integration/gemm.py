"""How the DiT blocks' int8 Linears compute: quanto's bf16 GEMM, an int8 GEMM, or an e4m3 GEMM.

The volume's blocks hold optimum-quanto int8 weights, absmax-scaled per output row. quanto computes
them as "dequantise to bf16, then a bf16 GEMM" (mode "bf16"): the weights buy memory, not time. On GPUs
with 8-bit tensor cores two faster forms run on the very same int8 tensors, so mmgp loads, pins and
streams them as before:

- "int8": the activations are rounded to int8 with one scale per token and multiplied by the weights
  exactly (int32 accumulation) in our Triton kernels (int8_gemm.py); the GEMM applies both scales and
  the bias before its bf16 store. The only error is the activations' rounding: about 0.9% per GEMM.
- "fp8": the weights are re-expressed in e4m3 (3 mantissa bits) and the activations quantised per
  token; `torch._scaled_mm` applies both scales. About 3.7% per GEMM.

"auto" is int8 where it was measured to win: on an H100 inside the engine, a CFG step at 896x512x81 takes
8.6 s instead of 9.6 s, and the forward stays within 1.2% of bf16 (docs/PERFORMANCE.md). Elsewhere it is
bf16: the int8 kernel's tiles do not fit the shared memory of consumer GPUs, and on an A100 its speed has
not been measured.
"""

from __future__ import annotations

import logging
from types import MethodType

import torch
from torch import nn

try:
    from wan2gp_integration import int8_gemm as int8_kernels
except ImportError:  # no Triton: the CUDA int8 mode is unavailable (gemm_problem says so)
    int8_kernels = None

log = logging.getLogger(__name__)

GEMM_MODES = ("bf16", "int8", "fp8")
E4M3 = torch.float8_e4m3fn
E4M3_MAX = torch.finfo(E4M3).max  # 448
# quanto's int8 weights are absmax-scaled per output row: every row spans [-127, 127] (127 is its max).
INT8_MAX = 127.0


def _row_absmax(rows: torch.Tensor) -> torch.Tensor:
    """[M, K] -> [M, 1] float32 absolute maxima, kept off zero so that all-zero rows divide safely."""
    return rows.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12)


def int8_linear(x: torch.Tensor, weight_int8: torch.Tensor, weight_scale: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """x W^T + b as an int8 GEMM: x [..., in], weight_int8 [out, in], weight_scale [out, 1] -> [..., out] in x's dtype."""
    rows = x.reshape(-1, x.shape[-1])
    out = torch.ops.scail.int8_linear(rows, weight_int8, weight_scale.reshape(-1), bias)
    return out.reshape(*x.shape[:-1], weight_int8.shape[0])


# One opaque op for torch.compile: mmgp's hooks cut the compiled blocks into a graph per module, and when
# dynamo traced into the int8 path (quantisation in torch, the GEMM as a triton_op) in every piece, a
# first step under mmgp took minutes and a CFG step 17.8 s instead of 8.6 s. Opaque, each piece compiles in no time, and eager runs
# the same two kernels.
@torch.library.custom_op("scail::int8_linear", mutates_args=())
def _int8_linear_op(rows: torch.Tensor, weight_int8: torch.Tensor, weight_scale: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """rows [M, K], weight_int8 [N, K], weight_scale [N] -> [M, N] in rows' dtype; this body is the
    reference arithmetic (CPU), which the CUDA kernels below reproduce."""
    row_scale = _row_absmax(rows) * (1 / INT8_MAX)
    rows_int8 = torch.round(rows / row_scale).to(torch.int8)  # |value| <= 127 by construction
    out = torch._int_mm(rows_int8, weight_int8.t()).float() * row_scale * weight_scale.float()
    return (out if bias is None else out + bias.float()).to(rows.dtype)


@_int8_linear_op.register_kernel("cuda")
def _int8_linear_cuda(rows, weight_int8, weight_scale, bias):
    rows_int8, row_scale = int8_kernels.quantize_rows(rows.contiguous())
    return int8_kernels.int8_gemm(rows_int8, weight_int8, row_scale, weight_scale.float(), bias, rows.dtype)


@_int8_linear_op.register_fake
def _int8_linear_shape(rows, weight_int8, weight_scale, bias):
    return rows.new_empty((rows.shape[0], weight_int8.shape[0]))


def fp8_linear(x: torch.Tensor, weight_int8: torch.Tensor, weight_scale: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """x W^T + b in e4m3: x [..., in] bf16, weight_int8 [out, in], weight_scale [out, 1] -> [..., out] bf16."""
    rows = x.reshape(-1, x.shape[-1])
    amax = _row_absmax(rows)
    x_fp8 = (rows * (E4M3_MAX / amax)).to(E4M3)
    # int8 -> e4m3 with one fixed factor: the row scale moves into the GEMM's column scale.
    w_fp8 = (weight_int8.float() * (E4M3_MAX / INT8_MAX)).to(E4M3)
    out = torch._scaled_mm(
        x_fp8,
        w_fp8.t(),  # a column-major view, as _scaled_mm wants its second operand
        scale_a=amax / E4M3_MAX,
        scale_b=weight_scale.float().t() * (INT8_MAX / E4M3_MAX),
        bias=None if bias is None else bias.to(torch.bfloat16),
        out_dtype=torch.bfloat16,
    )
    return out.reshape(*x.shape[:-1], weight_int8.shape[0])


def _int8_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return int8_linear(x, self.weight._data, self.weight._scale, self.bias)


def _fp8_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return fp8_linear(x, self.weight._data, self.weight._scale, self.bias)


_FORWARDS = {"int8": _int8_forward, "fp8": _fp8_forward}
_DESCRIPTIONS = {"bf16": "bf16 GEMMs of dequantised weights (quanto)", "int8": "int8 x int8 GEMMs",
                 "fp8": "e4m3 GEMMs"}  # fmt: skip


def is_int8_linear(module: nn.Module) -> bool:
    """A quanto Linear with int8 weights (what the volume's DiT blocks hold)."""
    weight = getattr(module, "weight", None)
    return isinstance(module, nn.Linear) and getattr(getattr(weight, "_data", None), "dtype", None) == torch.int8


def use_gemm(model: nn.Module, mode: str, prefix: str = "blocks.") -> int:
    """Compute every int8 Linear under `prefix` in `mode` from now on ("bf16" restores quanto's own
    forward); returns how many layers it set. The weights are untouched. Call it before handing the
    model to mmgp, which wraps each module's forward as it finds it."""
    if mode not in GEMM_MODES:
        raise ValueError(f"GEMM mode must be one of {', '.join(GEMM_MODES)}, got {mode!r}")
    count = 0
    for name, module in model.named_modules():
        if name.startswith(prefix) and is_int8_linear(module):
            module.__dict__.pop("forward", None)
            if mode in _FORWARDS:
                module.forward = MethodType(_FORWARDS[mode], module)
            count += 1
    log.info("GEMMs: %d int8 Linear layers compute as %s", count, _DESCRIPTIONS[mode])
    return count


def gemm_problem(mode: str, device: torch.device) -> str | None:
    """Why `mode` cannot run on `device`, or None when it can."""
    if mode == "bf16":
        return None
    if device.type != "cuda":
        return f"{device.type} has no 8-bit tensor cores"
    need = (8, 9) if mode == "fp8" else (8, 0)
    capability = torch.cuda.get_device_capability(device)
    if capability < need:
        return f"{mode} GEMMs need compute capability {need[0]}.{need[1]}, this GPU has {capability[0]}.{capability[1]}"
    if mode == "int8" and int8_kernels is None:
        return "int8 GEMMs need Triton, which is not installed"
    if mode == "int8":
        shared = getattr(torch.cuda.get_device_properties(device), "shared_memory_per_block_optin", None)
        if shared is not None and shared < int8_kernels.SHARED_MEMORY_BYTES:
            return (f"the int8 GEMM's tiles need {int8_kernels.SHARED_MEMORY_BYTES // 1024} KiB of shared memory per "
                    f"block, this GPU has {shared // 1024} KiB")  # fmt: skip
    return None


def _auto_gemm(device: torch.device) -> str:
    """int8 on Hopper and newer GPUs that can run it, bf16 elsewhere (see the module docstring)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device) >= (9, 0) and gemm_problem("int8", device) is None:
        return "int8"
    return "bf16"


def resolve_gemm(name: str, device: torch.device) -> str:
    """The GEMM mode that runs for the setting `name` ("auto" or one of GEMM_MODES) on `device`: "auto" is
    int8 on Hopper and newer, bf16 elsewhere; a named mode that cannot run falls back to bf16 with a warning."""
    if name != "auto" and name not in GEMM_MODES:
        raise ValueError(f"GEMM mode must be auto or one of {', '.join(GEMM_MODES)}, got {name!r}")
    if name == "auto":
        return _auto_gemm(device)
    problem = gemm_problem(name, device)
    if problem is not None:
        log.warning("%s GEMMs asked for, but %s; computing the int8 Linears as bf16 GEMMs", name, problem)
        return "bf16"
    return name
