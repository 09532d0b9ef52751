"""NLF: file layout, loading errors, head decoding, geometry, and the per-box joints API (CPU, tiny file)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file

from common.errors import VolumeFileError
from pose.files import NLF_META_FILE, NLF_WEIGHTS_FILE
from pose.nlf import load_nlf
from pose.nlf.backbone import CenteredStrideConv2d, build_features
from pose.nlf.geometry import crop_cameras, intrinsics_from_fov, reconstruct_absolute
from tools.volume.nlf_file import write_nlf_files

CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def nlf_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nlf")
    write_nlf_files(root, "tiny")
    return root


@pytest.fixture(scope="session")
def nlf(nlf_root):
    return load_nlf(nlf_root / NLF_WEIGHTS_FILE, nlf_root / NLF_META_FILE, CPU)


@pytest.fixture(scope="session")
def real_backbone_state() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return torchvision.models.efficientnet_v2_l().features.state_dict()


def test_backbone_keys_equal_torchvision_efficientnet_v2_l(real_backbone_state):
    built = build_features(real_backbone_state)
    assert set(built.state_dict()) == set(real_backbone_state)
    assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == {
        k: tuple(v.shape) for k, v in real_backbone_state.items()
    }


def test_backbone_uses_bn_eps_1e3_and_centred_stride_on_block_6_0(real_backbone_state):
    built = build_features(real_backbone_state)
    assert all(m.eps == 1e-3 for m in built.modules() if isinstance(m, torch.nn.BatchNorm2d))
    centred = [name for name, m in built.named_modules() if isinstance(m, CenteredStrideConv2d)]
    assert centred == ["6.0.block.1.0"]


def test_centred_stride_conv_pads_right_and_bottom_by_two():
    conv = CenteredStrideConv2d(4, 4, 3, stride=2, padding=0, groups=4, bias=False)
    x = torch.randn(1, 4, 12, 12)
    expected = F.conv2d(F.pad(x, (0, 2, 0, 2)), conv.weight, stride=2, groups=4)
    torch.testing.assert_close(conv(x), expected)


def test_file_uses_real_key_layout_and_loader_reads_all_model_keys(nlf_root, nlf):
    file_keys = set(load_file(str(nlf_root / NLF_WEIGHTS_FILE)))
    model_keys = {f"crop_model.{k}" for k in nlf.crop_model.state_dict()}
    assert model_keys <= file_keys
    assert "__meta_cano_all_smpl" in file_keys
    assert {k for k in file_keys if k.startswith("crop_model.")} == model_keys
    assert any(k.startswith("crop_model.heatmap_head.weight_field.gps_net.") for k in model_keys)


def test_weight_field_from_canonical_points_has_shape_p_513_10(nlf):
    points = nlf.canonical_points
    assert points.shape == (1024 + 24, 3)
    with torch.no_grad():
        field = nlf.crop_model.heatmap_head.weight_field(points)
    assert field.shape == (len(points), 513, 10)
    torch.testing.assert_close(nlf.filters, field)


def test_joints_for_boxes_shapes_units_and_empty_frames(nlf):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 96, 128, 3), dtype=np.uint8)
    boxes = [np.array([[40.0, 10, 80, 90]]), np.zeros((0, 4)), np.array([[10.0, 5, 50, 90], [60, 5, 120, 95]])]
    out = nlf.joints_for_boxes(frames, boxes)
    assert [o.shape for o in out] == [(1, 24, 3), (0, 24, 3), (2, 24, 3)]
    assert all(o.dtype == np.float32 and np.isfinite(o).all() for o in out)


def _standing_person_in_crop(side: int, n_points: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A person 1.7 m tall about 4 m in front of a crop camera: (crop pixels, root-relative, absolute metres)."""
    focal = side / 2.2 * 4.0  # the 2.2 m box fills the crop at 4 m
    # Head to feet for the vertex subset and again for the last 24 (the joints the API returns).
    heights = torch.cat([torch.linspace(-0.85, 0.85, n_points - 24), torch.linspace(-0.85, 0.85, 24)])
    sideways = 0.2 * torch.sin(torch.arange(n_points, dtype=torch.float32))
    absolute = torch.stack([sideways, heights, torch.full_like(heights, 4.0) + 0.1 * torch.cos(heights)], dim=-1)
    pixels = absolute[:, :2] / absolute[:, 2:] * focal + side / 2
    relative = absolute - absolute.mean(0)
    return pixels[None], relative[None], absolute[None]


def test_absolute_solve_recovers_the_depth_of_a_planted_person():
    side = 384
    pixels, relative, truth = _standing_person_in_crop(side, 40)
    focal = side / 2.2 * 4.0
    k = torch.tensor([[[focal, 0, side / 2], [0, focal, side / 2], [0, 0, 1]]])
    absolute = reconstruct_absolute(pixels, relative, torch.ones(1, 40, dtype=torch.bool), k, side=side, stride=32,
                                    centered_stride=True, mix_3d_inside_fov=0.5)
    torch.testing.assert_close(absolute, truth, atol=1e-3, rtol=0)


