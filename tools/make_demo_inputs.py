"""Synthesise the demo's inputs without downloading anything.

    python tools/make_demo_inputs.py --out build/volume/demo

Writes `reference.png` (a drawn character on a background) and `driving.mp4` (a figure walking in place
and waving, H.264 yuv420p). Both are drawn from the same skeleton so the pose models have a person-shaped
subject; the output is deterministic, so `make demo` can rebuild it without changing anything.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.media import encode_mp4  # noqa: E402

log = logging.getLogger("make_demo_inputs")

REFERENCE_NAME = "reference.png"
DRIVING_NAME = "driving.mp4"

# Bones of the drawn figure as (from, to, thickness relative to the figure height, upper body or not).
_BONES = (
    ("neck", "pelvis", 0.11, True),
    ("neck", "l_elbow", 0.045, True),
    ("l_elbow", "l_wrist", 0.04, True),
    ("neck", "r_elbow", 0.045, True),
    ("r_elbow", "r_wrist", 0.04, True),
    ("pelvis", "l_knee", 0.06, False),
    ("l_knee", "l_ankle", 0.05, False),
    ("pelvis", "r_knee", 0.06, False),
    ("r_knee", "r_ankle", 0.05, False),
)
_SKIN = (232, 190, 160)


@dataclass(frozen=True)
class DemoInputs:
    """Where the demo's reference image and driving video were written."""

    reference: Path
    driving_video: Path
    num_frames: int
    fps: float


def skeleton(phase: float, height: int, width: int) -> dict[str, tuple[int, int]]:
    """Joint pixel positions of a standing figure; `phase` in radians swings the arms and legs."""
    figure_h = 0.8 * height
    cx, top = width / 2, 0.1 * height
    swing = math.sin(phase)
    wave = 0.5 + 0.5 * math.sin(2 * phase)

    def at(dx: float, dy: float) -> tuple[int, int]:
        return round(cx + dx * figure_h), round(top + dy * figure_h)

    return {
        "head": at(0.0, 0.08),
        "neck": at(0.0, 0.2),
        "pelvis": at(0.0, 0.55),
        # The left arm swings with the walk, the right arm waves overhead.
        "l_elbow": at(-0.12 - 0.04 * swing, 0.36),
        "l_wrist": at(-0.16 - 0.1 * swing, 0.5),
        "r_elbow": at(0.15, 0.3 - 0.12 * wave),
        "r_wrist": at(0.2 + 0.06 * wave, 0.42 - 0.4 * wave),
        "l_knee": at(-0.06 + 0.08 * swing, 0.76),
        "l_ankle": at(-0.07 + 0.14 * swing, 0.98),
        "r_knee": at(0.06 - 0.08 * swing, 0.76),
        "r_ankle": at(0.07 - 0.14 * swing, 0.98),
    }


def background(height: int, width: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    """A vertical colour gradient (H, W, 3) uint8 RGB."""
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    rows = (1 - t) * np.array(top, np.float32) + t * np.array(bottom, np.float32)
    return np.broadcast_to(rows, (height, width, 3)).round().astype(np.uint8)


def draw_figure(
    canvas: np.ndarray, joints: dict[str, tuple[int, int]], top: tuple[int, int, int], bottom: tuple[int, int, int]
) -> None:
    """Draw limbs as thick rounded lines, hands and head as discs, in place on an RGB canvas."""
    figure_h = 0.8 * canvas.shape[0]
    for start, end, thickness, upper in _BONES:
        width = max(1, round(thickness * figure_h))
        cv2.line(canvas, joints[start], joints[end], top if upper else bottom, width, cv2.LINE_AA)
    for hand in ("l_wrist", "r_wrist"):
        cv2.circle(canvas, joints[hand], round(0.03 * figure_h), _SKIN, -1, cv2.LINE_AA)
    cv2.circle(canvas, joints["head"], round(0.08 * figure_h), _SKIN, -1, cv2.LINE_AA)


def reference_image(height: int, width: int) -> np.ndarray:
    """The character to animate: a figure in a red top and blue trousers on sky and grass, (H, W, 3) uint8."""
    canvas = background(height, width, top=(150, 200, 240), bottom=(90, 150, 80)).copy()
    draw_figure(canvas, skeleton(0.0, height, width), top=(200, 40, 50), bottom=(40, 60, 140))
    return canvas


def driving_frames(height: int, width: int, num_frames: int, fps: float) -> np.ndarray:
    """A figure in grey on a dark background walking in place at one stride per second, (T, H, W, 3) uint8."""
    base = background(height, width, top=(40, 40, 48), bottom=(70, 70, 80))
    grey = (180, 180, 190)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frames[i] = base
        draw_figure(frames[i], skeleton(2 * math.pi * i / fps, height, width), top=grey, bottom=grey)
    return frames


def write_demo_inputs(
    out: Path, *, width: int = 256, height: int = 256, seconds: float = 3.0, fps: float = 16.0
) -> DemoInputs:
    """Write the reference image and the driving video under `out` (created if needed)."""
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reference = out / REFERENCE_NAME
    cv2.imwrite(str(reference), cv2.cvtColor(reference_image(height, width), cv2.COLOR_RGB2BGR))
    num_frames = round(seconds * fps)
    video = out / DRIVING_NAME
    encode_mp4(driving_frames(height, width, num_frames, fps), fps, video)
    return DemoInputs(reference=reference, driving_video=video, num_frames=num_frames, fps=fps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the two files into")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fps", type=float, default=16.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    inputs = write_demo_inputs(args.out, width=args.width, height=args.height, seconds=args.seconds, fps=args.fps)
    log.info("wrote %s and %s (%d frames at %g fps)", inputs.reference, inputs.driving_video, inputs.num_frames, inputs.fps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
