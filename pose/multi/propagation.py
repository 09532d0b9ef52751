"""Person masks through a video for multi-person SCAIL, and the flat-colour composite fed to NLF.

SAM segments each person on frame 0 (box + positive points); MatAnyone (`matting`) propagates those masks
through the clip as soft alphas, as upstream SCAIL does. Without a MatAnyone model (`matting=None`, e.g. tests
with a stand-in segmenter) each person is tracked instead by re-prompting SAM on every frame with the box of
its previous mask, grown by a margin, and a click at the mask's interior point: hard masks, a fallback only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from common.errors import InputError
from pose.multi.matanyone import MatAnyone, propagate_masks
from pose.multi.sam import PersonSegmenter

BACKGROUND_RGB = (120, 255, 155)
# Growth of the tracked box per side, as a fraction of its width / height, to catch motion between frames.
TRACK_MARGIN = 0.2


def _mask_box(mask: np.ndarray) -> np.ndarray | None:
    """xyxy box of a (H, W) bool mask, None when empty."""
    rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
    if not rows.any():
        return None
    y0, y1 = np.flatnonzero(rows)[[0, -1]]
    x0, x1 = np.flatnonzero(cols)[[0, -1]]
    return np.array([x0, y0, x1, y1], np.float64)


def _interior_point(mask: np.ndarray) -> np.ndarray:
    """(1, 2) xy of the mask pixel farthest from its border (robust where the centroid falls outside)."""
    distance = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(np.argmax(distance), mask.shape)
    return np.array([[x, y]], np.float32)


def _grow(box: np.ndarray, height: int, width: int) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    grown = box + np.array([-w, -h, w, h]) * TRACK_MARGIN
    return np.clip(grown, 0, [width - 1, height - 1, width - 1, height - 1])


def segment_persons(frames: np.ndarray, first_frame_boxes: np.ndarray, first_frame_points: list[np.ndarray],
                    segmenter: PersonSegmenter, matting: MatAnyone | None = None) -> np.ndarray:
    """frames (T, H, W, 3) uint8 RGB; per person a frame-0 box (N, 4) xyxy and positive points (K_i, 2)
    -> alpha (N, T, H, W) float32 in [0, 1]: SAM on frame 0, propagated by `matting` (MatAnyone), or by SAM
    tracking when it is None (a person whose mask vanishes keeps its last box as prompt)."""
    boxes = np.asarray(first_frame_boxes, np.float64).reshape(-1, 4)
    if len(first_frame_points) != len(boxes):
        raise InputError(f"segment_persons: {len(boxes)} boxes but {len(first_frame_points)} point sets")
    prompts = [(box, np.asarray(points, np.float32).reshape(-1, 2)) for box, points in zip(boxes, first_frame_points,
                                                                                              strict=True)]
    if matting is not None:
        segmenter.set_image(frames[0])
        first_masks = np.stack([segmenter.segment(box, points) for box, points in prompts])
        return propagate_masks(matting, frames, first_masks)
    return _track_with_sam(frames, prompts, segmenter)


def _track_with_sam(frames: np.ndarray, prompts: list[tuple[np.ndarray, np.ndarray]],
                    segmenter: PersonSegmenter) -> np.ndarray:  # fmt: skip
    """The fallback without MatAnyone: SAM re-prompted on every frame from the previous mask."""
    n_frames, height, width = frames.shape[:3]
    alpha = np.zeros((len(prompts), n_frames, height, width), np.float32)
    for t in range(n_frames):
        segmenter.set_image(frames[t])
        for person, (box, points) in enumerate(prompts):
            mask = segmenter.segment(box, points)
            alpha[person, t] = mask
            tracked = _mask_box(mask)
            if tracked is not None:
                prompts[person] = (_grow(tracked, height, width), _interior_point(mask))
    return alpha


def composite_person(frames: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """frames (T, H, W, 3) uint8 and one person's alpha (T, H, W) in [0, 1] -> the person over the flat
    colour (120, 255, 155), uint8."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    background = np.asarray(BACKGROUND_RGB, np.float32)
    return np.rint(frames.astype(np.float32) * a + background * (1.0 - a)).astype(np.uint8)
