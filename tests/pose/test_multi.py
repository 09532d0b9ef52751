"""Multi-person masks: SAM from the fp16 file, mask propagation through a clip, flat-colour composite."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from segment_anything.build_sam import _build_sam

from common.errors import VolumeFileError
from pose.files import MATANYONE_FILE, SAM_FILE
from pose.multi import MaskModels, composite_person, load_sam, segment_persons
from pose.multi.propagation import BACKGROUND_RGB

CPU = torch.device("cpu")


@pytest.fixture(scope="session")
def mask_models(mask_root) -> MaskModels:
    return MaskModels.from_files(mask_root / SAM_FILE, CPU)


def test_sam_file_is_fp16_with_meta_keys(mask_root):
    """Prompt encoder and mask decoder as in ViT-H; the tiny encoder has 2 of ViT-H's 32 blocks."""
    state = load_file(str(mask_root / SAM_FILE))
    with torch.device("meta"):
        vit_h = _build_sam(1280, 32, 16, [7, 15, 23, 31]).state_dict()
    assert len(vit_h) == 594
    assert all(v.dtype == torch.float16 for v in state.values())
    assert {k for k in state if not k.startswith("image_encoder.")} == {
        k for k in vit_h if not k.startswith("image_encoder.")
    }
    assert {k for k in state if k.startswith("image_encoder.")} == {
        k for k in vit_h if k.startswith("image_encoder.") and not k.startswith("image_encoder.blocks.")
        or k.startswith(("image_encoder.blocks.0.", "image_encoder.blocks.1."))
    }


def test_sam_loads_in_float32_with_encoder_size_from_tensors(mask_root):
    sam = load_sam(mask_root / SAM_FILE, CPU)
    encoder = sam.image_encoder
    assert encoder.patch_embed.proj.out_channels == 64 and len(encoder.blocks) == 2
    assert encoder.blocks[0].window_size == 14 and encoder.blocks[1].window_size == 0
    assert encoder.blocks[0].attn.num_heads == 2
    assert all(p.dtype == torch.float32 for p in sam.parameters())


def test_sam_box_prompt_returns_a_mask_of_the_image_size(mask_models):
    image = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    mask_models.segmenter.set_image(image)
    mask = mask_models.segmenter.segment(np.array([10.0, 5, 50, 55]), np.array([[30.0, 30]]))
    assert mask.shape == (60, 80) and mask.dtype == bool


def test_sam_file_with_missing_keys_is_named(mask_root, tmp_path):
    state = load_file(str(mask_root / SAM_FILE))
    wrong = tmp_path / "not_sam.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith("mask_decoder.")}, str(wrong))
    with pytest.raises(VolumeFileError, match="not_sam.safetensors"):
        load_sam(wrong, CPU)


def test_matanyone_file_is_written_with_its_key_names(mask_root):
    assert "pix_feat_proj.weight" in load_file(str(mask_root / MATANYONE_FILE))


def test_propagation_with_sam_returns_alpha_per_person_and_frame(mask_models):
    frames = np.random.default_rng(1).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    boxes = np.array([[5.0, 5, 30, 45], [35, 5, 60, 45]])
    points = [np.array([[17.0, 25]]), np.zeros((0, 2))]
    alpha = segment_persons(frames, boxes, points, mask_models.segmenter)
    assert alpha.shape == (2, 2, 48, 64) and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0


class BrightRegionSegmenter:
    """Stand-in for SAM's weights: the bright pixels inside the prompt box."""

    def set_image(self, image: np.ndarray) -> None:
        self.image = image

    def segment(self, box: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        x0, y0, x1, y1 = np.round(box).astype(int)
        mask = np.zeros(self.image.shape[:2], bool)
        mask[y0 : y1 + 1, x0 : x1 + 1] = self.image[y0 : y1 + 1, x0 : x1 + 1, 0] > 128
        return mask


def test_propagation_follows_a_moving_person():
    frames = np.zeros((6, 40, 80, 3), np.uint8)
    for t in range(6):
        frames[t, 10:30, 10 + 2 * t : 20 + 2 * t] = 255  # moves a fifth of its width right per frame
    alpha = segment_persons(frames, np.array([[8.0, 8, 22, 32]]), [np.array([[15.0, 20]])], BrightRegionSegmenter())
    for t in range(6):
        np.testing.assert_array_equal(alpha[0, t], frames[t, :, :, 0] / 255)


def test_propagation_refuses_mismatched_prompts():
    from common.errors import InputError

    with pytest.raises(InputError, match="boxes"):
        segment_persons(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((2, 4)), [np.zeros((0, 2))],
                        BrightRegionSegmenter())


def test_composite_puts_the_person_over_the_flat_colour():
    frames = np.full((1, 2, 2, 3), 10, np.uint8)
    alpha = np.array([[[1.0, 0.0], [0.5, 0.0]]], np.float32)
    out = composite_person(frames, alpha)
    np.testing.assert_array_equal(out[0, 0, 0], [10, 10, 10])
    np.testing.assert_array_equal(out[0, 0, 1], BACKGROUND_RGB)
    np.testing.assert_array_equal(out[0, 1, 0], np.rint((np.array(BACKGROUND_RGB) + 10) / 2))
