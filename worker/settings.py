"""The worker's configuration, read from the environment once per process.

| variable | default | meaning |
|---|---|---|
| `SCAIL_MODEL_ROOT` | `/runpod-volume` | model root: every weight file and volume-path input is relative to it |
| `SCAIL_DEVICE` | `auto` | `auto` (CUDA when usable, else CPU), `cuda`, `cuda:N` or `cpu` |
| `SCAIL_OFFLOAD_PROFILE` | `auto` | mmgp offload profile 1..5; `auto` chooses from VRAM and RAM |
| `SCAIL_ATTENTION` | `auto` | attention backend: `auto` (`fp8` where it runs, else `sdpa`), `sdpa` (bf16, cuDNN first), `fp8` (cuDNN fp8 self-attention on Hopper and newer), `flash`, `sage`, `math` |
| `SCAIL_GEMM` | `auto` | how the DiT blocks' int8 Linears compute: `auto` (= `int8` on Hopper and newer GPUs that can run it, `bf16` elsewhere), `int8` (int8 x int8 GEMMs in Triton; needs 144 KiB of shared memory per block: A100/H100-class GPUs), `bf16` (quanto: dequantise, bf16 GEMM), `fp8` (e4m3 GEMMs, Ada/Hopper+; over the 2% fidelity guard) |
| `SCAIL_COMPILE` | `auto` | torch.compile the DiT blocks on CUDA (`auto` = on; `0` for eager; the first job per shape compiles) |
| `SCAIL_PIN_MEMORY` | `auto` | pin weights in host RAM (`auto`: only for the streaming profiles 2, 4, 5 as mmgp does; off for 1 and 3, which starts 40 s faster) |
| `BUCKET_ENDPOINT_URL` | unset | S3-compatible endpoint; with the key pair it enables uploads |
| `BUCKET_ACCESS_KEY_ID` | unset | access key of the bucket |
| `BUCKET_SECRET_ACCESS_KEY` | unset | secret key of the bucket |
| `BUCKET_NAME` | `scail-outputs` | bucket that receives the videos (keys `<prefix><job id>/...`) |
| `BUCKET_REGION` | unset | region passed to boto3 (some providers need it for signing) |
| `BUCKET_KEY_PREFIX` | `scail/` | prefix of every uploaded key |
| `SCAIL_URL_EXPIRY_S` | `86400` | lifetime of the presigned `video_url` (1 s .. 7 days) |
| `SCAIL_MAX_DOWNLOAD_BYTES` | `536870912` | size cap of one input (URL, base64 or volume file) |
| `SCAIL_DOWNLOAD_TIMEOUT_S` | `60` | connect/read timeout of one HTTP attempt; 4x this bounds a whole download |
| `SCAIL_DOWNLOAD_RETRIES` | `3` | extra attempts after a connection error, 429 or 5xx |
| `SCAIL_ALLOW_PRIVATE_URLS` | `0` | `1` lets URLs reach private, loopback and link-local addresses |
| `SCAIL_MAX_PIXELS` | `40000000` | pixel limit of one decoded image or video frame |
| `SCAIL_MAX_FRAMES` | `4000` | most driving-video frames decoded for one job |
| `SCAIL_MAX_BASE64_BYTES` | `7340032` | largest mp4 answered as `video_base64` (its base64 stays under /run's 10 MB) |
| `SCAIL_PROGRESS_INTERVAL_S` | `2` | least time between two progress updates |
| `SCAIL_OUTPUT_DIR` | `./outputs` | where videos go when no bucket is configured (local demo) |
| `SCAIL_SELF_TEST` | `0` | `1`: build the tiny volume in a temp dir and serve from it (RunPod Hub tests) |
| `SCAIL_LOG_LEVEL` | `INFO` | log level of the process (read by `runpod_handler.py`) |
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_MAX_PRESIGN_S = 7 * 24 * 3600  # the S3 limit of a SigV4 presigned URL
_OFFLOAD_PROFILES = (1, 5)  # mmgp's profiles, wan2gp_integration.offload.PROFILE_NAMES
_GEMM_MODES = ("auto", "bf16", "int8", "fp8")  # "auto" and wan2gp_integration.gemm.GEMM_MODES


@dataclass(frozen=True)
class BucketSettings:
    """Where finished videos are uploaded."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    name: str
    region: str | None
    key_prefix: str


