"""Defaults resolved against the inputs: canvas from the reference aspect, frames and fps from the video, presets."""

from __future__ import annotations

import math

import pytest

from common.errors import InputError
from worker.plan import AREA_BUDGET, default_size, job_fps, resolve, source_frames_needed
from worker.schema import parse_input

BASE = {"reference_image": "r.png", "pose_video": "v.mp4"}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [((1920, 1080), (896, 512)), ((1080, 1920), (512, 896)), ((1000, 1000), (672, 672)), ((8000, 100), (1280, 256))],
)
def test_default_size_keeps_the_reference_aspect_within_the_area_budget(ref, expected):
    width, height = default_size(*ref)
    assert (width, height) == expected
    assert width % 32 == 0 and height % 32 == 0


def test_default_size_never_exceeds_the_area_budget():
    over = [(w, default_size(w, 1000)) for w in range(100, 10_000, 7) if math.prod(default_size(w, 1000)) > AREA_BUDGET]
    assert over == []


def test_one_given_side_sets_the_other_from_the_aspect():
    assert default_size(1920, 1080, width=1024) == (1024, 576)
    assert default_size(1920, 1080, height=256) == (448, 256)


def test_source_frames_needed_covers_the_clip_after_resampling():
    assert source_frames_needed(81, 30.0, 16.0) == 152
    assert source_frames_needed(81, 16.0, 16.0) == 81


def test_fps_defaults_to_the_driving_video_then_16():
    assert job_fps(parse_input(BASE), 25.0) == 25.0
    assert job_fps(parse_input(BASE), None) == 16.0
    assert job_fps(parse_input({**BASE, "fps": 12}), 25.0) == 12.0


def test_wan2gp_preset_defaults():
    plan = resolve(parse_input(BASE), size=(512, 512), available=100, fps=16.0)
    assert (plan.sampler, plan.steps, plan.shift, plan.guidance_scale) == ("unipc", 30, 7.0, 5.0)
    assert plan.negative_prompt.startswith("色调艳丽")


def test_upstream_preset_defaults():
    plan = resolve(parse_input({**BASE, "preset": "upstream"}), size=(512, 512), available=100, fps=16.0)
    assert (plan.sampler, plan.steps, plan.shift, plan.guidance_scale, plan.negative_prompt) == ("euler", 50, 5.0, 4.0, "")


def test_explicit_settings_override_the_preset():
    job = parse_input({**BASE, "steps": 8, "sampler": "euler", "guidance_scale": 0.0, "shift": 3.0, "negative_prompt": "blur"})
    plan = resolve(job, size=(512, 512), available=100, fps=16.0)
    assert (plan.steps, plan.sampler, plan.guidance_scale, plan.shift, plan.negative_prompt) == (8, "euler", 0.0, 3.0, "blur")


def test_num_frames_defaults_to_the_largest_4n_plus_1_available_up_to_81():
    assert resolve(parse_input(BASE), size=(256, 256), available=47, fps=16.0).num_frames == 45
    assert resolve(parse_input(BASE), size=(256, 256), available=500, fps=16.0).num_frames == 81


def test_requested_num_frames_longer_than_the_video_is_refused():
    with pytest.raises(InputError, match="num_frames"):
        resolve(parse_input({**BASE, "num_frames": 81}), size=(256, 256), available=40, fps=16.0)


def test_seed_is_drawn_when_missing_and_kept_when_given():
    seeds = {resolve(parse_input(BASE), size=(256, 256), available=9, fps=16.0).seed for _ in range(5)}
    assert len(seeds) > 1 and all(0 <= seed < 2**32 for seed in seeds)
    assert resolve(parse_input({**BASE, "seed": 7}), size=(256, 256), available=9, fps=16.0).seed == 7


def test_a_driving_video_fps_outside_the_contract_is_clamped_into_it():
    assert job_fps(parse_input(BASE), 120.0) == 60.0
    assert job_fps(parse_input(BASE), 0.5) == 1.0
