"""NLF: 3D SMPL joints (mm, camera frame) for person boxes; `load_nlf(weights, meta, device)`."""

from pose.nlf.loading import load_nlf
from pose.nlf.model import NLFModel

__all__ = ["NLFModel", "load_nlf"]