@dataclass(frozen=True)
class Settings:
    """Every environment option of the worker; see the module docstring for the variables."""

    model_root: Path
    device: str
    offload_profile: int | None
    attention: str
    compile: bool | None
    pin_memory: bool | None
    gemm: str
    bucket: BucketSettings | None
    url_expiry_s: int
    max_download_bytes: int
    download_timeout_s: float
    download_retries: int
    allow_private_urls: bool
    max_pixels: int
    max_frames: int
    max_base64_bytes: int
    progress_interval_s: float
    output_dir: Path
    self_test: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from `env` (default `os.environ`); ValueError naming the variable when one is malformed."""
        env = os.environ if env is None else env
        reader = _Reader(env)
        bucket = None
        if env.get("BUCKET_ENDPOINT_URL") and env.get("BUCKET_ACCESS_KEY_ID") and env.get("BUCKET_SECRET_ACCESS_KEY"):
            bucket = BucketSettings(
                endpoint_url=env["BUCKET_ENDPOINT_URL"],
                access_key_id=env["BUCKET_ACCESS_KEY_ID"],
                secret_access_key=env["BUCKET_SECRET_ACCESS_KEY"],
                name=env.get("BUCKET_NAME") or "scail-outputs",
                region=env.get("BUCKET_REGION") or None,
                key_prefix=env.get("BUCKET_KEY_PREFIX", "scail/"),
            )
        profile = env.get("SCAIL_OFFLOAD_PROFILE", "auto").strip().lower()
        return cls(
            model_root=Path(env.get("SCAIL_MODEL_ROOT") or "/runpod-volume"),
            device=env.get("SCAIL_DEVICE", "auto").strip().lower() or "auto",
            offload_profile=None if profile in ("", "auto") else reader.integer("SCAIL_OFFLOAD_PROFILE", 0, *_OFFLOAD_PROFILES),
            attention=env.get("SCAIL_ATTENTION", "auto").strip().lower() or "auto",
            compile=reader.optional_flag("SCAIL_COMPILE"),
            pin_memory=reader.optional_flag("SCAIL_PIN_MEMORY"),
            gemm=reader.choice("SCAIL_GEMM", "auto", _GEMM_MODES),
            bucket=bucket,
            url_expiry_s=reader.integer("SCAIL_URL_EXPIRY_S", 86400, 1, _MAX_PRESIGN_S),
            max_download_bytes=reader.integer("SCAIL_MAX_DOWNLOAD_BYTES", 512 << 20, 1),
            download_timeout_s=reader.number("SCAIL_DOWNLOAD_TIMEOUT_S", 60.0, 0.1),
            download_retries=reader.integer("SCAIL_DOWNLOAD_RETRIES", 3, 0, 20),
            allow_private_urls=reader.flag("SCAIL_ALLOW_PRIVATE_URLS"),
            max_pixels=reader.integer("SCAIL_MAX_PIXELS", 40_000_000, 1),
            max_frames=reader.integer("SCAIL_MAX_FRAMES", 4000, 1),
            max_base64_bytes=reader.integer("SCAIL_MAX_BASE64_BYTES", 7 << 20, 0),
            progress_interval_s=reader.number("SCAIL_PROGRESS_INTERVAL_S", 2.0, 0.0),
            output_dir=Path(env.get("SCAIL_OUTPUT_DIR") or "outputs"),
            self_test=reader.flag("SCAIL_SELF_TEST"),
        )


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()


class _Reader:
    """Typed access to environment variables with bounds, naming the variable on error."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def integer(self, name: str, default: int, low: int, high: int | None = None) -> int:
        return self._bounded(name, default, int, "an integer", low, high)

    def number(self, name: str, default: float, low: float) -> float:
        return self._bounded(name, default, _finite_float, "a finite number", low, None)

    def _bounded(self, name: str, default, parse, what: str, low, high):
        """`parse` of the variable (or `default` when unset), held to `low` .. `high`."""
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = parse(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r} is not {what}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in {low} .. {high}"
            raise ValueError(f"environment variable {name}={value} must be {bound}")
        return value

    def flag(self, name: str) -> bool:
        raw = (self._raw(name) or "0").lower()
        if raw in ("1", "true", "yes", "on"):
            return True
        if raw in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"environment variable {name}={raw!r} must be 1/0, true/false, yes/no or on/off")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        """The variable lower-cased (or `default` when unset), one of `choices`."""
        value = (self._raw(name) or default).lower()
        if value not in choices:
            raise ValueError(f"environment variable {name}={value!r} must be one of {', '.join(choices)}")
        return value

    def optional_flag(self, name: str) -> bool | None:
        """None for unset or `auto`, else the flag's value."""
        raw = self._raw(name)
        return None if raw is None or raw.lower() == "auto" else self.flag(name)


def _finite_float(raw: str) -> float:
    """float(raw), refusing nan and inf (a NaN passes every bound check)."""
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value
