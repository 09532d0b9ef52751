"""Synthetic skeletons shared by the pose tests."""

from __future__ import annotations

import numpy as np


def standing_smpl(depth: float = 4000.0) -> np.ndarray:
    """(24,3) mm SMPL joints of a standing person in camera axes (y down), about `depth` mm away."""
    joints = np.zeros((24, 3), np.float32)
    named = {
        0: (0, 100), 1: (90, 180), 2: (-90, 180), 3: (0, -50), 4: (100, 600), 5: (-100, 600), 6: (0, -200),
        7: (100, 1000), 8: (-100, 1000), 9: (0, -300), 10: (120, 1060), 11: (-120, 1060), 12: (0, -500),
        13: (80, -420), 14: (-80, -420), 15: (0, -650), 16: (180, -450), 17: (-180, -450), 18: (250, -180),
        19: (-250, -180), 20: (280, 80), 21: (-280, 80), 22: (290, 150), 23: (-290, 150),
    }  # fmt: skip
    for index, (x, y) in named.items():
        joints[index] = (x, y, depth + 0.1 * x)  # a slight turn gives the joints different depths
    return joints
