"""NLF's localizer head: backbone features -> per-point heatmaps -> 2D, relative 3D and uncertainty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pose.nlf.config import NLFConfig
from pose.nlf.field import WeightField
from pose.nlf.geometry import heatmap_to_image, heatmap_to_metric


class LocalizerHead(nn.Module):
    """`layer`: 1x1 conv -> BN -> SiLU on the backbone output; `weight_field`: point filters."""

    def __init__(self, in_channels: int, weight_field: WeightField, config: NLFConfig):
        super().__init__()
        self.config = config
        link = weight_field.link_dim
        self.layer = nn.Sequential(nn.Conv2d(in_channels, link, 1, bias=False), nn.BatchNorm2d(link, eps=1e-3),
                                   nn.SiLU())
        self.weight_field = weight_field

    def decode(self, features: torch.Tensor, filters: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """features [B, C, h, w] (after `layer`), filters [P, C + 1, 2 + depth] ->
        (crop pixels [B, P, 2], relative metric 3D [B, P, 3] in metres, uncertainty [B, P])."""
        cfg = self.config
        n_points, n_out = filters.shape[0], filters.shape[2]
        weight = filters[:, :-1].permute(0, 2, 1).reshape(n_points * n_out, -1, 1, 1)
        bias = filters[:, -1].reshape(-1)
        # Softmaxes and expectations in fp32 even when the backbone runs in fp16.
        logits = F.conv2d(features, weight, bias).float().unflatten(1, (n_points, n_out))
        uncertainty_map = logits[:, :, 0]
        xy_heatmap = logits[:, :, 1].flatten(2).softmax(-1).unflatten(2, logits.shape[-2:])
        depth_logits = logits[:, :, 2:]  # [B, P, depth, h, w]
        volume = depth_logits.flatten(2).softmax(-1).unflatten(2, depth_logits.shape[-3:])
        image_heatmap = volume.sum(dim=2)
        xy_metric = _expectation_xy(xy_heatmap)
        xy_pixel = _expectation_xy(image_heatmap)
        z = (volume.sum(dim=(3, 4)) * _unit_grid(volume.shape[2], volume)).sum(-1, keepdim=True)
        uncertainty = F.softplus((uncertainty_map * image_heatmap).sum(dim=(2, 3)) + cfg.uncert_bias)
        uncertainty = uncertainty + cfg.uncert_bias2
        pixels = heatmap_to_image(xy_pixel, cfg.proc_side, cfg.stride_test, cfg.centered_stride)
        relative3d = heatmap_to_metric(torch.cat([xy_metric, z], dim=-1), cfg.proc_side, cfg.stride_test,
                                       cfg.centered_stride, cfg.box_size_m)
        return pixels, relative3d, uncertainty


def _unit_grid(n: int, like: torch.Tensor) -> torch.Tensor:
    """n cell positions spread over [0, 1] (0.5 for a single cell)."""
    if n == 1:
        return torch.full((1,), 0.5, device=like.device, dtype=like.dtype)
    return torch.linspace(0.0, 1.0, n, device=like.device, dtype=like.dtype)


def _expectation_xy(heatmap: torch.Tensor) -> torch.Tensor:
    """[B, P, h, w] probabilities -> expected (x, y) in [0, 1], [B, P, 2]."""
    x = (heatmap.sum(dim=2) * _unit_grid(heatmap.shape[3], heatmap)).sum(-1)
    y = (heatmap.sum(dim=3) * _unit_grid(heatmap.shape[2], heatmap)).sum(-1)
    return torch.stack([x, y], dim=-1)
