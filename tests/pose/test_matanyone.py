"""MatAnyone v1: checkpoint layout, loading, working memory, the propagation schedule and its wiring into pose.multi."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torchvision.models import resnet18, resnet50

from common.errors import InputError, VolumeFileError
from pose.files import MATANYONE_FILE
from pose.multi import load_multi, segment_persons
from pose.multi.matanyone import MatAnyone, MatAnyoneConfig, load_matanyone, propagate_masks
from pose.multi.matanyone.inference import PropagationSession, pad_amounts, stagger_steps, unpad
from pose.multi.matanyone.memory import similarity, top_k_softmax
from tools.volume.mask_files import MATANYONE_CONFIGS

CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def model(mask_root) -> MatAnyone:
    return load_matanyone(mask_root / MATANYONE_FILE, CPU)


@pytest.fixture(scope="session")
def full_keys() -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in MatAnyone(MatAnyoneConfig()).state_dict().items()}


def clip(frames: int = 3, height: int = 70, width: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random frames and two rectangular person masks, sizes not multiples of 16."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    masks = np.zeros((2, height, width), bool)
    masks[0, 10:60, 5:40] = True
    masks[1, 15:65, 50:85] = True
    return video, masks


# --- layout -------------------------------------------------------------------------------------------------


def test_published_config_has_562_tensors_and_35_3m_values(full_keys):
    """35.3M counts everything in the file; the learnable parameters alone are 35.25M (BN statistics aside)."""
    with torch.device("meta"):
        params = sum(p.numel() for p in MatAnyone(MatAnyoneConfig()).parameters())
    assert len(full_keys) == 562
    assert round(sum(s.numel() for s in full_keys.values()) / 1e5) == 353
    assert round(params / 1e4) == 3525
    groups = {k.split(".")[0] for k in full_keys}
    assert groups == {"pixel_encoder", "pix_feat_proj", "key_proj", "mask_encoder", "mask_decoder", "pixel_fuser",
                      "object_transformer", "object_summarizer", "aux_computer", "temp_sparity"}
    assert {"mask_decoder.pred_seg.weight", "mask_decoder.pred_mat.weight", "aux_computer.sensory_aux.projection.weight"
            } <= set(full_keys)  # fmt: skip


def test_encoders_are_torchvision_resnet50_and_4_channel_resnet18_trunks(full_keys):
    """pixel_encoder = resnet50 conv1..layer3 (layer1 named res2); mask_encoder = resnet18 conv1..layer3, 4 inputs."""
    with torch.device("meta"):
        r50, r18 = resnet50().state_dict(), resnet18().state_dict()
    trunk = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
    expected = {"pixel_encoder." + k.replace("layer1.", "res2.", 1): v.shape for k, v in r50.items() if k.startswith(trunk)}
    expected |= {"mask_encoder." + k: v.shape for k, v in r18.items() if k.startswith(trunk)}
    expected["mask_encoder.conv1.weight"] = torch.Size([64, 4, 7, 7])
    assert {k: full_keys[k] for k in expected} == expected
    assert not any(k.startswith(("pixel_encoder.layer1.", "pixel_encoder.layer4.", "mask_encoder.layer4."))
                   for k in full_keys)  # fmt: skip


def test_tiny_file_keeps_every_key_name_with_smaller_tensors(mask_root, full_keys):
    state = load_file(str(mask_root / MATANYONE_FILE))
    assert set(state) == set(full_keys)
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert sum(v.numel() for v in state.values()) < 2_000_000


def test_loader_reads_the_sizes_from_the_tensors(model):
    assert model.config == MATANYONE_CONFIGS["tiny"]
    assert model.config.ms_dims == (128, 64, 32, 8, 3)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert not model.training


def test_config_json_beside_the_file_sets_heads_and_memory(mask_root, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((mask_root / MATANYONE_FILE).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"mem_every": 3, "top_k": 12,
                                                      "model": {"object_transformer": {"num_heads": 4}}}))
    loaded = load_matanyone(tmp_path / "model.safetensors", CPU)
    assert (loaded.config.mem_every, loaded.config.top_k, loaded.config.num_heads) == (3, 12, 4)
    assert loaded.object_transformer.blocks[0].self_attn.self_attn.num_heads == 4


def test_long_term_memory_config_is_refused_with_the_file_named(mask_root, tmp_path):
    (tmp_path / "model.safetensors").write_bytes((mask_root / MATANYONE_FILE).read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"use_long_term": True}))
    with pytest.raises(VolumeFileError, match="config.json.*use_long_term"):
        load_matanyone(tmp_path / "model.safetensors", CPU)


def test_missing_tensor_is_named_with_the_file(mask_root, tmp_path):
    state = load_file(str(mask_root / MATANYONE_FILE))
    wrong = tmp_path / "no_decoder.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("mask_decoder.")}, str(wrong))
    with pytest.raises(VolumeFileError, match="(?s)no_decoder.safetensors.*mask_decoder"):
        load_matanyone(wrong, CPU)


def test_wrong_tensor_shape_is_named_with_the_file(mask_root, tmp_path):
    state = load_file(str(mask_root / MATANYONE_FILE))
    state["temp_sparity.conv3x3.weight"] = torch.zeros(32, 64, 1, 1)
    wrong = tmp_path / "bad_shape.safetensors"
    save_file(state, str(wrong))
    with pytest.raises(VolumeFileError, match="(?s)bad_shape.safetensors.*temp_sparity.conv3x3"):
        load_matanyone(wrong, CPU)


# --- memory ---------------------------------------------------------------------------------------------------


def test_similarity_is_the_shrunk_selection_weighted_negative_distance():
    gen = torch.Generator().manual_seed(0)
    mk, qk = torch.randn(1, 4, 5, generator=gen), torch.randn(1, 4, 3, generator=gen)
    ms, qe = torch.rand(1, 1, 5, generator=gen) + 1, torch.rand(1, 4, 3, generator=gen)
    direct = torch.empty(1, 5, 3)
    for m in range(5):
        for p in range(3):
            direct[0, m, p] = -(qe[0, :, p] * (mk[0, :, m] - qk[0, :, p]) ** 2).sum() * ms[0, 0, m] / 2.0
    torch.testing.assert_close(similarity(mk, ms, qk, qe), direct)


def test_top_k_softmax_keeps_only_the_best_entries():
    scores = torch.tensor([[[3.0], [1.0], [2.0], [0.0]]])
    affinity = top_k_softmax(scores, 2)
    expected = torch.softmax(torch.tensor([3.0, 2.0]), 0)
    torch.testing.assert_close(affinity[0, :, 0], torch.tensor([expected[0], 0.0, expected[1], 0.0]))
    torch.testing.assert_close(top_k_softmax(scores, 30)[0, :, 0], torch.softmax(scores[0, :, 0], 0))


def run_session(model: MatAnyone, steps: int) -> list[int]:
    """Memory frame counts after each normal step following the warmup."""
    gen = torch.Generator().manual_seed(1)
    session = PropagationSession(model)
    first = torch.rand(1, 3, 32, 48, generator=gen)
    session.start(first, (torch.rand(1, 1, 32, 48, generator=gen) > 0.5).float())
    for _ in range(model.config.warmup_frames + 1):
        session.step(first, first_frame=True)
    permanent = session.memory.key[..., : session.memory.tokens_per_frame].clone()
    counts = []
    for _ in range(steps):
        session.step(torch.rand(1, 3, 32, 48, generator=gen))
        counts.append(session.memory.frames)
        torch.testing.assert_close(session.memory.key[..., : session.memory.tokens_per_frame], permanent)
    return counts


def test_memory_adds_a_frame_every_mem_every_steps_up_to_max_mem_frames(model):
    """First-frame memory is permanent; a frame joins every 5 steps; the FIFO holds 5 frames in all."""
    counts = run_session(model, 32)
    assert counts[:12] == [1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3]
    assert max(counts) == model.config.max_mem_frames == 5
    assert counts[-1] == 5


def test_sensory_updates_are_staggered_over_the_memory_interval():
    assert stagger_steps(5, 5) == {1, 2, 3, 4, 5}
    assert stagger_steps(5, 3) == {1, 3, 5}


# --- preprocessing --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(70, 90), (64, 48), (17, 33)])
def test_padding_to_multiples_of_16_is_centred_and_undone_exactly(height, width):
    left, right, top, bottom = pad = pad_amounts(height, width)
    assert (height + top + bottom) % 16 == 0 and (width + left + right) % 16 == 0
    assert 0 <= bottom - top <= 1 and 0 <= right - left <= 1
    x = torch.rand(2, height, width)
    torch.testing.assert_close(unpad(F.pad(x, pad), pad), x, rtol=0, atol=0)


def test_frames_are_padded_with_zeros_then_imagenet_normalised(model):
    video, masks = clip(frames=1, height=20, width=24)
    seen = []
    hook = model.pixel_encoder.conv1.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    try:
        propagate_masks(model, video, masks)
    finally:
        hook.remove()
    image = F.pad(torch.from_numpy(video[0]).permute(2, 0, 1).float() / 255, pad_amounts(20, 24))
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert seen[0].shape == (1, 3, 32, 32)
    torch.testing.assert_close(seen[0][0], (image - mean) / std)


def test_max_internal_size_runs_the_model_smaller_and_returns_full_size_alphas(model):
    small = copy.deepcopy(model)
    small.config = dataclasses.replace(model.config, max_internal_size=32)
    video, masks = clip(frames=2, height=48, width=64)
    seen = []
    small.pixel_encoder.conv1.register_forward_pre_hook(lambda _, args: seen.append(args[0].shape))
    alpha = propagate_masks(small, video, masks)
    assert seen[0] == (1, 3, 32, 48)  # 32 x 42 padded to 32 x 48
    assert alpha.shape == (2, 2, 48, 64)


# --- propagation ----------------------------------------------------------------------------------------------


def test_propagation_returns_an_alpha_per_person_and_frame(model):
    video, masks = clip()
    alpha = propagate_masks(model, video, masks)
    assert alpha.shape == (2, 3, 70, 90) and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0


def test_propagation_is_deterministic(model):
    video, masks = clip()
    np.testing.assert_array_equal(propagate_masks(model, video, masks), propagate_masks(model, video, masks))


def test_persons_are_independent_batch_items(model):
    video, masks = clip()
    both = propagate_masks(model, video, masks)
    np.testing.assert_allclose(propagate_masks(model, video, masks[1:])[0], both[1], atol=1e-5)


def test_the_given_mask_drives_the_first_prediction(model):
    """Random weights wash the mask out over the warm-up; one first-frame step must still depend on it."""
    video, masks = clip(frames=1, height=32, width=48)
    image = torch.from_numpy(video[0]).permute(2, 0, 1)[None].float() / 255
    session = PropagationSession(model)
    session.start(image, torch.from_numpy(masks[:, :32, :48]).float()[:, None])
    alpha = session.step(image, first_frame=True)
    assert (alpha[0] - alpha[1]).abs().max() > 1e-4


def test_mismatched_masks_are_refused(model):
    video, masks = clip()
    with pytest.raises(InputError, match="masks"):
        propagate_masks(model, video, masks[:, :10])


# --- wiring into pose.multi -----------------------------------------------------------------------------------


class BrightRegionSegmenter:
    """Stand-in for SAM's weights: the bright pixels inside the prompt box; records the frames it saw."""

    def __init__(self):
        self.images = []

    def set_image(self, image: np.ndarray) -> None:
        self.images.append(image)

    def segment(self, box: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        x0, y0, x1, y1 = np.round(box).astype(int)
        mask = np.zeros(self.images[-1].shape[:2], bool)
        mask[y0 : y1 + 1, x0 : x1 + 1] = self.images[-1][y0 : y1 + 1, x0 : x1 + 1, 0] > 128
        return mask


def test_segment_persons_propagates_sams_first_frame_masks_with_matanyone(model):
    video, _ = clip()
    boxes = np.array([[5.0, 10, 40, 60], [50, 15, 85, 65]])
    segmenter = BrightRegionSegmenter()
    alpha = segment_persons(video, boxes, [np.zeros((0, 2)), np.zeros((0, 2))], segmenter, matting=model)
    assert len(segmenter.images) == 1 and np.shares_memory(segmenter.images[0], video[0])
    first = np.stack([_bright(video[0], b) for b in boxes])
    np.testing.assert_array_equal(alpha, propagate_masks(model, video, first))


def _bright(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    segmenter = BrightRegionSegmenter()
    segmenter.set_image(image)
    return segmenter.segment(box)


def test_load_multi_composites_each_person_from_the_volume(mask_root):
    models = load_multi(mask_root, CPU)
    assert isinstance(models.matting, MatAnyone)
    video, _ = clip(frames=2, height=48, width=64)
    out = models.composite_persons(video, np.array([[4.0, 4, 30, 44], [34, 4, 60, 44]]), [np.zeros((0, 2))] * 2)
    assert out.shape == (2, 2, 48, 64, 3) and out.dtype == np.uint8
