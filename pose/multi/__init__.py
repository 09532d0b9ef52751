"""Multi-person masks: SAM on the first frame, propagated through the video by MatAnyone; flat-colour composites."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pose.files import MATANYONE_FILE, SAM_FILE
from pose.multi.matanyone import MatAnyone, load_matanyone
from pose.multi.propagation import composite_person, segment_persons
from pose.multi.sam import PersonSegmenter, load_sam


@dataclass
class MaskModels:
    """What `segment_persons` needs; built once per worker. Without `matting` persons are tracked by SAM alone."""

    segmenter: PersonSegmenter
    matting: MatAnyone | None = None

    @classmethod
    def from_files(cls, sam_path: Path, device: torch.device, matanyone_path: Path | None = None) -> MaskModels:
        matting = load_matanyone(matanyone_path, device) if matanyone_path is not None else None
        return cls(PersonSegmenter(load_sam(sam_path, device)), matting)

    def composite_persons(self, frames: np.ndarray, boxes: np.ndarray, points: list[np.ndarray]) -> np.ndarray:
        """frames (T, H, W, 3) uint8 RGB, frame-0 boxes (N, 4) xyxy and positive points per person
        -> (N, T, H, W, 3) uint8: each person over the flat colour."""
        alpha = segment_persons(frames, boxes, points, self.segmenter, matting=self.matting)
        return np.stack([composite_person(frames, a) for a in alpha])


def load_multi(root: Path, device: torch.device) -> MaskModels:
    """SAM and MatAnyone from the model root (`mask/`); VolumeFileError names a file that does not load."""
    root = Path(root)
    return MaskModels.from_files(root / SAM_FILE, device, root / MATANYONE_FILE)


__all__ = ["MaskModels", "PersonSegmenter", "composite_person", "load_multi", "load_sam", "segment_persons"]
