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
from wan2gp_integration.presets import get_preset
from worker.schema import MAX_FPS, MIN_FPS, SEED_MAX, SIZE_MAX, SIZE_MIN, SIZE_MULTIPLE, JobInput

AREA_BUDGET = 896 * 512
DEFAULT_FPS = 16.0


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
        return _budget_size(aspect)
    if width is None:
        width = _snap(height * aspect)
    elif height is None:
        height = _snap(width / aspect)
    return width, height


def _budget_size(aspect: float) -> tuple[int, int]:
    """The multiples of 32 nearest `aspect` whose area stays within AREA_BUDGET.

    Rounding both ideal sides to the nearest multiple can overshoot the budget (by up to 4.5 %), so
    each side is taken one multiple down or up and the closest aspect within the budget wins. Both sides
    rounded down always fit: below the ideal area, or 1280x256 when the aspect clamps a side.
    """
    ideal_width, ideal_height = math.sqrt(AREA_BUDGET * aspect), math.sqrt(AREA_BUDGET / aspect)
    fitting = [
        (width, height)
        for width in _neighbours(ideal_width)
        for height in _neighbours(ideal_height)
        if width * height <= AREA_BUDGET
    ]
    return min(fitting, key=lambda size: (abs(math.log(size[0] / size[1] / aspect)), -size[0] * size[1]))


def _neighbours(value: float) -> set[int]:
    """The multiples of 32 just below and above `value`, within the size bounds."""
    low = math.floor(value / SIZE_MULTIPLE) * SIZE_MULTIPLE
    return {_clamp(low), _clamp(low + SIZE_MULTIPLE)}


def job_fps(job: JobInput, source_fps: float | None) -> float:
    """The output fps: the job's, else the driving video's (kept within the contract's 1..60), else 16."""
    if job.fps:
        return float(job.fps)
    if source_fps:
        return float(min(max(source_fps, MIN_FPS), MAX_FPS))
    return DEFAULT_FPS


def source_frames_needed(num_frames: int, source_fps: float, fps: float) -> int:
    """How many leading source frames resample to at least `num_frames` at `fps` (decoding stops there)."""
    return max(1, math.ceil(num_frames * source_fps / fps - 1e-6))


def resolve(job: JobInput, *, size: tuple[int, int], available: int, fps: float) -> Plan:
    """The plan of `job` on the canvas `size` (width, height; from `default_size`) with the driving frames
    available at `fps`."""
    preset = get_preset(job.preset)
    width, height = size
    return Plan(
        width=width,
        height=height,
        num_frames=choose_num_frames(available, job.num_frames),
        fps=fps,
        seed=random.randint(0, SEED_MAX) if job.seed is None else job.seed,
        preset=job.preset,
        sampler=job.sampler or preset.sampler,
        steps=job.steps or preset.steps,
        shift=job.shift or preset.shift,
        guidance_scale=preset.guidance_scale if job.guidance_scale is None else job.guidance_scale,
        negative_prompt=preset.negative_prompt(job.negative_prompt),
    )


def _snap(value: float) -> int:
    """Nearest multiple of 32 within the size bounds."""
    return _clamp(int(round(value / SIZE_MULTIPLE)) * SIZE_MULTIPLE)


def _clamp(size: int) -> int:
    return max(SIZE_MIN, min(SIZE_MAX, size))
