"""The real engine (pose models + SCAIL pipeline) on the tiny volume, in process and through the SDK's
entry points: `python runpod_handler.py` on test_input.json, and the local API server over HTTP with
uploads to a moto S3 server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.worker.conftest import free_port, wait_for_http
from tests.worker.mp4 import inspect_mp4
from tools.make_demo_inputs import write_demo_inputs
from worker.engine import Engine
from worker.handler import JobHandler
from worker.schema import JobInput, parse_input
from worker.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SMALL = {
    "reference_image": "demo/reference.png",
    "pose_video": "demo/driving.mp4",
    "prompt": "a dancer in a studio",
    "width": 256,
    "height": 256,
    "num_frames": 5,
    "steps": 2,
    "seed": 3,
}


@pytest.fixture(scope="module")
def volume(tiny_volume) -> Path:
    """The tiny volume with the demo inputs under demo/."""
    if not (tiny_volume / "demo" / "driving.mp4").is_file():
        write_demo_inputs(tiny_volume / "demo")
    return tiny_volume


@pytest.fixture(scope="module")
def handler(volume, tmp_path_factory) -> JobHandler:
    env = {"SCAIL_MODEL_ROOT": str(volume), "SCAIL_DEVICE": "cpu", "SCAIL_OUTPUT_DIR": str(tmp_path_factory.mktemp("out"))}
    settings = Settings.from_env(env)
    return JobHandler(settings, Engine.load(settings), sink_for=lambda job: lambda payload: None)


def worker_env(volume: Path, out: Path, **extra) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BUCKET_", "RUNPOD_", "SCAIL_"))}
    return {**env, "SCAIL_MODEL_ROOT": str(volume), "SCAIL_DEVICE": "cpu", "SCAIL_OUTPUT_DIR": str(out),
            "PYTHONPATH": str(REPO), **extra}  # fmt: skip


def test_repository_test_input_is_a_valid_job():
    job = json.loads((REPO / "test_input.json").read_text())
    assert isinstance(parse_input(job["input"]), JobInput)


def test_real_engine_generates_the_job(handler):
    result = asyncio.run(handler({"id": "e2e", "input": SMALL}))
    assert "error" not in result, result
    info = inspect_mp4(result["video_path"])
    assert (info.codec, info.pix_fmt, info.width, info.height, info.num_frames) == ("h264", "yuv420p", 256, 256, 5)
    assert info.faststart
    assert {"fetch", "decode", "pose", "generate", "encode", "store", "generate.denoise"} <= set(result["timings"])


def test_status_on_the_tiny_volume_passes_every_file(handler):
    report = asyncio.run(handler({"id": "status", "input": {"action": "status"}}))
    assert report["status"] == "ready" and report["volume"]["all_ok"], report["volume"]
    names = {entry["file"] for entry in report["volume"]["files"]}
    assert {"Wan2.1_VAE.pth", "pose/yolox_l.onnx", "mask/sam_vit_h_4b8939_fp16.safetensors"} <= names
    assert report["engine"]["multi_person"] is True


def test_real_generation_stops_within_a_step_when_cancelled_and_the_next_job_runs(handler):
    steps_seen = [0]

    def sink_for(job):
        return lambda payload: steps_seen.append(payload.get("step") or 0)

    every_step = dataclasses.replace(handler.settings, progress_interval_s=0.0)
    cancellable = JobHandler(every_step, handler.engine, sink_for=sink_for)

    async def cancel_after_two_steps() -> int:
        job = {**SMALL, "steps": 60, "pose_video_is_rendered": True}
        task = asyncio.create_task(cancellable({"id": "cancel-me", "input": job}))
        while max(steps_seen) < 2:
            await asyncio.sleep(0.01)
        step_at_cancel = max(steps_seen)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return step_at_cancel

    step_at_cancel = asyncio.run(cancel_after_two_steps())
    assert max(steps_seen) <= step_at_cancel + 1
    result = asyncio.run(handler({"id": "after-cancel", "input": {**SMALL, "pose_video_is_rendered": True}}))
    assert result["num_frames"] == 5


@pytest.mark.slow
def test_cli_runs_test_input_json_from_the_working_directory(volume, tmp_path):
    job = json.loads((REPO / "test_input.json").read_text())
    job["input"].update(num_frames=5, steps=2)  # the repository's job, shortened for the test's time
    (tmp_path / "test_input.json").write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, str(REPO / "runpod_handler.py")],
        cwd=tmp_path, env=worker_env(volume, tmp_path / "out"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    videos = list((tmp_path / "out").rglob("video.mp4"))
    assert len(videos) == 1 and inspect_mp4(videos[0]).num_frames == 5


@pytest.mark.slow
def test_cli_exits_1_with_the_error_of_a_bad_job(volume, tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "runpod_handler.py"), "--test_input", json.dumps({"input": {**SMALL, "width": 300}})],
        cwd=tmp_path, env=worker_env(volume, tmp_path / "out"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    assert "width: must be a multiple of 32" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def api_server(volume, moto_endpoint, tmp_path_factory):
    """`runpod_handler.py --rp_serve_api` on a free loopback port, uploading to a bucket on the moto server."""
    import boto3

    boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="t", aws_secret_access_key="t", region_name="us-east-1"
    ).create_bucket(Bucket="e2e-videos")
    out = tmp_path_factory.mktemp("api")
    env = worker_env(
        volume, out, BUCKET_ENDPOINT_URL=moto_endpoint, BUCKET_ACCESS_KEY_ID="t", BUCKET_SECRET_ACCESS_KEY="t",
        BUCKET_NAME="e2e-videos", BUCKET_REGION="us-east-1",
    )  # fmt: skip
    port = free_port()
    log = open(out / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, str(REPO / "runpod_handler.py"), "--rp_serve_api", "--rp_api_host", "127.0.0.1",
         "--rp_api_port", str(port)],
        cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/docs", 180, process)
        yield url
    except (RuntimeError, TimeoutError):
        log.flush()
        pytest.fail((out / "server.log").read_text()[-4000:])
    finally:
        process.terminate()
        process.wait(20)
        log.close()
        shutil.rmtree(out / "outputs", ignore_errors=True)


@pytest.mark.slow
def test_api_runsync_answers_a_video_url_serving_the_mp4(api_server, tmp_path):
    response = requests.post(api_server + "/runsync", json={"input": SMALL}, timeout=300)
    body = response.json()
    assert body["status"] == "COMPLETED", body
    video = requests.get(body["output"]["video_url"], timeout=30)
    assert video.headers["Content-Type"] == "video/mp4"
    (tmp_path / "v.mp4").write_bytes(video.content)
    assert inspect_mp4(tmp_path / "v.mp4").num_frames == 5


@pytest.mark.slow
def test_api_runsync_fails_a_bad_job_with_its_error(api_server):
    body = requests.post(api_server + "/runsync", json={"input": {**SMALL, "num_persons": 9}}, timeout=60).json()
    assert body["status"] == "FAILED"
    assert "num_persons: Input should be less than or equal to 5" in body["error"]


@pytest.mark.slow
def test_api_status_action_reports_the_engine_and_volume(api_server):
    body = requests.post(api_server + "/runsync", json={"input": {"action": "status"}}, timeout=60).json()
    assert body["status"] == "COMPLETED"
    assert body["output"]["engine"]["loaded"] is True and body["output"]["volume"]["all_ok"] is True
    assert body["output"]["output"]["uploads"] is True


