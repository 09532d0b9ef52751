"""The startup check that names an unsupported GPU architecture."""

from __future__ import annotations

import pytest
import torch

from worker.cuda_arch import UnsupportedGpuError, can_run, check_cuda_arch, missing_targets, parse_arch

AMPERE_TO_HOPPER = ["sm_80", "sm_86", "sm_90"]


def test_parse_arch_reads_kind_capability_and_suffix():
    assert parse_arch("sm_86") == ("sm", (8, 6), "")
    assert parse_arch("sm_90a") == ("sm", (9, 0), "a")
    assert parse_arch("compute_120") == ("compute", (12, 0), "")


def test_parse_arch_refuses_other_names():
    with pytest.raises(ValueError, match="gfx90a"):
        parse_arch("gfx90a")


def test_cubin_runs_on_a_later_minor_of_the_same_major():
    assert can_run((8, 9), AMPERE_TO_HOPPER)


def test_cubin_does_not_run_on_an_earlier_minor():
    assert not can_run((8, 0), ["sm_86"])


def test_cubin_does_not_run_on_a_later_major():
    assert not can_run((12, 0), AMPERE_TO_HOPPER)


def test_ptx_runs_on_any_later_capability():
    assert can_run((12, 0), [*AMPERE_TO_HOPPER, "compute_90"])


def test_architecture_specific_cubin_runs_on_that_capability_only():
    assert can_run((9, 0), ["sm_90a"])
    assert not can_run((9, 1), ["sm_90a"])


def test_pinned_torch_build_has_kernels_for_every_target_gpu():
    arch_list = torch.cuda.get_arch_list()
    if not arch_list:
        pytest.skip("this torch is a CPU-only build")
    assert missing_targets(arch_list) == [], f"torch {torch.__version__} built for {arch_list}"


def test_missing_targets_names_the_architectures_a_build_lacks():
    missing = missing_targets(AMPERE_TO_HOPPER)
    assert [entry.split()[0] for entry in missing] == ["sm_100", "sm_120"]


@pytest.fixture
def fake_blackwell(monkeypatch):
    """A CUDA device we do not have: what torch reports for an RTX 5090 on a build without sm_120."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (12, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA GeForce RTX 5090")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(AMPERE_TO_HOPPER))


def test_check_names_the_gpu_its_architecture_and_the_build(fake_blackwell):
    with pytest.raises(UnsupportedGpuError) as info:
        check_cuda_arch()
    message = str(info.value)
    assert "RTX 5090" in message
    assert "sm_120" in message
    assert "sm_80, sm_86, sm_90" in message


def test_check_returns_the_architecture_of_a_supported_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: (8, 9))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA L4")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(AMPERE_TO_HOPPER))
    assert check_cuda_arch() == "sm_89"


@pytest.mark.gpu
def test_check_passes_on_this_machines_gpu():
    name = check_cuda_arch()
    assert torch.ones(4, device="cuda").add(1).sum().item() == 8.0, name
