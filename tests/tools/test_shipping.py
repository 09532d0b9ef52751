"""The shipping files agree with the code: the image holds every package, the Hub test is a valid job."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tools.make_demo_inputs import DRIVING_NAME, REFERENCE_NAME
from wan2gp_integration.attention import resolve_backend
from worker.schema import JobInput, parse_input
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NOT_SHIPPED = {"tests", "bench"}


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line of a requirements file."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line.strip())
        if match:
            found[match.group(1).split("[")[0].lower()] = match.group(2)
    return found


def docker_context_includes(name: str) -> bool:
    """Whether .dockerignore (ignore everything, then re-include) sends top-level `name` to the build."""
    included = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if pattern in ("*", name):
            included = negated
    return included


@pytest.fixture(scope="module")
def hub_tests() -> dict:
    return json.loads((ROOT / ".runpod" / "tests.json").read_text())


def test_hub_test_inputs_are_valid_jobs(hub_tests):
    for test in hub_tests["tests"]:
        assert isinstance(parse_input(test["input"]), JobInput), test["name"]


def test_hub_tests_run_on_the_self_test_volume(hub_tests):
    env = {item["key"]: item["value"] for item in hub_tests["config"]["env"]}
    assert env.get("SCAIL_SELF_TEST") == "1"


def test_hub_test_inputs_name_the_demo_files_the_self_test_writes(hub_tests):
    for test in hub_tests["tests"]:
        assert test["input"]["reference_image"] == f"demo/{REFERENCE_NAME}"
        assert test["input"]["pose_video"] == f"demo/{DRIVING_NAME}"


def test_hub_json_is_a_serverless_gpu_listing():
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    assert hub["type"] == "serverless"
    assert hub["config"]["runsOn"] == "GPU"
    assert {"BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"} <= {
        item["key"] for item in hub["config"]["env"]
    }


@pytest.fixture(scope="module")
def hub_env() -> dict[str, dict]:
    """hub.json's endpoint variables: key -> its `input` (name, type, description, default)."""
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    return {item["key"]: item["input"] for item in hub["config"]["env"]}


def test_hub_json_defaults_are_accepted_settings(hub_env):
    Settings.from_env({key: str(field["default"]) for key, field in hub_env.items()})


def test_hub_json_names_only_attention_backends_the_worker_accepts(hub_env):
    description = re.sub(r"\(.*?\)", "", hub_env["SCAIL_ATTENTION"]["description"]).rstrip(".")
    for name in re.split(r",\s*|\s+or\s+", description):
        resolve_backend(name.strip())


def test_hub_json_names_only_gemm_modes_the_worker_accepts(hub_env):
    description = re.sub(r"\(.*?\)", "", hub_env["SCAIL_GEMM"]["description"]).rstrip(".")
    for name in re.split(r",\s*|\s+or\s+", description):
        Settings.from_env({"SCAIL_GEMM": name.strip()})


def test_docker_context_holds_every_first_party_package():
    packages = [p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file() and p.name not in NOT_SHIPPED]
    assert packages, "no package found at the repository root"
    missing = [name for name in packages if not docker_context_includes(name)]
    assert missing == [], f"add !{missing[0]}/ to .dockerignore"


def test_docker_context_holds_the_entry_point_and_leaves_out_the_venv():
    assert docker_context_includes("runpod_handler.py")
    assert docker_context_includes("test_input.json")
    assert not docker_context_includes(".venv")
    assert not docker_context_includes("build")


def test_image_onnxruntime_matches_the_tested_one():
    tested = pins(ROOT / "requirements-dev.txt")["onnxruntime"]
    assert pins(ROOT / "requirements-docker.txt")["onnxruntime-gpu"] == tested


def test_image_installs_the_runtime_requirements():
    assert "-r requirements.txt" in (ROOT / "requirements-docker.txt").read_text().splitlines()


def test_image_installs_the_pinned_cudnn_frontend_without_its_optional_kernels():
    assert "nvidia-cudnn-frontend" in pins(ROOT / "requirements-cudnn.txt")
    assert "--no-deps -r requirements-cudnn.txt" in (ROOT / "Dockerfile").read_text()
    assert docker_context_includes("requirements-cudnn.txt")


def test_base_image_carries_the_tested_torch():
    base = re.search(r"^ARG BASE_IMAGE=pytorch/pytorch:([0-9.]+)-cuda", (ROOT / "Dockerfile").read_text(), re.M)
    assert base is not None, "Dockerfile has no pinned pytorch/pytorch BASE_IMAGE"
    assert base.group(1) == pins(ROOT / "requirements-dev.txt")["torch"]
