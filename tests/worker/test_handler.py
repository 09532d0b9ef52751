"""The async handler and the Engine's serving logic, on stand-in models: results, defaults, the table of
bad jobs (each with its clear error, the worker staying healthy), cancellation mid-generation, status."""

from __future__ import annotations

import asyncio
import base64
import shutil
import tempfile
import time

import numpy as np
import pytest
import torch

from tests.worker.mp4 import inspect_mp4
from tests.worker.standins import StandInPipeline, StandInPoseMaker
from worker.engine import Engine
from worker.handler import JobHandler
from worker.media import VideoReader

GOOD = {
    "reference_image": "demo/reference.png",
    "pose_video": "demo/driving.mp4",
    "prompt": "a dancer",
    "width": 256,
    "height": 256,
    "num_frames": 9,
    "steps": 3,
    "seed": 5,
}


@pytest.fixture
def served(make_settings, demo_media, tmp_path, monkeypatch):
    """(handler, engine, pose maker, pipeline, progress payloads) over a model root holding the demo inputs."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    settings = make_settings(progress_interval_s=0.0)
    (settings.model_root / "demo").mkdir()
    shutil.copy(demo_media.reference, settings.model_root / "demo" / "reference.png")
    shutil.copy(demo_media.driving_video, settings.model_root / "demo" / "driving.mp4")
    pose, pipeline = StandInPoseMaker(), StandInPipeline()
    engine = Engine(settings, pose, pipeline, device=torch.device("cpu"), multi_person=False)
    payloads = []
    handler = JobHandler(settings, engine, sink_for=lambda job: payloads.append)
    return handler, engine, pose, pipeline, payloads


def run(handler, job_input, job_id="job-1"):
    return asyncio.run(handler({"id": job_id, "input": job_input}))


def test_job_answers_a_playable_video_and_the_resolved_settings(served):
    handler, *_ = served
    result = run(handler, GOOD)
    info = inspect_mp4(result["video_path"])
    assert (info.codec, info.pix_fmt, info.width, info.height, info.num_frames, info.fps) == ("h264", "yuv420p", 256, 256, 9, 16.0)
    assert {key: result[key] for key in ("seed", "width", "height", "num_frames", "fps", "steps")} == {
        "seed": 5, "width": 256, "height": 256, "num_frames": 9, "fps": 16.0, "steps": 3,
    }  # fmt: skip
    assert (result["preset"], result["sampler"], result["guidance_scale"], result["shift"]) == ("wan2gp", "unipc", 5.0, 7.0)
    assert set(result["timings"]) == {"fetch", "decode", "pose", "generate", "encode", "store"}


def test_video_is_the_generators_output(served):
    handler, _, _, pipeline, _ = served
    result = run(handler, GOOD)
    call = pipeline.calls[-1]
    expected = ((call["reference"][None].astype(np.uint16) + call["pose_frames"]) // 2).astype(np.uint8)
    decoded = VideoReader.open(result["video_path"], "video", 10**8).read(100)
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 6


def test_defaults_follow_the_reference_and_the_driving_video(served):
    handler, _, _, pipeline, _ = served
    result = run(handler, {"reference_image": "demo/reference.png", "pose_video": "demo/driving.mp4", "steps": 1})
    assert (result["width"], result["height"]) == (672, 672)  # square reference in the 896x512 area budget
    assert (result["num_frames"], result["fps"]) == (45, 16.0)  # 48 frames at 16 fps -> largest 4n+1
    assert pipeline.calls[-1]["pose_frames"].shape == (45, 672, 672, 3)
    assert 0 <= result["seed"] < 2**32


def test_lower_fps_resamples_the_driving_video(served):
    handler, _, _, pipeline, _ = served
    result = run(handler, {**GOOD, "fps": 8, "num_frames": 21})
    assert (result["fps"], result["num_frames"]) == (8.0, 21)
    assert inspect_mp4(result["video_path"]).fps == 8.0


def test_negative_prompt_comes_from_the_preset(served):
    handler, _, _, pipeline, _ = served
    run(handler, {**GOOD, "preset": "upstream"})
    assert pipeline.calls[-1]["negative_prompt"] == "" and pipeline.calls[-1]["sampler"] == "euler"
    run(handler, GOOD)
    assert pipeline.calls[-1]["negative_prompt"].startswith("色调艳丽")


def test_rendered_pose_video_skips_pose_extraction(served):
    handler, _, pose, pipeline, _ = served
    result = run(handler, {**GOOD, "pose_video_is_rendered": True})
    assert pose.calls == []
    assert "pose" not in result["timings"]
    driving = VideoReader.open(handler.settings.model_root / "demo" / "driving.mp4", "v", 10**8).read(9)
    assert np.array_equal(pipeline.calls[-1]["pose_frames"], driving)  # 256x256 already fits the canvas


def test_pose_video_is_returned_when_asked(served):
    handler, *_ = served
    result = run(handler, {**GOOD, "return_pose_video": True})
    assert inspect_mp4(result["pose_video_path"]).num_frames == 9


def test_small_video_is_answered_as_base64_when_asked(served):
    handler, *_ = served
    result = run(handler, {**GOOD, "return_base64": True})
    assert base64.b64decode(result["video_base64"])[4:8] == b"ftyp"
    assert "video_path" not in result


def test_progress_reports_every_stage_and_the_steps(served):
    handler, _, _, _, payloads = served
    run(handler, GOOD)
    assert [p["stage"] for p in payloads if "step" not in p] == ["fetch", "decode", "pose", "generate", "encode", "store"]
    assert [p["step"] for p in payloads if "step" in p] == [1, 2, 3]


def test_temporary_files_are_removed_after_a_job(served, tmp_path):
    handler, *_ = served
    run(handler, GOOD)
    run(handler, {**GOOD, "pose_video": "demo/reference.png"})
    assert list((tmp_path / "tmp").iterdir()) == []


# --- bad jobs: each answers a clear error; the next good job still works ----------------------------

BAD_JOBS = [
    ({**GOOD, "width": 500}, "width: must be a multiple of 32"),
    ({**GOOD, "steps": "many"}, "steps: Input should be a valid integer"),
    ({**GOOD, "colour": "red"}, "colour: unknown field"),
    ({**GOOD, "reference_image": "demo/missing.png"}, "reference_image: file 'demo/missing.png' not found in the model root"),
    ({**GOOD, "reference_image": "../../etc/passwd"}, "reference_image: path '../../etc/passwd' is outside the model root"),
    ({**GOOD, "pose_video": "demo/reference.png"}, "pose_video: expected a video, got png"),
    ({**GOOD, "reference_image": "demo/driving.mp4"}, "reference_image: expected an image, got mp4"),
    ({**GOOD, "reference_image": "http://127.0.0.1:1/x.png"}, "reference_image: host '127.0.0.1' resolves to 127.0.0.1"),
    ({**GOOD, "reference_image": "not an input at all!"}, "reference_image: not an http(s) URL, a data URI, base64"),
    ({**GOOD, "num_frames": 81}, "pose_video has 48 frames at the job's fps, num_frames=81 needs 81"),
    ({**GOOD, "num_persons": 2}, "num_persons > 1 needs the SAM and MatAnyone files"),
]


@pytest.mark.parametrize(("job_input", "message"), BAD_JOBS, ids=[m.split(":")[0][:30] + str(i) for i, (_, m) in enumerate(BAD_JOBS)])
def test_bad_job_gets_a_clear_error(served, job_input, message):
    handler, *_ = served
    answer = run(handler, job_input)
    assert set(answer) == {"error"}
    assert message in answer["error"]
    assert "Traceback" not in answer["error"]


def test_worker_stays_healthy_after_every_bad_job(served):
    handler, *_ = served
    for i, (job_input, _) in enumerate(BAD_JOBS):
        assert "error" in run(handler, job_input, job_id=f"bad-{i}")
    assert run(handler, GOOD, job_id="good")["num_frames"] == 9


def test_cuda_oom_answers_an_error_refreshes_the_worker_and_frees_memory(served):
    handler, _, _, pipeline, _ = served
    pipeline.fail_with = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    answer = run(handler, GOOD)
    assert answer["refresh_worker"] is True and "CUDA out of memory" in answer["error"]
    assert pipeline.released == 1


def test_unexpected_failure_is_named_without_a_traceback(served):
    handler, _, _, pipeline, _ = served
    pipeline.fail_with = ZeroDivisionError("division by zero")
    assert run(handler, GOOD) == {"error": "internal error: ZeroDivisionError: division by zero"}
    assert run(handler, GOOD, job_id="next")["num_frames"] == 9


def test_job_input_that_is_not_an_object_is_refused(served):
    handler, *_ = served
    assert run(handler, "reference.png") == {"error": "job input must be a JSON object, got str"}


# --- cancellation ------------------------------------------------------------------------------------


def test_cancelled_job_stops_within_one_step_frees_memory_and_the_next_job_runs(served, tmp_path):
    handler, _, _, pipeline, payloads = served
    pipeline.step_s = 0.05

    async def cancel_mid_generation():
        task = asyncio.create_task(handler({"id": "long", "input": {**GOOD, "steps": 100}}))
        while pipeline.steps_done < 3:
            await asyncio.sleep(0.01)
        steps_at_cancel = pipeline.steps_done
        cancelled_at = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return steps_at_cancel, time.monotonic() - cancelled_at

    steps_at_cancel, stop_s = asyncio.run(cancel_mid_generation())
    assert pipeline.steps_done <= steps_at_cancel + 1
    assert stop_s < 1.0
    assert pipeline.released == 1
    assert list((tmp_path / "tmp").iterdir()) == []
    pipeline.step_s = 0.0
    assert run(handler, GOOD, job_id="after")["num_frames"] == 9


# --- status and startup failure ----------------------------------------------------------------------


def test_status_job_answers_without_generating(served):
    handler, _, _, pipeline, _ = served
    report = run(handler, {"action": "status"})
    assert report["status"] == "ready"
    assert report["engine"]["loaded"] is True and report["engine"]["warm"] is False
    assert report["engine"]["gemm"] == "bf16"
    assert report["versions"]["runpod"] and report["host"]["ram_total_gib"] > 0
    assert any(entry["file"].endswith(".safetensors") and entry["problem"] == "missing" for entry in report["volume"]["files"])
    assert pipeline.calls == []


def test_engine_is_warm_after_a_job(served):
    handler, *_ = served
    run(handler, GOOD)
    assert run(handler, {"action": "status"})["engine"]["warm"] is True


def test_worker_without_engine_answers_the_startup_error_but_still_reports_status(make_settings):
    handler = JobHandler(make_settings(), None, startup_error="VolumeFileError: model file x: missing")
    assert run(handler, GOOD) == {"error": "the worker is not ready: VolumeFileError: model file x: missing"}
    report = run(handler, {"action": "status"})
    assert report["status"] == "not ready" and report["startup_error"].endswith("missing")