def test_crop_camera_looks_at_the_box_centre():
    k = intrinsics_from_fov(480, 640)[None]
    boxes = torch.tensor([[400.0, 100, 500, 400]])
    rotation, crop_k = crop_cameras(boxes, k, 384)
    optical_axis = rotation[0].T @ torch.tensor([0.0, 0, 1])
    centre = k[0] @ optical_axis
    torch.testing.assert_close(centre[:2] / centre[2], torch.tensor([450.0, 250.0]))
    # The box's long side (300 px near the centre of view) fills the crop.
    assert crop_k[0, 0, 0] / k[0, 0, 0] == pytest.approx(384 / 300, rel=0.03)


def test_head_decodes_a_planted_peak_to_its_cell_centre_and_depth_bin(nlf):
    head = nlf.crop_model.heatmap_head
    features = torch.zeros(1, 512, 12, 12)
    features[0, 0, 7, 3] = 1.0  # row 7, column 3
    filters = torch.zeros(1, 513, 10)
    filters[0, 0, 1] = 60.0  # xy heatmap follows channel 0
    filters[0, 0, 2 + 5] = 60.0  # depth bin 5 lights up at the same cell
    pixels, relative, uncertainty = head.decode(features, filters)
    torch.testing.assert_close(pixels[0, 0], torch.tensor([3 / 11 * 352 + 16, 7 / 11 * 352 + 16]), atol=0.1, rtol=0)
    assert relative[0, 0, 2].item() == pytest.approx(5 / 7 * 2.2, abs=0.01)
    assert uncertainty[0, 0].item() == pytest.approx(math.log(2) + 0.001, abs=1e-3)


def test_centred_box_gives_positive_depth_and_projects_near_the_box_centre(nlf, monkeypatch):
    """The network's prediction is planted (no real weights); crops, solve and rotation back are real."""
    head = nlf.crop_model.heatmap_head
    n_points = len(nlf.canonical_points)

    def planted_decode(features, filters):
        pixels, relative, _ = _standing_person_in_crop(384, n_points)
        batch = features.shape[0]
        return pixels.expand(batch, -1, -1), relative.expand(batch, -1, -1), torch.full((batch, n_points), 0.1)

    monkeypatch.setattr(head, "decode", planted_decode)
    height, width = 120, 160
    frames = np.zeros((1, height, width, 3), np.uint8)
    box = np.array([[60.0, 20, 100, 100]])
    joints = nlf.joints_for_boxes(frames, [box])[0][0]
    assert (joints[:, 2] > 0).all()
    k = intrinsics_from_fov(height, width).numpy()
    projected = joints @ k.T
    uv = projected[:, :2] / projected[:, 2:]
    np.testing.assert_allclose(uv.mean(0), [80.0, 60.0], atol=4.0)
    assert joints[:, 2].mean() > 1000  # millimetres, a person metres away


def test_double_linear_light_darkens_the_input(nlf_root):
    frames = np.full((1, 4, 4, 3), 128, np.uint8)
    single = load_nlf(nlf_root / NLF_WEIGHTS_FILE, nlf_root / NLF_META_FILE, CPU)
    double = load_nlf(nlf_root / NLF_WEIGHTS_FILE, nlf_root / NLF_META_FILE, CPU, double_linear_light=True)
    value = (128 / 255) ** 2.2
    assert single.linear_light(frames)[0, 0, 0, 0].item() == pytest.approx(value, rel=1e-5)
    assert double.linear_light(frames)[0, 0, 0, 0].item() == pytest.approx(value**2.2, rel=1e-5)


def test_missing_weights_file_is_named(nlf_root, tmp_path):
    with pytest.raises(VolumeFileError, match="missing") as info:
        load_nlf(tmp_path / "absent.safetensors", nlf_root / NLF_META_FILE, CPU)
    assert "absent.safetensors" in str(info.value)


def test_truncated_weights_file_is_named(nlf_root, tmp_path):
    data = (nlf_root / NLF_WEIGHTS_FILE).read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VolumeFileError, match="truncated") as info:
        load_nlf(cut, nlf_root / NLF_META_FILE, CPU)
    assert "cut.safetensors" in str(info.value)


def test_file_without_head_keys_is_named(nlf_root, tmp_path):
    state = load_file(str(nlf_root / NLF_WEIGHTS_FILE))
    wrong = tmp_path / "wrong.safetensors"
    save_file({k: v for k, v in state.items() if ".heatmap_head.layer." not in k}, str(wrong))
    with pytest.raises(VolumeFileError, match="heatmap_head.layer") as info:
        load_nlf(wrong, nlf_root / NLF_META_FILE, CPU)
    assert "wrong.safetensors" in str(info.value)


def test_unreadable_meta_json_is_named(nlf_root, tmp_path):
    meta = tmp_path / "bad.meta.json"
    meta.write_text(json.dumps(["not", "an", "object"]))
    with pytest.raises(VolumeFileError) as info:
        load_nlf(nlf_root / NLF_WEIGHTS_FILE, meta, CPU)
    assert "bad.meta.json" in str(info.value)
