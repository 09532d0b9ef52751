"""Offload profile choice from VRAM / RAM, mmgp options, and the setup's side effects."""

from __future__ import annotations

import contextlib
import gc

import pytest
import torch
from mmgp import offload as mmgp_offload

from wan2gp_integration import offload
from wan2gp_integration.offload import choose_profile, host_ram_bytes, profile_options, resolve_profile, setup_offload

GB = 1e9


@pytest.mark.parametrize(
    ("vram_gb", "ram_gb", "expected"),
    [
        (80, 128, 1),  # H100 on a big host: everything pinned and resident
        (80, 48, 3),  # big GPU, medium RAM: only the transformer pinned
        (42.3, 32, 3),  # A100-40GB reports 42.3e9 bytes
        (24, 64, 2),  # 24 GB card, plenty of RAM: pinned, streamed
        (24, 32, 4),  # 24 GB card, 32 GB RAM: Wan2GP's default
        (80, 16, 5),  # tiny RAM wins over a big GPU
        (16, 24, 5),
    ],
)
def test_choose_profile_from_vram_and_ram(vram_gb, ram_gb, expected):
    assert choose_profile(vram_gb * GB, ram_gb * GB) == expected


def test_more_memory_never_chooses_a_slower_profile():
    sizes = [8, 16, 24, 32, 40, 48, 64, 80, 141]
    for vram in sizes:
        for ram in sizes:
            here = choose_profile(vram * GB, ram * GB)
            assert choose_profile(vram * GB, 2 * ram * GB) <= here
            assert choose_profile(2 * vram * GB, ram * GB) <= here


@pytest.mark.parametrize("profile_no", [2, 4, 5])
def test_streaming_profiles_get_wan2gp_budgets_as_a_dict(profile_no):
    assert profile_options(profile_no)["budgets"] == {"transformer": 100, "text_encoder": 100, "*": 3000}


@pytest.mark.parametrize("profile_no", [1, 3])
def test_resident_profiles_get_no_budgets(profile_no):
    assert "budgets" not in profile_options(profile_no)


@pytest.mark.parametrize("profile_no", [1, 2, 3, 4, 5])
def test_the_int8_transformer_is_never_requantized(profile_no):
    assert profile_options(profile_no)["quantizeTransformer"] is False


def test_the_text_encoder_is_quantized_on_the_fly_only_for_profile_5():
    assert profile_options(4)["extraModelsToQuantize"] == []
    assert "extraModelsToQuantize" not in profile_options(5)  # mmgp's default: umT5 -> int8


def test_a_configured_profile_is_used_as_is():
    assert resolve_profile(3, torch.device("cpu")) == 3


@pytest.mark.parametrize("bad", [0, 6, -1])
def test_a_configured_profile_outside_1_to_5_is_refused(bad):
    with pytest.raises(ValueError, match="1..5"):
        resolve_profile(bad, torch.device("cpu"))


def test_host_ram_is_positive_and_at_most_physical_memory():
    ram = host_ram_bytes()
    assert 0 < ram <= offload._meminfo_total()


def test_host_ram_honours_a_cgroup_limit(tmp_path, monkeypatch):
    limit = tmp_path / "memory.max"
    limit.write_text("1073741824\n")
    monkeypatch.setattr(offload, "_CGROUP_LIMITS", (limit,))
    assert host_ram_bytes() == 1 << 30


def test_an_unlimited_cgroup_leaves_physical_memory(tmp_path, monkeypatch):
    limit = tmp_path / "memory.max"
    limit.write_text("max\n")
    monkeypatch.setattr(offload, "_CGROUP_LIMITS", (limit,))
    assert host_ram_bytes() == offload._meminfo_total()


def test_setup_passes_the_modules_and_options_and_restores_the_default_device(monkeypatch):
    """mmgp needs CUDA; a recording stand-in for `offload.profile` checks what our code hands it and undoes."""
    calls = []

    def fake_profile(modules, profile_no, **kwargs):
        calls.append((modules, profile_no, kwargs))
        torch.set_default_device("meta")  # what mmgp does with "cuda"
        return "handle"

    monkeypatch.setattr(mmgp_offload, "profile", fake_profile)
    modules = {"transformer": torch.nn.Linear(2, 2)}
    before = torch.get_default_device()
    assert setup_offload(modules, 4) == "handle"
    assert torch.get_default_device() == before
    assert calls == [(modules, 4, profile_options(4))]


@pytest.mark.parametrize("fails", [False, True])
def test_mmgp_sets_up_with_the_objects_made_so_far_frozen_and_thawed_after(monkeypatch, fails):
    frozen = []

    def fake_profile(modules, profile_no, **kwargs):
        frozen.append(gc.get_freeze_count())
        if fails:
            raise RuntimeError("mmgp failed")
        return "handle"

    monkeypatch.setattr(mmgp_offload, "profile", fake_profile)
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        setup_offload({"transformer": torch.nn.Linear(2, 2)}, 4)
    assert frozen[0] > 0 and gc.get_freeze_count() == 0


@pytest.mark.gpu
def test_setup_on_cuda_keeps_the_default_device_and_runs_the_module():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 8)).to(torch.bfloat16)
    handle = setup_offload({"transformer": model}, 4)
    assert torch.get_default_device() == torch.device("cpu")
    out = model(torch.randn(2, 8, dtype=torch.bfloat16, device="cuda"))
    assert out.is_cuda
    handle.release()


def test_compile_asks_mmgp_to_compile_the_transformer_only():
    assert profile_options(4, compile=True)["compile"] == ["transformer"]
    assert "compile" not in profile_options(4)


@pytest.mark.parametrize("profile_no", [1, 3])
def test_whole_model_profiles_do_not_pin_by_default(profile_no):
    assert profile_options(profile_no)["pinnedMemory"] is False


@pytest.mark.parametrize("profile_no", [2, 4, 5])
def test_streaming_profiles_keep_mmgps_pinning_by_default(profile_no):
    assert "pinnedMemory" not in profile_options(profile_no)


def test_pin_memory_overrides_the_default():
    assert profile_options(1, pin_memory=True)["pinnedMemory"] is True
    assert profile_options(4, pin_memory=False)["pinnedMemory"] is False


@pytest.mark.parametrize(
    ("profile_no", "pin_memory", "expected"),
    [(1, None, False), (3, None, False), (2, None, True), (4, None, True), (5, None, False), (1, True, True), (4, False, False)],
)
def test_the_dit_is_read_into_page_locked_memory_exactly_when_mmgp_would_pin_it(profile_no, pin_memory, expected):
    assert offload.pins_transformer(profile_no, pin_memory) is expected


def test_compiling_makes_inductor_round_to_bf16_where_eager_does(monkeypatch):
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(mmgp_offload, "profile", lambda modules, profile_no, **kwargs: "handle")
    monkeypatch.setattr(inductor_config, "emulate_precision_casts", False)
    setup_offload({"transformer": torch.nn.Linear(2, 2)}, 1)
    assert inductor_config.emulate_precision_casts is False
    setup_offload({"transformer": torch.nn.Linear(2, 2)}, 1, compile=True)
    assert inductor_config.emulate_precision_casts is True
