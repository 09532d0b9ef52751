"""Multi-person mask files with random weights: SAM (fp16, Meta's keys) and MatAnyone v1 (float32).

SAM: `full` is ViT-H (594 tensors, 1.2 GB in fp16); `tiny` keeps every key name with a 64-wide, 2-block
encoder (block 1 global), the prompt encoder and mask decoder at SAM's fixed 256 width.
MatAnyone (`mask/model.safetensors`): `full` is the published layout (562 tensors, 35.3M parameters);
`tiny` has the same 562 key names with every width shrunk (32-wide features, 8-wide ResNet stems).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from segment_anything.build_sam import _build_sam

from pose.files import MATANYONE_FILE, SAM_FILE
from pose.multi.matanyone.config import MatAnyoneConfig, TrunkShape
from pose.multi.matanyone.model import MatAnyone

log = logging.getLogger(__name__)

SAM_ENCODERS = {"full": (1280, 32, 16, [7, 15, 23, 31]), "tiny": (64, 2, 2, [1])}
MATANYONE_CONFIGS = {
    "full": MatAnyoneConfig(),
    "tiny": MatAnyoneConfig(
        pixel_dim=32, key_dim=16, value_dim=32, sensory_dim=32, embed_dim=32,
        pixel_encoder=TrunkShape(8, (3, 4, 6), bottleneck=True),
        mask_encoder=TrunkShape(8, (2, 2, 2), bottleneck=False, in_channels=4),
        ff_dim=64, up_dims=(32, 16, 16, 8, 4),
    ),
}


def sam_state(size: Literal["tiny", "full"], seed: int = 0) -> dict[str, torch.Tensor]:
    """SAM's state dict with random weights in fp16 (pixel_mean/std are not saved, as in Meta's file)."""
    torch.manual_seed(seed)
    sam = _build_sam(*SAM_ENCODERS[size])
    return {k: v.to(torch.float16).contiguous() for k, v in sam.state_dict().items()}


def matanyone_state(size: Literal["tiny", "full"], seed: int = 0) -> dict[str, torch.Tensor]:
    """MatAnyone's state dict with random weights in float32 (no ImageNet weights are fetched)."""
    torch.manual_seed(seed)
    return {k: v.contiguous() for k, v in MatAnyone(MATANYONE_CONFIGS[size]).state_dict().items()}


def write_mask_files(root: Path, size: Literal["tiny", "full"], *, seed: int = 0) -> None:
    """Write the SAM and MatAnyone files under `root`."""
    sam_path, matanyone_path = Path(root) / SAM_FILE, Path(root) / MATANYONE_FILE
    sam_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sam_state(size, seed), str(sam_path), metadata={"format": "pt"})
    save_file(matanyone_state(size, seed), str(matanyone_path), metadata={"format": "pt"})
    log.info("wrote %s and %s (%s)", sam_path, matanyone_path, size)
