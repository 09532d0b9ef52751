"""Wan VAE: Wan key layout -> diffusers AutoencoderKLWan, latent normalisation, shapes, tiled decode, file errors."""

from __future__ import annotations

import inspect
import shutil

import pytest
import torch
from diffusers import AutoencoderKLWan
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

from common.errors import VolumeFileError
from tools.volume.encoder_files import VAE_FILE
from wan2gp_integration.vae import LATENTS_MEAN, LATENTS_STD, VAEConfig, WanVAE, wan_vae_keys

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def vae(generator_root) -> WanVAE:
    return WanVAE.from_file(generator_root / VAE_FILE, CPU, torch.float32)


def _stats(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1, 1)


def test_every_wan_tensor_lands_in_the_diffusers_module(generator_root, vae):
    wan = torch.load(generator_root / VAE_FILE, map_location="cpu", weights_only=True)
    module = vae.model.state_dict()
    landed = convert_wan_vae_to_diffusers({key: key for key in wan})
    assert set(landed) == set(module) and len(landed) == len(wan)
    for name, wan_key in landed.items():
        assert torch.equal(module[name], wan[wan_key].float()), wan_key


def test_wan_key_layout_has_the_reference_resample_and_shortcut_slots():
    keys = set(wan_vae_keys(VAEConfig()))
    # Wan2.1: encoder downsamples 2 (2d), 5 and 8 (3d); decoder upsamples 3, 7 (3d) and 11 (2d).
    assert {"encoder.downsamples.5.time_conv.weight", "encoder.downsamples.8.time_conv.weight"} <= keys
    assert "encoder.downsamples.2.time_conv.weight" not in keys
    assert {"decoder.upsamples.3.time_conv.weight", "decoder.upsamples.7.time_conv.weight"} <= keys
    assert "decoder.upsamples.11.time_conv.weight" not in keys
    assert {"encoder.downsamples.3.shortcut.weight", "decoder.upsamples.4.shortcut.weight"} <= keys
    assert "decoder.upsamples.8.shortcut.weight" not in keys


def test_full_config_has_the_published_parameter_count():
    with torch.device("meta"):
        n = sum(p.numel() for p in VAEConfig().build().parameters())
    assert 126e6 < n < 128e6  # Wan2.1 VAE: 127M parameters


def test_normalisation_constants_match_diffusers_wan_defaults():
    defaults = inspect.signature(AutoencoderKLWan.__init__).parameters
    assert list(LATENTS_MEAN) == defaults["latents_mean"].default
    assert list(LATENTS_STD) == defaults["latents_std"].default


def test_encode_returns_the_posterior_mean_normalised(vae):
    video = torch.rand(1, 3, 5, 32, 48) * 2 - 1
    mu = vae.model.encode(video).latent_dist.mean
    expected = (mu - _stats(LATENTS_MEAN)) / _stats(LATENTS_STD)
    torch.testing.assert_close(vae.encode(video), expected, rtol=1e-5, atol=1e-6)


def test_decode_undoes_the_normalisation_before_decoding(vae):
    latents = torch.randn(1, 16, 2, 4, 6)
    expected = vae.model.decode(latents * _stats(LATENTS_STD) + _stats(LATENTS_MEAN)).sample
    torch.testing.assert_close(vae.decode(latents), expected, rtol=1e-5, atol=1e-6)


def test_encode_decode_shapes_for_five_frames(vae):
    video = torch.rand(2, 3, 5, 32, 48) * 2 - 1
    latents = vae.encode(video)
    assert latents.shape == (2, 16, 2, 4, 6)
    decoded = vae.decode(latents)
    assert decoded.shape == video.shape
    assert decoded.min() >= -1 and decoded.max() <= 1


def test_tiled_decode_is_close_to_plain_decode(vae):
    torch.manual_seed(0)
    latents = torch.randn(1, 16, 2, 8, 12)
    plain = vae.decode(latents)
    tiled = vae.decode(latents, tiled=True, tile_px=64, stride_px=48)  # 2x2 tiles, 16 px blended
    assert tiled.shape == plain.shape
    assert not torch.equal(tiled, plain)  # the tiled path did run
    # Tiles see zero padding at their borders and are blended, so only close: random weights amplify it.
    correlation = torch.corrcoef(torch.stack([tiled.flatten(), plain.flatten()]))[0, 1]
    assert correlation > 0.9
    assert (tiled - plain).abs().mean() < 0.5 * plain.abs().mean()  # another latent: ~1.0


def test_decode_leaves_no_feature_cache_behind(vae):
    vae.decode(torch.randn(1, 16, 2, 4, 4))
    assert all(entry is None for entry in vae.model._feat_map)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(VolumeFileError, match="Wan2.1_VAE.pth: missing"):
        WanVAE.from_file(tmp_path / VAE_FILE, CPU, torch.float32)


def test_truncated_file_is_refused(generator_root, tmp_path):
    data = (generator_root / VAE_FILE).read_bytes()
    (tmp_path / VAE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeFileError, match="Wan2.1_VAE.pth"):
        WanVAE.from_file(tmp_path / VAE_FILE, CPU, torch.float32)


def test_missing_keys_are_named(generator_root, tmp_path):
    state = torch.load(generator_root / VAE_FILE, weights_only=True)
    del state["decoder.upsamples.7.time_conv.weight"]
    torch.save(state, tmp_path / VAE_FILE)
    with pytest.raises(VolumeFileError, match="missing keys: decoder.upsamples.7.time_conv.weight"):
        WanVAE.from_file(tmp_path / VAE_FILE, CPU, torch.float32)


def test_another_checkpoint_is_refused(generator_root, tmp_path):
    shutil.copy(generator_root / "umt5-xxl" / "models_t5_umt5-xxl-enc-bf16.pth", tmp_path / VAE_FILE)
    with pytest.raises(VolumeFileError, match="missing keys: conv2.weight, encoder.conv1.weight"):
        WanVAE.from_file(tmp_path / VAE_FILE, CPU, torch.float32)


@pytest.mark.gpu
def test_full_size_decode_of_81_frames_fits_13_gb():
    """81 frames at 896x512 with the real VAE dimensions (random weights), bf16, peak under 13 GB."""
    device = torch.device("cuda")
    with torch.device("meta"):
        model = VAEConfig().build()
    model = model.to_empty(device=device).to(torch.bfloat16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    vae = WanVAE(model.eval().requires_grad_(False), device, torch.bfloat16)
    latents = torch.randn(1, 16, 21, 64, 112, device=device, dtype=torch.bfloat16)
    torch.cuda.reset_peak_memory_stats()
    video = vae.decode(latents)
    assert video.shape == (1, 3, 81, 512, 896)
    assert torch.cuda.max_memory_allocated() < 13 * 2**30


def test_no_tensor_is_left_on_the_meta_device(vae):
    assert not any(t.is_meta for t in [*vae.model.parameters(), *vae.model.buffers()])
