"""Frame preparation for the pose path: cover + centre crop, fps resampling, the frame-count policy."""

from __future__ import annotations

import math

import cv2
import numpy as np

from common.errors import InputError

MIN_SIDE = 16
MAX_SIDE = 4096
MIN_FRAMES = 5
MAX_FRAMES = 81


def check_canvas_size(width: int, height: int) -> None:
    """InputError unless both sides lie in [MIN_SIDE, MAX_SIDE]."""
    for name, side in (("width", width), ("height", height)):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise InputError(f"{name} {side} is out of range ({MIN_SIDE}..{MAX_SIDE} pixels)")


def check_image_array(array: np.ndarray, what: str) -> None:
    """InputError unless `array` is uint8 RGB (H,W,3) or (T,H,W,3) with sides in [MIN_SIDE, MAX_SIDE]."""
    if array.dtype != np.uint8 or array.ndim not in (3, 4) or array.shape[-1] != 3:
        raise InputError(f"{what}: expected uint8 RGB (H,W,3) or (T,H,W,3), got {array.dtype} {array.shape}")
    height, width = array.shape[-3:-1]
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise InputError(f"{what}: size {width}x{height} is out of range ({MIN_SIDE}..{MAX_SIDE} pixels a side)")


def fit_to_canvas(image_or_frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale to cover (width, height) and crop the centre: (H,W,3) or (T,H,W,3) uint8 -> same rank at the canvas.

    A single image (the reference) uses Lanczos; video frames use area (shrink) or linear (enlarge) for speed.
    """
    check_canvas_size(width, height)
    check_image_array(image_or_frames, "image")
    single = image_or_frames.ndim == 3
    frames = image_or_frames[None] if single else image_or_frames
    src_h, src_w = frames.shape[1:3]
    scale = max(width / src_w, height / src_h)
    new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    if single:
        interpolation = cv2.INTER_LANCZOS4
    else:
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    left, top = (new_w - width) // 2, (new_h - height) // 2
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i, frame in enumerate(frames):
        resized = frame if (new_w, new_h) == (src_w, src_h) else cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
        out[i] = resized[top : top + height, left : left + width]
    return out[0] if single else out


def resample_frames(frames: np.ndarray, src_fps: float, dst_fps: float) -> np.ndarray:
    """(T,H,W,3) at src_fps -> (T',H,W,3) at dst_fps by nearest-time sampling over the same duration."""
    for name, fps in (("source fps", src_fps), ("target fps", dst_fps)):
        if not (math.isfinite(fps) and 0 < fps <= 240):
            raise InputError(f"{name} {fps} is out of range (0..240]")
    if len(frames) == 0:
        raise InputError("pose_video: the video has no frames")
    if src_fps == dst_fps:
        return frames
    count = max(1, math.floor(len(frames) * dst_fps / src_fps + 1e-6))
    indices = np.minimum(np.floor(np.arange(count) * src_fps / dst_fps + 0.5).astype(np.int64), len(frames) - 1)
    return frames[indices]


def choose_num_frames(available: int, requested: int | None) -> int:
    """The job's frame count: `requested` (validated, 4n+1 in 5..81) or min(81, largest 4n+1 <= available).

    InputError when the driving video has fewer frames than that.
    """
    if requested is not None:
        if not (MIN_FRAMES <= requested <= MAX_FRAMES and requested % 4 == 1):
            raise InputError(f"num_frames {requested} must be 4n+1 between {MIN_FRAMES} and {MAX_FRAMES}")
        if available < requested:
            raise InputError(
                f"pose_video has {available} frames at the job's fps, num_frames={requested} needs {requested}"
            )
        return requested
    if available < MIN_FRAMES:
        raise InputError(f"pose_video has {available} frames at the job's fps; at least {MIN_FRAMES} are needed")
    return min(MAX_FRAMES, (available - 1) // 4 * 4 + 1)
