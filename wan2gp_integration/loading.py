"""DiT file -> ScailDiT: the int8 file through mmgp (Linears become quanto QLinear), or a bf16 file.

`inspect_dit_file` checks the header alone (size, truncation, every key the model needs) and names
what is wrong in a second; the pipeline runs it among its file checks. The loader reads the weights
front to back into one buffer first (network volumes are 30-50x slower under mmap's random page
faults), checks the header, and hands mmgp an in-memory state dict with the file's quantization
map; mmgp never maps the file itself.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import torch
from mmgp import offload

from common.errors import VolumeFileError
from common.files import (
    check_keys,
    check_layout,
    load_safetensors_sequential,
    read_safetensors_header,
)
from common.page_lock import page_lock_module
from common.read_order import UNORDERED, ReadOrder
from wan2gp_integration.dit import DiTConfig, ScailDiT

log = logging.getLogger(__name__)

DIT_FILE = "wan2.1_scail_preview_14B_quanto_bf16_int8.safetensors"

# Keys a quantized Linear stores besides `<m>.weight._data` (what `<m>.weight` becomes); only the scale is required.
_SCALE = ".weight._scale"
_QUANTO_EXTRA = (_SCALE, ".input_scale", ".output_scale")
# What DiTConfig.from_state_dict reads.
_CONFIG_KEYS = (
    "patch_embedding.weight",
    "blocks.0.ffn.0.weight",
    "head.head.weight",
    "text_embedding.0.weight",
    "img_emb.proj.1.weight",
    "time_embedding.0.weight",
)


def _model_keys(file_keys: set[str]) -> set[str]:
    """The file's keys as the model names them: `<m>.weight._data` -> `<m>.weight`, quanto extras dropped."""
    return {key.removesuffix("._data") for key in file_keys if not key.endswith(_QUANTO_EXTRA)}


def quantization_map(path: Path, metadata: dict[str, str]) -> dict[str, dict] | None:
    """The quanto quantization map stored by mmgp's saver, or None for a plain file."""
    try:
        if "quantization_map_base64" in metadata:
            return json.loads(base64.b64decode(metadata["quantization_map_base64"]))
        if "quantization_map" in metadata:
            return json.loads(metadata["quantization_map"])
    except ValueError as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise VolumeFileError(path, f"unreadable quantization map in the metadata ({exc})") from None
    return None


def inspect_dit_file(path: Path) -> tuple[DiTConfig, dict[str, dict] | None]:
    """(config, quantization map or None) from the header alone; VolumeFileError naming the problem."""
    header, metadata = read_safetensors_header(path)
    present = _model_keys(set(header))
    check_keys(path, present, _CONFIG_KEYS)
    shapes = {key: entry["shape"] for key, entry in header.items()}
    cfg = DiTConfig.from_state_dict(shapes)
    qmap = quantization_map(path, metadata)
    quantized = {key.removesuffix(".weight._data") for key in header if key.endswith(".weight._data")}
    if quantized and qmap is None:
        raise VolumeFileError(path, "int8 weights without a quantization map in the metadata (not an mmgp file?)")
    if qmap is not None and set(qmap) != quantized:
        raise VolumeFileError(path, "quantization map and int8 weights disagree")

    with torch.device("meta"):
        expected = set(ScailDiT(cfg).state_dict())
    check_layout(path, present, expected, "a SCAIL DiT checkpoint")
    check_keys(path, header, {m + _SCALE for m in quantized})
    return cfg, qmap


def load_dit(
    path: Path, device: torch.device, dtype: torch.dtype, *, pinned: bool = False, reads: ReadOrder = UNORDERED
) -> ScailDiT:
    """The DiT of `path` (int8 mmgp/quanto file or plain bf16 safetensors) computing in `dtype`, read in its
    turn of `reads`; `pinned` page-locks the weights after the read (for mmgp's streaming profiles,
    which would pin them anyway, more slowly).

    Time embedding and modulation stay float32. Pass device cpu to hand the model to mmgp's
    `offload.profile`; another device moves it there (resident). Do not run the int8 model in
    bfloat16 on the CPU: quanto's CPU int8 kernel for bf16 (torch._weight_int8pack_mm) crashes the
    process with torch 2.14; CPU runs use float32.
    """
    path = Path(path)
    # The read goes first: it is the cold start's longest stretch, and the check's CPU work would hold
    # its start back behind the other loaders' checks (1.4-2 s on the H100 host, against 0.5 s).
    state_dict, _ = load_safetensors_sequential(path, reads, page_locked=pinned)
    cfg, qmap = inspect_dit_file(path)
    if qmap:
        # quanto computes a QLinear in the dtype of its weight scales (bf16 in the file): without this cast a
        # float32 CPU run would do every block matmul in bf16.
        state_dict = {key: value.to(dtype) if key.endswith(_SCALE) else value for key, value in state_dict.items()}

    with torch.device("meta"):
        model = ScailDiT(cfg)
    source = (state_dict, qmap) if qmap else state_dict
    offload.load_model_data(model, source, default_dtype=dtype, writable_tensors=False, verboseLevel=0)
    model.eval().requires_grad_(False)
    if pinned:
        # The int8 weights are views of the locked file buffer; what loading made anew (float32
        # modulations, cast scales) is locked here. mmgp's marker then spares the model its own pinning:
        # its scan, two garbage collections and 320 MB of cudaHostAlloc took 1.7 s on the H100 host.
        page_lock_module(model)
        model._already_pinned = True
    if device.type != "cpu":
        model.to(device)
    log.info("DiT loaded: %d blocks, dim %d, %s, %s", cfg.num_layers, cfg.dim, "int8" if qmap else "plain", dtype)
    return model
