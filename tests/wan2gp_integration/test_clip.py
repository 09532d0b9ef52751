"""CLIP visual tower: Wan keys -> CLIPVisionModel, parity with Wan's ViT written out here, preprocessing, errors."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from common.errors import VolumeFileError
from tools.volume.encoder_files import CLIP_FILE, VAE_FILE
from wan2gp_integration.clip import MEAN, STD, ClipVisionEncoder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def wan(generator_root) -> dict[str, torch.Tensor]:
    state = torch.load(generator_root / CLIP_FILE, map_location="cpu", weights_only=True)
    return {k: v.float() for k, v in state.items()}


@pytest.fixture(scope="module")
def encoder(generator_root) -> ClipVisionEncoder:
    return ClipVisionEncoder.from_file(generator_root / CLIP_FILE, CPU, torch.float32)


def wan_visual(wan: dict[str, torch.Tensor], pixels: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Wan's VisionTransformer forward (pre-norm ViT, exact GELU) over its first `num_blocks` blocks."""
    x = F.conv2d(pixels, wan["visual.patch_embedding.weight"], stride=wan["visual.patch_embedding.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([wan["visual.cls_embedding"].expand(len(x), -1, -1), x], dim=1) + wan["visual.pos_embedding"]
    width = x.shape[-1]
    x = F.layer_norm(x, (width,), wan["visual.pre_norm.weight"], wan["visual.pre_norm.bias"], 1e-5)
    heads = width // 80
    for i in range(num_blocks):
        p = f"visual.transformer.{i}."
        h = F.layer_norm(x, (width,), wan[p + "norm1.weight"], wan[p + "norm1.bias"], 1e-5)
        qkv = (h @ wan[p + "attn.to_qkv.weight"].T + wan[p + "attn.to_qkv.bias"]).view(*h.shape[:2], 3, heads, 80)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x [B, heads, L, 80]
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(80), dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(x.shape)
        x = x + h @ wan[p + "attn.proj.weight"].T + wan[p + "attn.proj.bias"]
        h = F.layer_norm(x, (width,), wan[p + "norm2.weight"], wan[p + "norm2.bias"], 1e-5)
        h = F.gelu(h @ wan[p + "mlp.0.weight"].T + wan[p + "mlp.0.bias"])
        x = x + h @ wan[p + "mlp.2.weight"].T + wan[p + "mlp.2.bias"]
    return x


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_every_used_wan_tensor_lands_in_the_module(wan, encoder):
    module = encoder.model.state_dict()
    num_used = len(encoder.model.encoder.layers)
    assert num_used == 1  # the tiny file has 2 blocks; the last is not used
    assert torch.equal(module["embeddings.patch_embedding.weight"], wan["visual.patch_embedding.weight"])
    assert torch.equal(module["embeddings.class_embedding"], wan["visual.cls_embedding"].flatten())
    assert torch.equal(module["embeddings.position_embedding.weight"], wan["visual.pos_embedding"][0])
    assert torch.equal(module["pre_layrnorm.weight"], wan["visual.pre_norm.weight"])
    assert torch.equal(module["post_layernorm.bias"], wan["visual.post_norm.bias"])
    for i in range(num_used):
        src, dst = f"visual.transformer.{i}.", f"encoder.layers.{i}."
        for p in ("weight", "bias"):
            qkv = torch.cat([module[f"{dst}self_attn.{n}_proj.{p}"] for n in "qkv"])
            assert torch.equal(qkv, wan[f"{src}attn.to_qkv.{p}"])
            assert torch.equal(module[f"{dst}self_attn.out_proj.{p}"], wan[f"{src}attn.proj.{p}"])
            assert torch.equal(module[f"{dst}layer_norm1.{p}"], wan[f"{src}norm1.{p}"])
            assert torch.equal(module[f"{dst}layer_norm2.{p}"], wan[f"{src}norm2.{p}"])
            assert torch.equal(module[f"{dst}mlp.fc1.{p}"], wan[f"{src}mlp.0.{p}"])
            assert torch.equal(module[f"{dst}mlp.fc2.{p}"], wan[f"{src}mlp.2.{p}"])


def test_output_matches_wan_visual_without_its_last_block(wan, encoder):
    images = torch.rand(2, 3, 96, 128) * 2 - 1
    out = encoder.encode(images)
    pixels = encoder.preprocess(images)
    num_blocks = 2  # the tiny file's block count; the real one has 32 and Wan stops after 31
    assert out.shape == (2, 257, 160)
    assert _relative_error(out, wan_visual(wan, pixels, num_blocks - 1)) < 1e-4
    assert _relative_error(out, wan_visual(wan, pixels, num_blocks)) > 1e-2


def test_preprocess_maps_a_flat_image_to_the_normalised_colour(encoder):
    values = torch.tensor([-1.0, 0.2, 0.9])
    images = values.view(1, 3, 1, 1).expand(1, 3, 60, 90)
    pixels = encoder.preprocess(images)
    assert pixels.shape == (1, 3, 224, 224)
    for c in range(3):
        expected = ((values[c].item() + 1) / 2 - MEAN[c]) / STD[c]
        torch.testing.assert_close(pixels[0, c], torch.full((224, 224), expected), rtol=1e-5, atol=1e-5)


def test_preprocess_resizes_bicubically(encoder):
    ramp = torch.linspace(-1, 1, 112).view(1, 1, 1, 112).expand(1, 3, 112, 112)
    bilinear = F.interpolate(ramp, size=(224, 224), mode="bilinear", align_corners=False)
    bicubic = F.interpolate(ramp, size=(224, 224), mode="bicubic", align_corners=False)
    got = encoder.preprocess(ramp) * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    torch.testing.assert_close(got, bicubic * 0.5 + 0.5, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, bilinear * 0.5 + 0.5, atol=1e-4)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(VolumeFileError, match="onlyvisual.pth: missing"):
        ClipVisionEncoder.from_file(tmp_path / CLIP_FILE, CPU, torch.float32)


def test_truncated_file_is_refused(generator_root, tmp_path):
    data = (generator_root / CLIP_FILE).read_bytes()
    (tmp_path / CLIP_FILE).write_bytes(data[:1000])
    with pytest.raises(VolumeFileError, match="not a torch .pth archive"):
        ClipVisionEncoder.from_file(tmp_path / CLIP_FILE, CPU, torch.float32)


def test_missing_block_tensor_is_named(generator_root, tmp_path):
    state = torch.load(generator_root / CLIP_FILE, weights_only=True)
    del state["visual.transformer.0.attn.to_qkv.bias"]
    torch.save(state, tmp_path / CLIP_FILE)
    with pytest.raises(VolumeFileError, match="missing keys: visual.transformer.0.attn.to_qkv.bias"):
        ClipVisionEncoder.from_file(tmp_path / CLIP_FILE, CPU, torch.float32)


def test_wrong_shape_is_named(generator_root, tmp_path):
    state = torch.load(generator_root / CLIP_FILE, weights_only=True)
    state["visual.transformer.1.mlp.2.weight"] = state["visual.transformer.1.mlp.2.weight"][:, :10].clone()
    torch.save(state, tmp_path / CLIP_FILE)
    with pytest.raises(VolumeFileError, match="visual.transformer.1.mlp.2.weight has shape"):
        ClipVisionEncoder.from_file(tmp_path / CLIP_FILE, CPU, torch.float32)


def test_another_checkpoint_is_refused(generator_root, tmp_path):
    shutil.copy(generator_root / VAE_FILE, tmp_path / CLIP_FILE)
    with pytest.raises(VolumeFileError, match="missing keys: visual"):
        ClipVisionEncoder.from_file(tmp_path / CLIP_FILE, CPU, torch.float32)


def test_no_tensor_is_left_on_the_meta_device(encoder):
    tensors = [*encoder.model.parameters(), *encoder.model.buffers()]
    assert not any(t.is_meta for t in tensors)
    assert torch.equal(encoder.model.embeddings.position_ids[0], torch.arange(257))
