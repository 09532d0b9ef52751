"""Environment configuration: defaults, bucket detection, malformed values named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from worker.settings import Settings


def test_defaults_of_an_empty_environment():
    settings = Settings.from_env({})
    assert settings.model_root == Path("/runpod-volume")
    assert (settings.offload_profile, settings.attention, settings.device) == (None, "auto", "auto")
    assert settings.bucket is None and settings.allow_private_urls is False and settings.self_test is False


def test_bucket_settings_come_from_the_environment():
    env = {
        "BUCKET_ENDPOINT_URL": "https://s3.example.com",
        "BUCKET_ACCESS_KEY_ID": "a",
        "BUCKET_SECRET_ACCESS_KEY": "b",
        "BUCKET_NAME": "videos",
    }
    assert dataclasses.asdict(Settings.from_env(env).bucket) == {
        "endpoint_url": "https://s3.example.com",
        "access_key_id": "a",
        "secret_access_key": "b",
        "name": "videos",
        "region": None,
        "key_prefix": "scail/",
    }


def test_bucket_needs_endpoint_and_both_keys():
    assert Settings.from_env({"BUCKET_ENDPOINT_URL": "https://s3.example.com", "BUCKET_ACCESS_KEY_ID": "a"}).bucket is None


def test_explicit_offload_profile_is_an_integer():
    assert Settings.from_env({"SCAIL_OFFLOAD_PROFILE": "4"}).offload_profile == 4


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCAIL_OFFLOAD_PROFILE": "fast"}, "SCAIL_OFFLOAD_PROFILE='fast' is not an integer"),
        ({"SCAIL_OFFLOAD_PROFILE": "6"}, r"SCAIL_OFFLOAD_PROFILE=6 must be in 1 \.\. 5"),
        ({"SCAIL_OFFLOAD_PROFILE": "0"}, r"SCAIL_OFFLOAD_PROFILE=0 must be in 1 \.\. 5"),
        ({"SCAIL_URL_EXPIRY_S": "999999999"}, r"SCAIL_URL_EXPIRY_S=999999999 must be in 1 \.\. 604800"),
        ({"SCAIL_ALLOW_PRIVATE_URLS": "maybe"}, "SCAIL_ALLOW_PRIVATE_URLS='maybe' must be 1/0"),
        ({"SCAIL_DOWNLOAD_TIMEOUT_S": "-1"}, "SCAIL_DOWNLOAD_TIMEOUT_S=-1.0 must be >= 0.1"),
        ({"SCAIL_PROGRESS_INTERVAL_S": "nan"}, "SCAIL_PROGRESS_INTERVAL_S='nan' is not a finite number"),
    ],
)
def test_malformed_variable_is_named(env, message):
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize(("raw", "expected"), [(None, None), ("auto", None), ("1", True), ("off", False)])
def test_compile_and_pin_memory_are_tri_state(raw, expected):
    env = {} if raw is None else {"SCAIL_COMPILE": raw, "SCAIL_PIN_MEMORY": raw}
    settings = Settings.from_env(env)
    assert settings.compile is expected
    assert settings.pin_memory is expected


def test_a_malformed_compile_flag_names_the_variable():
    with pytest.raises(ValueError, match="SCAIL_COMPILE"):
        Settings.from_env({"SCAIL_COMPILE": "maybe"})


@pytest.mark.parametrize(("env", "expected"), [({}, "auto"), ({"SCAIL_GEMM": " INT8 "}, "int8"), ({"SCAIL_GEMM": "fp8"}, "fp8"),
                                             ({"SCAIL_GEMM": "bf16"}, "bf16")])  # fmt: skip
def test_the_gemm_mode_is_auto_unless_one_is_named(env, expected):
    assert Settings.from_env(env).gemm == expected


def test_an_unknown_gemm_mode_names_the_variable_and_the_choices():
    with pytest.raises(ValueError, match="SCAIL_GEMM.*auto, bf16, int8, fp8"):
        Settings.from_env({"SCAIL_GEMM": "fast"})
