"""Loads `mask/model.safetensors` (+ optional `mask/config.json`) into MatAnyone, sizes read from the tensors."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from common.errors import VolumeFileError
from common.files import load_safetensors_sequential
from pose.multi.matanyone.config import MatAnyoneConfig, config_from_json, config_from_state, describe
from pose.multi.matanyone.model import MatAnyone

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"


def load_matanyone(path: Path, device: torch.device) -> MatAnyone:
    """MatAnyone in float32 on `device`, eval mode. The head count and inference settings come from
    `config.json` beside the file when present, else the published defaults. VolumeFileError names the file
    when it does not fit the layout."""
    path = Path(path)
    config_path = path.with_name(CONFIG_NAME)
    base = config_from_json(config_path) if config_path.is_file() else MatAnyoneConfig()
    state, _ = load_safetensors_sequential(path)
    try:
        config = config_from_state(state, base)
    except KeyError as exc:
        raise VolumeFileError(path, f"missing key {exc.args[0]!r} (not a MatAnyone checkpoint?)") from None
    if config.embed_dim % config.num_heads:
        raise VolumeFileError(path, f"embed dim {config.embed_dim} is not divisible by {config.num_heads} heads")
    with torch.device("meta"):
        model = MatAnyone(config)
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise VolumeFileError(path, f"tensors do not match MatAnyone's layout ({exc})") from None
    # the normalisation constants are not saved in the file: rebuild them off the meta device
    model.pixel_mean = torch.tensor(config.pixel_mean).view(3, 1, 1)
    model.pixel_std = torch.tensor(config.pixel_std).view(3, 1, 1)
    log.info("MatAnyone loaded from %s: %s", path, describe(config))
    return model.to(device).eval()
