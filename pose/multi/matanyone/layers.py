"""Small building blocks of MatAnyone (names follow the checkpoint keys).

"Group" tensors carry an object axis: (B, N, C, H, W). Convolutions on them fold N into the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def resize_groups(g: torch.Tensor, ratio: float, mode: str) -> torch.Tensor:
    """(B, N, C, H, W) resized by `ratio` (bilinear without corner alignment, or area)."""
    out = F.interpolate(g.flatten(0, 1), scale_factor=ratio, mode=mode, align_corners=False if mode == "bilinear" else None)
    return out.unflatten(0, g.shape[:2])


class GConv2d(nn.Conv2d):
    """A Conv2d applied to each object of a (B, N, C, H, W) tensor."""

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return super().forward(g.flatten(0, 1)).unflatten(0, g.shape[:2])


class GroupResBlock(nn.Module):
    """Pre-activation residual block on group tensors; a 1x1 `downsample` when the width changes."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.downsample = nn.Identity() if in_dim == out_dim else GConv2d(in_dim, out_dim, kernel_size=1)
        self.conv1 = GConv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv2 = GConv2d(out_dim, out_dim, kernel_size=3, padding=1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(g)))) + self.downsample(g)


class CAResBlock(nn.Module):
    """Pre-activation residual block with efficient channel attention (a 1D conv over pooled channels)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1)
        # ECA kernel: the odd number nearest to (log2(C) + 1) / 2, rounded up
        t = int((abs(math.log2(out_dim)) + 1) // 2)
        k = t if t % 2 else t + 1
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.downsample = nn.Identity() if in_dim == out_dim else nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) -> (B, out_dim, H, W)."""
        y = self.conv2(F.relu(self.conv1(F.relu(x))))
        weights = self.conv(self.pool(y).flatten(1).unsqueeze(1)).sigmoid()  # (B, 1, C)
        return y * weights.transpose(1, 2).unsqueeze(-1) + self.downsample(x)


class MainToGroupDistributor(nn.Module):
    """Combines a shared (B, C, H, W) tensor with every object of a group tensor: add or channel-concat."""

    def __init__(self, x_transform: nn.Module | None = None, g_transform: nn.Module | None = None,
                 method: str = "cat"):  # fmt: skip
        super().__init__()
        self.x_transform = x_transform
        self.g_transform = g_transform
        self.method = method

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.x_transform is not None:
            x = self.x_transform(x)
        if self.g_transform is not None:
            g = self.g_transform(g)
        x = x.unsqueeze(1).expand(-1, g.shape[1], -1, -1, -1)
        return torch.cat([x, g], 2) if self.method == "cat" else x + g


class GroupFeatureFusionBlock(nn.Module):
    """Projects the shared and per-object features to `out_dim`, adds them, refines with two CA blocks."""

    def __init__(self, x_in_dim: int, g_in_dim: int, out_dim: int):
        super().__init__()
        self.distributor = MainToGroupDistributor(nn.Conv2d(x_in_dim, out_dim, kernel_size=1),
                                                  GConv2d(g_in_dim, out_dim, kernel_size=1), method="add")
        self.block1 = CAResBlock(out_dim, out_dim)
        self.block2 = CAResBlock(out_dim, out_dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x (B, Cx, H, W), g (B, N, Cg, H, W) -> (B, N, out_dim, H, W)."""
        g = self.distributor(x, g)
        return self.block2(self.block1(g.flatten(0, 1))).unflatten(0, g.shape[:2])


def gru_update(hidden: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sensory-memory GRU step: `values` holds forget, update and candidate gates along dim 2 (3 x hidden)."""
    forget, update, candidate = values.chunk(3, dim=2)
    return forget.sigmoid() * hidden * (1 - update.sigmoid()) + update.sigmoid() * candidate.tanh()


class SensoryDeepUpdater(nn.Module):
    """Updates the sensory memory from the mask encoder's per-object value."""

    def __init__(self, value_dim: int, sensory_dim: int):
        super().__init__()
        self.transform = GConv2d(value_dim + sensory_dim, sensory_dim * 3, kernel_size=3, padding=1)

    def forward(self, g: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        return gru_update(hidden, self.transform(torch.cat([g, hidden], 2)))


class PositionalEncoding(nn.Module):
    """2D sine encoding over positions normalised to [0, scale]: x frequencies in the first half of the channels,
    y in the second, sin/cos interleaved. `inv_freq` is a saved buffer (part of the checkpoint)."""

    def __init__(self, dim: int, scale: float, temperature: float):
        super().__init__()
        half = int(math.ceil(dim / 4) * 2)
        self.scale = scale
        self.register_buffer("inv_freq", 1.0 / temperature ** (torch.arange(0, half, 2).float() / half))

    @staticmethod
    def _axis(length: int, inv_freq: torch.Tensor, scale: float) -> torch.Tensor:
        pos = torch.arange(length, device=inv_freq.device, dtype=inv_freq.dtype)
        pos = pos / (pos[-1] + 1e-6) * scale
        angles = pos[:, None] * inv_freq[None]
        return torch.stack([angles.sin(), angles.cos()], -1).flatten(1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """(H, W, dim) encoding, channels last."""
        emb_x = self._axis(width, self.inv_freq, self.scale)
        emb_y = self._axis(height, self.inv_freq, self.scale)
        return torch.cat([emb_x[None].expand(height, -1, -1), emb_y[:, None].expand(-1, width, -1)], -1)
