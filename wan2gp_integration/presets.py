"""Sampling recipes: Wan2GP's SCAIL defaults and the upstream SCAIL-Preview inference script."""

from __future__ import annotations

from dataclasses import dataclass

from common.errors import InputError

# Wan2.1's default negative prompt (`sample_neg_prompt` in wan/configs/shared_config.py), verbatim.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
    "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class Preset:
    """What `sampler`, `steps`, `shift`, `guidance_scale` and an empty negative prompt default to."""

    sampler: str
    steps: int
    shift: float
    guidance_scale: float
    default_negative_prompt: str

    def negative_prompt(self, given: str | None) -> str:
        """The given negative prompt, or this preset's default when it is missing or blank."""
        return given if given and given.strip() else self.default_negative_prompt


PRESETS: dict[str, Preset] = {
    # Wan2GP: UniPC needs fewer steps; a stronger shift spends them at high noise.
    "wan2gp": Preset(sampler="unipc", steps=30, shift=7.0, guidance_scale=5.0, default_negative_prompt=WAN_NEGATIVE_PROMPT),
    # Upstream SCAIL: Euler flow matching, unconditional branch is T5("").
    "upstream": Preset(sampler="euler", steps=50, shift=5.0, guidance_scale=4.0, default_negative_prompt=""),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; InputError naming the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}") from None
