"""MatAnyone v1: first-frame person masks propagated through a clip as soft alphas.

`load_matanyone(path, device)` reads `mask/model.safetensors`; `propagate_masks(model, frames, masks)` runs the
upstream inference schedule.
"""

from pose.multi.matanyone.config import MatAnyoneConfig
from pose.multi.matanyone.inference import propagate_masks
from pose.multi.matanyone.loader import load_matanyone
from pose.multi.matanyone.model import MatAnyone

__all__ = ["MatAnyone", "MatAnyoneConfig", "load_matanyone", "propagate_masks"]
