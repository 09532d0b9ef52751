"""The job contract (docs: ../shared/DESIGN.md): strict pydantic models of a job's `input`.

Strict means no coercion: a string where a number is expected, a number for a string, `true` for an
integer or an unknown field are refused with a message naming the field. Fields left out are None
here and resolved against the inputs and the preset in `worker/plan.py`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from common.errors import InputError
from pose.frames import MAX_FRAMES, MIN_FRAMES

SIZE_MIN, SIZE_MAX, SIZE_MULTIPLE = 256, 1280, 32
PROMPT_MAX_CHARS = 4000
SEED_MAX = 2**32 - 1
MIN_FPS, MAX_FPS = 1.0, 60.0

Size = Annotated[int, Field(ge=SIZE_MIN, le=SIZE_MAX)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class JobInput(_Strict):
    """One generation job: a reference image animated by a driving (or rendered pose) video."""

    reference_image: str = Field(min_length=1, description="http(s) URL, data URI / base64, or a model-root path")
    pose_video: str = Field(min_length=1, description="driving video in the same forms")
    pose_video_is_rendered: bool = False
    prompt: str = Field("", max_length=PROMPT_MAX_CHARS)
    negative_prompt: str | None = Field(None, max_length=PROMPT_MAX_CHARS)
    preset: Literal["wan2gp", "upstream"] = "wan2gp"
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    width: Size | None = None
    height: Size | None = None
    num_frames: int | None = Field(None, ge=MIN_FRAMES, le=MAX_FRAMES)
    fps: float | None = Field(None, ge=MIN_FPS, le=MAX_FPS)
    steps: int | None = Field(None, ge=1, le=100)
    guidance_scale: float | None = Field(None, ge=0, le=20)
    shift: float | None = Field(None, gt=0, le=30)
    sampler: Literal["unipc", "euler"] | None = None
    num_persons: int = Field(1, ge=1, le=5)
    align_to_reference: bool = True
    return_pose_video: bool = False
    return_base64: bool = False

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_32(cls, value: int | None) -> int | None:
        if value is not None and value % SIZE_MULTIPLE:
            raise ValueError(f"must be a multiple of {SIZE_MULTIPLE}")
        return value

    @field_validator("num_frames")
    @classmethod
    def _four_n_plus_one(cls, value: int | None) -> int | None:
        if value is not None and value % 4 != 1:
            raise ValueError(f"must be 4n+1 ({MIN_FRAMES}, 9, 13, ..., {MAX_FRAMES})")
        return value


class ActionInput(_Strict):
    """A job that asks the worker something instead of generating."""

    action: Literal["status"]


def parse_input(raw: object) -> JobInput | ActionInput:
    """The validated job input; InputError with one line per problem otherwise."""
    if not isinstance(raw, dict):
        raise InputError(f"job input must be a JSON object, got {type(raw).__name__}")
    model = ActionInput if "action" in raw else JobInput
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """`invalid job input: width: must be ...; foo: unknown field` (one clause per problem)."""
    clauses = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err["loc"]) or "input"
        kind = err["type"]
        if kind == "extra_forbidden":
            clauses.append(f"{field}: unknown field")
        elif kind == "missing":
            clauses.append(f"{field}: required field is missing")
        else:
            message = err["msg"].removeprefix("Value error, ")
            clauses.append(f"{field}: {message} (got {_short(err.get('input'))})")
    return "invalid job input: " + "; ".join(clauses)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
