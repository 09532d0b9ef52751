"""Load NLF from the eager safetensors + meta json into `NLFModel` (sizes read from the tensors)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from common.errors import VolumeFileError
from common.files import load_safetensors_sequential
from pose.files import read_nlf_meta
from pose.nlf.backbone import build_features
from pose.nlf.config import NLFConfig
from pose.nlf.field import WeightField
from pose.nlf.head import LocalizerHead
from pose.nlf.model import CropModel, NLFModel

log = logging.getLogger(__name__)

CROP_PREFIX = "crop_model."
FEATURES_PREFIX = "crop_model.backbone.1."
FIELD_PREFIX = "crop_model.heatmap_head.weight_field."
CANONICAL_KEY = "__meta_cano_all_smpl"
HEAD_CONV_KEY = "crop_model.heatmap_head.layer.0.weight"


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _build_crop_model(state: dict[str, torch.Tensor], config: NLFConfig, path: Path) -> CropModel:
    """A meta-device CropModel shaped after `state` (full file keys)."""
    try:
        features = build_features(_strip(state, FEATURES_PREFIX))
        in_channels = state[HEAD_CONV_KEY].shape[1]
        with torch.device("meta"):
            field = WeightField.from_state_dict(_strip(state, FIELD_PREFIX), config.n_out)
    except KeyError as exc:
        raise VolumeFileError(path, f"missing key {exc.args[0]!r} (not an NLF eager checkpoint?)") from None
    if field.link_dim != config.backbone_link_dim:
        raise VolumeFileError(path, f"weight field makes {field.link_dim}-channel filters, "
                              f"meta backbone_link_dim is {config.backbone_link_dim}")
    with torch.device("meta"):
        head = LocalizerHead(in_channels, field, config)
    return CropModel(features, head)


def _crop_state(model: CropModel, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The tensors the crop model needs, in float32, with the file's quirks smoothed over."""
    crop = _strip(state, CROP_PREFIX)
    needed = model.state_dict(keep_vars=True)
    missing = []
    out: dict[str, torch.Tensor] = {}
    for key, target in needed.items():
        if key in crop:
            value = crop[key]
            if key.startswith("backbone.0.") and value.dim() == 0:
                value = value.reshape(1)
            out[key] = value.to(torch.float32) if value.is_floating_point() else value.clone()
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.zeros((), dtype=torch.long)
        elif key.startswith("backbone.0."):
            out[key] = torch.full(tuple(target.shape), 0.5)
        else:
            missing.append(CROP_PREFIX + key)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise VolumeFileError(path, f"missing keys: {shown}")
    return out


def load_nlf(weights: Path, meta: Path, device: torch.device, *, double_linear_light: bool = False) -> NLFModel:
    """NLFModel on `device`: backbone and head conv in fp16 on CUDA (fp32 on CPU), weight field in fp32."""
    weights, meta = Path(weights), Path(meta)
    config = NLFConfig.from_meta(read_nlf_meta(meta))
    state, _ = load_safetensors_sequential(weights)
    if CANONICAL_KEY not in state:
        raise VolumeFileError(weights, f"missing key {CANONICAL_KEY!r} (canonical SMPL points)")
    canonical = state[CANONICAL_KEY].to(torch.float32)
    if canonical.ndim != 2 or canonical.shape[1] != 3 or canonical.shape[0] <= 24:
        raise VolumeFileError(weights, f"{CANONICAL_KEY} has shape {tuple(canonical.shape)}, expected [V+24, 3]")

    crop_model = _build_crop_model(state, config, weights)
    try:
        crop_model.load_state_dict(_crop_state(crop_model, state, weights), strict=True, assign=True)
    except RuntimeError as exc:
        raise VolumeFileError(weights, f"tensor shapes do not match NLF's layout ({exc})") from None
    del state

    model = NLFModel(crop_model, canonical, config, double_linear_light=double_linear_light)
    model.eval().to(device)
    if device.type == "cuda":
        crop_model.backbone.half()
        crop_model.heatmap_head.layer.half()
    model.prepare_filters()
    n_params = sum(p.numel() for p in crop_model.parameters())
    log.info("NLF loaded from %s: %.1fM parameters, %d canonical points", weights, n_params / 1e6, len(canonical))
    return model
