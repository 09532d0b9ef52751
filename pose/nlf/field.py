"""NLF's weight field: canonical body points -> per-point 1x1 conv filters for the localizer head."""

from __future__ import annotations

import math

import torch
from torch import nn


class LearnableFourier(nn.Module):
    """x -> [sin(Wx), cos(Wx)] with a learnt W [out/2, 3] (key `linear.weight`, no bias)."""

    def __init__(self, n_in: int, n_half: int):
        super().__init__()
        self.linear = nn.Linear(n_in, n_half, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.linear(x)
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)


class GPSNet(nn.Module):
    """Global point signature network: a normalised 3D point -> an embedding of `out_dim`."""

    def __init__(self, n_half_fourier: int, hidden_dim: int, out_dim: int):
        super().__init__()
        self.learnable_fourier = LearnableFourier(3, n_half_fourier)
        self.mlp = nn.Sequential(nn.Linear(2 * n_half_fourier, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        # Bounding box of the canonical body, stored in the checkpoint (the defaults here are placeholders).
        self.register_buffer("mini", torch.zeros(3))
        self.register_buffer("maxi", torch.ones(3))
        self.register_buffer("center", torch.zeros(3))
        self.scale = 1.0 / math.sqrt(2 * n_half_fourier)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points [..., 3] (metres, canonical pose) -> [..., out_dim]."""
        normalised = (points - self.center) / (self.maxi - self.mini)
        return self.mlp(self.learnable_fourier(normalised) * self.scale)


class WeightField(nn.Module):
    """Canonical points [P, 3] -> filters [P, link_dim + 1, 2 + depth]: weights plus one bias row."""

    def __init__(self, n_half_fourier: int, gps_hidden: int, posenc_dim: int, pred_hidden: int, link_dim: int,
                 n_out: int):
        super().__init__()
        self.gps_net = GPSNet(n_half_fourier, gps_hidden, posenc_dim)
        self.pred_mlp = nn.Sequential(
            nn.Linear(posenc_dim, pred_hidden), nn.GELU(), nn.Linear(pred_hidden, (link_dim + 1) * n_out)
        )
        self.register_buffer("r_sqrt_eigva", torch.ones(posenc_dim))
        self.link_dim = link_dim
        self.n_out = n_out

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], n_out: int) -> WeightField:
        """Sizes from the tensors under `heatmap_head.weight_field.` (keys given without that prefix)."""
        pred_out, pred_hidden = state["pred_mlp.2.weight"].shape
        return cls(
            n_half_fourier=state["gps_net.learnable_fourier.linear.weight"].shape[0],
            gps_hidden=state["gps_net.mlp.0.weight"].shape[0],
            posenc_dim=state["gps_net.mlp.2.weight"].shape[0],
            pred_hidden=pred_hidden,
            link_dim=pred_out // n_out - 1,
            n_out=n_out,
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points [P, 3] -> [P, link_dim + 1, n_out]."""
        embedding = self.gps_net(points) * self.r_sqrt_eigva * 0.1
        return self.pred_mlp(embedding).unflatten(-1, (self.link_dim + 1, self.n_out))
