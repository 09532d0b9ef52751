"""SAM (segment-anything) from `mask/sam_vit_h_4b8939_fp16.safetensors`, prompted by a box and points.

The file holds Meta's ViT-H keys in fp16. The encoder size is read from the tensors (embed dim from the
patch embedding, depth from the block count, heads from the relative-position width, global-attention
blocks from their longer relative-position tables), so the tiny test file loads through the same path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.build_sam import _build_sam
from segment_anything.modeling import Sam

from common.errors import VolumeFileError
from common.files import load_safetensors_sequential
from pose.files import count_children

log = logging.getLogger(__name__)

ENCODER = "image_encoder."
WINDOW_SIZE = 14  # SAM's windowed blocks: relative-position tables of 2 * 14 - 1 rows


def _encoder_shape(state: dict[str, torch.Tensor]) -> tuple[int, int, int, list[int]]:
    """(embed dim, depth, heads, global-attention block indexes) of the image encoder in `state`."""
    embed_dim = state[f"{ENCODER}patch_embed.proj.weight"].shape[0]
    depth = count_children(state, f"{ENCODER}blocks.")
    head_dim = state[f"{ENCODER}blocks.0.attn.rel_pos_h"].shape[1]
    global_blocks = [i for i in range(depth)
                     if state[f"{ENCODER}blocks.{i}.attn.rel_pos_h"].shape[0] != 2 * WINDOW_SIZE - 1]
    return embed_dim, depth, embed_dim // head_dim, global_blocks


def load_sam(path: Path, device: torch.device) -> Sam:
    """The SAM model in float32 on `device`; VolumeFileError when the file does not fit SAM's layout."""
    path = Path(path)
    state, _ = load_safetensors_sequential(path)
    try:
        embed_dim, depth, heads, global_blocks = _encoder_shape(state)
    except KeyError as exc:
        raise VolumeFileError(path, f"missing key {exc.args[0]!r} (not a SAM checkpoint?)") from None
    with torch.device("meta"):
        sam = _build_sam(embed_dim, depth, heads, global_blocks)
    try:
        sam.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as exc:
        raise VolumeFileError(path, f"tensors do not match SAM's layout ({exc})") from None
    log.info("SAM loaded from %s: embed %d, depth %d, heads %d", path, embed_dim, depth, heads)
    return sam.to(device).eval()


class PersonSegmenter:
    """SAM predictor for one image at a time: box + positive points -> best of three masks."""

    def __init__(self, sam: Sam):
        self.predictor = SamPredictor(sam)

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        """image (H, W, 3) uint8 RGB; embeds it once for any number of prompts."""
        self.predictor.set_image(image, image_format="RGB")

    @torch.no_grad()
    def segment(self, box: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
        """box (4,) xyxy, points (K, 2) positive clicks or None -> (H, W) bool, the mask with the best
        predicted IoU of SAM's three."""
        has_points = points is not None and len(points) > 0
        masks, scores, _ = self.predictor.predict(
            point_coords=np.asarray(points, np.float32) if has_points else None,
            point_labels=np.ones(len(points), np.int64) if has_points else None,
            box=np.asarray(box, np.float32),
            multimask_output=True,
        )
        return masks[int(np.argmax(scores))]
