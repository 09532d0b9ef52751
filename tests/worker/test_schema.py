"""The job contract: strict validation, bounds, and messages that name the field."""

from __future__ import annotations

import pytest

from common.errors import InputError
from worker.schema import ActionInput, JobInput, parse_input

BASE = {"reference_image": "demo/reference.png", "pose_video": "demo/driving.mp4"}

BAD_FIELDS = [
    ({"width": 500}, "width: must be a multiple of 32"),
    ({"width": 224}, "width: Input should be greater than or equal to 256"),
    ({"height": 1312}, "height: Input should be less than or equal to 1280"),
    ({"num_frames": 80}, "num_frames: must be 4n+1"),
    ({"num_frames": 1}, "num_frames: Input should be greater than or equal to 5"),
    ({"num_frames": 85}, "num_frames: Input should be less than or equal to 81"),
    ({"steps": 0}, "steps: Input should be greater than or equal to 1"),
    ({"steps": 101}, "steps: Input should be less than or equal to 100"),
    ({"steps": "30"}, "steps: Input should be a valid integer"),
    ({"guidance_scale": 21.0}, "guidance_scale: Input should be less than or equal to 20"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"seed": 2**32}, "seed: Input should be less than or equal to 4294967295"),
    ({"seed": True}, "seed: Input should be a valid integer"),
    ({"num_persons": 6}, "num_persons: Input should be less than or equal to 5"),
    ({"fps": 0.5}, "fps: Input should be greater than or equal to 1"),
    ({"fps": "24"}, "fps: Input should be a valid number"),
    ({"sampler": "ddim"}, "sampler: Input should be 'unipc' or 'euler'"),
    ({"preset": "fast"}, "preset: Input should be 'wan2gp' or 'upstream'"),
    ({"prompt": 5}, "prompt: Input should be a valid string"),
    ({"prompt": "x" * 4001}, "prompt: String should have at most 4000 characters"),
    ({"return_base64": 1}, "return_base64: Input should be a valid boolean"),
    ({"reference_image": ""}, "reference_image: String should have at least 1 character"),
    ({"strength": 0.5}, "strength: unknown field"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_FIELDS, ids=[next(iter(e)) + "=" + repr(e[next(iter(e))])[:12] for e, _ in BAD_FIELDS])
def test_bad_field_is_refused_with_a_message_naming_it(extra, message):
    with pytest.raises(InputError, match="invalid job input") as info:
        parse_input({**BASE, **extra})
    assert message in str(info.value)


def test_missing_required_fields_are_each_named():
    with pytest.raises(InputError) as info:
        parse_input({})
    assert "reference_image: required field is missing" in str(info.value)
    assert "pose_video: required field is missing" in str(info.value)


def test_every_problem_of_one_job_is_reported_at_once():
    with pytest.raises(InputError) as info:
        parse_input({**BASE, "width": 300, "steps": 0})
    assert "width:" in str(info.value) and "steps:" in str(info.value)


def test_input_that_is_not_an_object_is_refused():
    with pytest.raises(InputError, match="must be a JSON object, got list"):
        parse_input([BASE])


def test_defaults_of_a_minimal_job():
    job = parse_input(BASE)
    assert isinstance(job, JobInput)
    assert (job.preset, job.num_persons, job.align_to_reference, job.return_base64) == ("wan2gp", 1, True, False)
    assert job.width is job.height is job.num_frames is job.seed is None


def test_integer_is_accepted_where_a_number_is_expected():
    assert parse_input({**BASE, "fps": 24, "guidance_scale": 5}).fps == 24


def test_status_action_is_its_own_request():
    assert parse_input({"action": "status"}) == ActionInput(action="status")


def test_unknown_action_is_refused():
    with pytest.raises(InputError, match="action: Input should be 'status'"):
        parse_input({"action": "reboot"})
