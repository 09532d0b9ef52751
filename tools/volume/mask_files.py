"""Multi-person mask files with random weights: SAM (fp16, Meta's keys) and a MatAnyone stand-in.

SAM: `full` is ViT-H (594 tensors, 1.2 GB in fp16); `tiny` keeps every key name with a 64-wide, 2-block
encoder (block 1 global), the prompt encoder and mask decoder at SAM's fixed 256 width.
MatAnyone (`mask/model.safetensors`): not implemented by the worker yet, so only the parts whose layout
is certain are written: `full` the ResNet-50 pixel encoder up to layer3 and `pix_feat_proj`; `tiny`
only `pix_feat_proj`. The file satisfies the presence/header check; nothing loads it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from segment_anything.build_sam import _build_sam
from torchvision.models import resnet50

from pose.files import MATANYONE_FILE, SAM_FILE

log = logging.getLogger(__name__)

SAM_ENCODERS = {"full": (1280, 32, 16, [7, 15, 23, 31]), "tiny": (64, 2, 2, [1])}
MATANYONE_PIXEL_DIM, MATANYONE_MS_DIM = 256, 1024


def sam_state(size: Literal["tiny", "full"], seed: int = 0) -> dict[str, torch.Tensor]:
    """SAM's state dict with random weights in fp16 (pixel_mean/std are not saved, as in Meta's file)."""
    torch.manual_seed(seed)
    sam = _build_sam(*SAM_ENCODERS[size])
    return {k: v.to(torch.float16).contiguous() for k, v in sam.state_dict().items()}


def matanyone_state(size: Literal["tiny", "full"], seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = {
        "pix_feat_proj.weight": torch.randn(MATANYONE_PIXEL_DIM, MATANYONE_MS_DIM, 1, 1) / MATANYONE_MS_DIM**0.5,
        "pix_feat_proj.bias": torch.zeros(MATANYONE_PIXEL_DIM),
    }
    if size == "full":
        trunk = resnet50()
        for name in ("conv1", "bn1", "layer1", "layer2", "layer3"):
            for key, value in getattr(trunk, name).state_dict().items():
                state[f"pixel_encoder.{name}.{key}"] = value
    return {k: v.contiguous() for k, v in state.items()}


def write_mask_files(root: Path, size: Literal["tiny", "full"], *, seed: int = 0) -> None:
    """Write the SAM and MatAnyone files under `root`."""
    sam_path, matanyone_path = Path(root) / SAM_FILE, Path(root) / MATANYONE_FILE
    sam_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sam_state(size, seed), str(sam_path), metadata={"format": "pt"})
    save_file(matanyone_state(size, seed), str(matanyone_path), metadata={"format": "pt"})
    log.info("wrote %s and %s (%s)", sam_path, matanyone_path, size)
