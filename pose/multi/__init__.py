"""Multi-person masks: SAM on the first frame, propagated through the video; flat-colour composites."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pose.multi.propagation import composite_person, segment_persons
from pose.multi.sam import PersonSegmenter, load_sam


@dataclass
class MaskModels:
    """What `segment_persons` needs; built once per worker."""

    segmenter: PersonSegmenter

    @classmethod
    def from_files(cls, sam_path: Path, device: torch.device) -> MaskModels:
        return cls(PersonSegmenter(load_sam(sam_path, device)))


__all__ = ["MaskModels", "PersonSegmenter", "composite_person", "load_sam", "segment_persons"]
