"""The wan2gp and upstream recipes."""

from __future__ import annotations

import pytest

from common.errors import InputError
from wan2gp_integration.presets import PRESETS, WAN_NEGATIVE_PROMPT, get_preset
from wan2gp_integration.sampler import SAMPLERS, make_sampler


def test_wan2gp_preset_is_unipc_30_steps_shift_7_cfg_5():
    preset = get_preset("wan2gp")
    assert (preset.sampler, preset.steps, preset.shift, preset.guidance_scale) == ("unipc", 30, 7.0, 5.0)


def test_upstream_preset_is_euler_50_steps_shift_5_cfg_4():
    preset = get_preset("upstream")
    assert (preset.sampler, preset.steps, preset.shift, preset.guidance_scale) == ("euler", 50, 5.0, 4.0)


@pytest.mark.parametrize("given", [None, "", "   "])
def test_wan2gp_fills_a_missing_or_blank_negative_prompt_with_wans_default(given):
    assert get_preset("wan2gp").negative_prompt(given) == WAN_NEGATIVE_PROMPT


@pytest.mark.parametrize("given", [None, ""])
def test_upstream_leaves_a_missing_negative_prompt_empty(given):
    assert get_preset("upstream").negative_prompt(given) == ""


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_given_negative_prompt_is_kept(name):
    assert get_preset(name).negative_prompt("blurry, extra limbs") == "blurry, extra limbs"


def test_wan_negative_prompt_is_the_chinese_wan21_text():
    # Spot checks on the exact wording (a reworded prompt changes the unconditional branch).
    assert WAN_NEGATIVE_PROMPT.startswith("色调艳丽，过曝，静态，")
    assert "丑陋的，残缺的，多余的手指" in WAN_NEGATIVE_PROMPT
    assert WAN_NEGATIVE_PROMPT.endswith("背景人很多，倒着走")
    assert WAN_NEGATIVE_PROMPT.count("，") == 27


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_sampler(name):
    preset = get_preset(name)
    assert preset.sampler in SAMPLERS
    assert make_sampler(preset.sampler, preset.steps, preset.shift).steps == preset.steps


def test_unknown_preset_is_an_input_error_naming_the_choices():
    with pytest.raises(InputError, match="wan2gp, upstream"):
        get_preset("fast")
