"""Resolve a validated job into the exact settings of one generation (the defaults the contract promises).

Defaults depend on the inputs: the canvas follows the reference image's aspect, the frame count and
fps follow the driving video, the sampler settings follow the preset. Everything resolved here is
reported back in the result so a job can be reproduced.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from pose.frames import choose_num_frames
from worker.schema import SEED_MAX, SIZE_MAX, SIZE_MIN, SIZE_MULTIPLE, JobInput

AREA_BUDGET = 896 * 512
DEFAULT_FPS = 16.0

# Wan2.1's default negative prompt (its `sample_neg_prompt`), used by the wan2gp preset when none is given.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class Preset:
    """A sampling recipe: what `steps`, `guidance_scale`, `shift`, `sampler`, `negative_prompt` default to."""

    sampler: str
    steps: int
    shift: float
    guidance_scale: float
    negative_prompt: str


PRESETS = {
    # Wan2GP's SCAIL defaults: fewer steps with UniPC and a stronger shift.
    "wan2gp": Preset(sampler="unipc", steps=30, shift=7.0, guidance_scale=5.0, negative_prompt=WAN_NEGATIVE_PROMPT),
    # The upstream SCAIL-Preview inference script.
    "upstream": Preset(sampler="euler", steps=50, shift=5.0, guidance_scale=4.0, negative_prompt=""),
}


@dataclass(frozen=True)
class Plan:
    """The fully resolved settings of one job."""

    width: int
    height: int
    num_frames: int
    fps: float
    seed: int
    preset: str
    sampler: str
    steps: int
    shift: float
    guidance_scale: float
    negative_prompt: str

    def as_dict(self) -> dict:
        return asdict(self)


def default_size(ref_width: int, ref_height: int, width: int | None = None, height: int | None = None) -> tuple[int, int]:
    """(width, height): the given ones, the missing one(s) from the reference aspect within the area budget."""
    aspect = ref_width / ref_height
    if width is None and height is None:
        width = _snap(math.sqrt(AREA_BUDGET * aspect))
        height = _snap(math.sqrt(AREA_BUDGET / aspect))
    elif width is None:
        width = _snap(height * aspect)
    elif height is None:
        height = _snap(width / aspect)
    return width, height


def available_frames(source_frames: int, source_fps: float, fps: float) -> int:
    """How many frames at `fps` the driving video's duration covers (first and last frame included)."""
    if source_frames <= 0:
        return 0
    return int(math.floor((source_frames - 1) * fps / source_fps + 1e-6)) + 1


def source_frames_needed(num_frames: int, source_fps: float, fps: float) -> int:
    """How many leading source frames cover `num_frames` at `fps` (so decoding can stop early)."""
    return int(math.ceil((num_frames - 1) * source_fps / fps - 1e-6)) + 1


def resolve(
    job: JobInput, *, ref_size: tuple[int, int], source_frames: int, source_fps: float | None
) -> Plan:
    """The plan of `job` given the reference (width, height) and the driving video's frame count and fps."""
    preset = PRESETS[job.preset]
    width, height = default_size(*ref_size, job.width, job.height)
    fps = job.fps or source_fps or DEFAULT_FPS
    num_frames = choose_num_frames(available_frames(source_frames, source_fps or fps, fps), job.num_frames)
    return Plan(
        width=width,
        height=height,
        num_frames=num_frames,
        fps=float(fps),
        seed=random.randint(0, SEED_MAX) if job.seed is None else job.seed,
        preset=job.preset,
        sampler=job.sampler or preset.sampler,
        steps=job.steps or preset.steps,
        shift=job.shift or preset.shift,
        guidance_scale=preset.guidance_scale if job.guidance_scale is None else job.guidance_scale,
        negative_prompt=preset.negative_prompt if job.negative_prompt is None else job.negative_prompt,
    )


def _snap(value: float) -> int:
    """Nearest multiple of 32 within the size bounds."""
    snapped = int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE
    return max(SIZE_MIN, min(SIZE_MAX, snapped))
