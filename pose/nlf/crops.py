"""Perspective crops for NLF: each box seen by a virtual camera turned towards it, 384x384 pixels.

Sampling is bilinear from a 3-level box-filter pyramid (the level whose resolution is closest above the
crop's), as in NLF. The image outside the person box is black, as when SCAIL pastes the box region on a
black frame; outside the image it is white when `pad_white_pixels` (NLF's training-time padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pose.nlf.geometry import to_homogeneous

PYRAMID_LEVELS = 3


def _corner_aligned_scale(factor: float, device: torch.device) -> torch.Tensor:
    """Pixel mapping of a resize by `factor` that keeps the outer pixel corners aligned."""
    shift = (factor - 1.0) / 2.0
    return torch.tensor([[factor, 0.0, shift], [0.0, factor, shift], [0.0, 0.0, 1.0]], device=device)


def _source_pixels(inv_projection: torch.Tensor, intrinsics: torch.Tensor, side: int) -> torch.Tensor:
    """Source-image pixel [B, side, side, 2] seen by every crop pixel; inv_projection = (K' R)^-1 [B, 3, 3]."""
    device = inv_projection.device
    axis = torch.arange(side, device=device, dtype=inv_projection.dtype)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1)  # [side, side, (x, y)]
    rays = to_homogeneous(grid).reshape(1, -1, 3) @ inv_projection.mT  # [B, side*side, 3]
    source = (rays / rays[..., 2:]) @ intrinsics.mT
    return source[..., :2].reshape(-1, side, side, 2)


def warp_crops(images: torch.Tensor, image_ids: torch.Tensor, boxes: torch.Tensor, intrinsics: torch.Tensor,
               rotation: torch.Tensor, crop_intrinsics: torch.Tensor, *, side: int,
               pad_white: bool) -> torch.Tensor:
    """Crops [B, 3, side, side] in [0, 1] (linear light).

    images [F, 3, H, W] linear light in [0, 1]; image_ids [B] index into images; boxes [B, 4] xyxy;
    intrinsics [3, 3] of the frames; rotation, crop_intrinsics [B, 3, 3] from `crop_cameras`.
    """
    height, width = images.shape[-2:]
    device, dtype = images.device, images.dtype
    inv_projection = torch.linalg.inv(crop_intrinsics @ rotation)
    zoom = crop_intrinsics[:, 0, 0] / intrinsics[0, 0]
    levels = torch.floor(-torch.log2(zoom)).clamp(0, PYRAMID_LEVELS - 1).long()

    # Inverted so that zero padding of grid_sample turns into white after inverting back.
    pyramid = [1.0 - images if pad_white else images]
    for _ in range(1, PYRAMID_LEVELS):
        pyramid.append(F.avg_pool2d(pyramid[-1], 2, 2))

    crops = torch.empty((len(boxes), 3, side, side), device=device, dtype=dtype)
    for level in levels.unique().tolist():
        chosen = (levels == level).nonzero()[:, 0]
        level_k = _corner_aligned_scale(0.5**level, device) @ intrinsics
        source = _source_pixels(inv_projection[chosen], level_k, side)
        level_image = pyramid[level]
        size = torch.tensor([level_image.shape[-1] - 1, level_image.shape[-2] - 1], device=device)
        grid = (source * (2.0 / size) - 1.0).to(dtype)
        crops[chosen] = F.grid_sample(level_image[image_ids[chosen]], grid, mode="bilinear", padding_mode="zeros",
                                      align_corners=True)
    if pad_white:
        crops = 1.0 - crops

    # Black outside the person box but inside the frame.
    source = _source_pixels(inv_projection, intrinsics, side)
    x, y = source.unbind(-1)
    b = boxes[:, :, None, None]
    in_box = (x >= b[:, 0]) & (x <= b[:, 2]) & (y >= b[:, 1]) & (y <= b[:, 3])
    in_image = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    crops = crops.masked_fill((in_image & ~in_box)[:, None], 0.0)
    return crops.clamp(0.0, 1.0)
