"""Fitness checks: volume files present and well formed, memory per offload profile; the self-test volume."""

from __future__ import annotations

import shutil

import pytest
import torch

from wan2gp_integration.offload import PROFILE_NAMES, choose_profile
from worker.preflight import NotFitError, check_cuda, check_volume, profile_requirements, volume_checks
from worker.settings import Settings
from worker.startup import with_self_test_volume


@pytest.fixture
def volume_copy(tiny_volume, tmp_path):
    root = tmp_path / "volume"
    shutil.copytree(tiny_volume, root, ignore=shutil.ignore_patterns("demo"))
    return root


def test_tiny_volume_passes_every_check(tiny_volume):
    check_volume(tiny_volume)
    assert all(check.ok and check.size for check in volume_checks(tiny_volume))


def test_truncated_file_is_named_with_its_problem(volume_copy):
    dit = next(volume_copy.glob("*int8.safetensors"))
    dit.write_bytes(dit.read_bytes()[: dit.stat().st_size // 2])
    with pytest.raises(NotFitError, match=f"1 model file\\(s\\) under .* failed their checks: {dit.name}: truncated"):
        check_volume(volume_copy)


def test_every_missing_file_is_listed(volume_copy):
    (volume_copy / "Wan2.1_VAE.pth").unlink()
    (volume_copy / "pose" / "yolox_l.onnx").unlink()
    with pytest.raises(NotFitError, match="2 model file.*Wan2.1_VAE.pth: missing; pose/yolox_l.onnx: missing"):
        check_volume(volume_copy)


def test_missing_model_root_names_the_setting(tmp_path):
    with pytest.raises(NotFitError, match="model root .*nowhere does not exist.*SCAIL_MODEL_ROOT"):
        check_volume(tmp_path / "nowhere")


def test_optional_mask_files_may_be_absent(volume_copy):
    shutil.rmtree(volume_copy / "mask")
    check_volume(volume_copy)


@pytest.mark.parametrize("profile", sorted(PROFILE_NAMES))
def test_each_profiles_requirements_are_enough_for_it_to_be_chosen(profile):
    vram, ram = profile_requirements(profile)
    assert choose_profile(vram, ram) == profile


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a host without CUDA")
def test_cuda_check_names_the_missing_gpu():
    with pytest.raises(NotFitError, match="CUDA is not available"):
        check_cuda()


@pytest.mark.gpu
def test_cuda_check_passes_on_a_gpu_host():
    assert check_cuda().startswith("sm_")


@pytest.mark.slow
def test_self_test_volume_is_complete_and_holds_the_demo_inputs():
    settings = with_self_test_volume(Settings.from_env({}))
    try:
        check_volume(settings.model_root)
        assert (settings.model_root / "demo" / "reference.png").is_file()
        assert (settings.model_root / "demo" / "driving.mp4").is_file()
    finally:
        shutil.rmtree(settings.model_root)
