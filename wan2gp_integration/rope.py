"""3D rotary position embedding of Wan2.1, with SCAIL's placement of the pose tokens.

Each head's channels are split into a time, a height and a width part (44/42/42 for head_dim 128);
each part rotates interleaved channel pairs (2j, 2j+1) by position * theta^(-2j/part).

Video tokens sit on the grid t = 0..F-1 (t = 0 is the reference frame), h and w from 0.
Pose latent k shares t = 1 + k with video latent k. Its tokens are computed on the full-resolution
video grid shifted to w = 120.. and then 2x2 average-pooled (cos and sin separately), so the pooled
rotations are not unit-magnitude; they are applied the same way, x * cos + rot(x) * sin.
"""

from __future__ import annotations

from functools import lru_cache

import torch

THETA = 10000.0
POSE_W_OFFSET = 120


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of the (t, h, w) parts of one head: 44, 42, 42 for head_dim 128."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def _axis_angles(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[N] positions -> [N, dim] angles, each frequency repeated for its interleaved pair (float64)."""
    inv_freq = THETA ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.outer(positions.to(torch.float64), inv_freq).repeat_interleave(2, dim=1)


def grid_angles(head_dim: int, t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Angles of every token of the t x h x w grid given per-axis positions -> [T, H, W, head_dim] float64."""
    dt, dh, dw = axis_dims(head_dim)
    at, ah, aw = _axis_angles(t, dt), _axis_angles(h, dh), _axis_angles(w, dw)
    shape = (len(t), len(h), len(w))
    return torch.cat(
        [
            at[:, None, None].expand(*shape, dt),
            ah[None, :, None].expand(*shape, dh),
            aw[None, None, :].expand(*shape, dw),
        ],
        dim=-1,
    )


def video_cos_sin(head_dim: int, frames: int, h_tok: int, w_tok: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [frames*h_tok*w_tok, head_dim] (float64) of the video tokens, t = 0..frames-1."""
    angles = grid_angles(head_dim, torch.arange(frames), torch.arange(h_tok), torch.arange(w_tok))
    return angles.cos().flatten(0, 2), angles.sin().flatten(0, 2)


def pose_cos_sin(head_dim: int, pose_frames: int, h_tok: int, w_tok: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [pose_frames*(h_tok/2)*(w_tok/2), head_dim] (float64) of the pose tokens.

    h_tok, w_tok is the video token grid; the pose token grid is half of it on each side.
    """
    t = torch.arange(1, pose_frames + 1)
    w = torch.arange(POSE_W_OFFSET, POSE_W_OFFSET + w_tok)
    angles = grid_angles(head_dim, t, torch.arange(h_tok), w)
    return _pool2x2(angles.cos()).flatten(0, 2), _pool2x2(angles.sin()).flatten(0, 2)


def _pool2x2(grid: torch.Tensor) -> torch.Tensor:
    """[T, H, W, C] -> [T, H/2, W/2, C], mean over each 2x2 spatial window."""
    t, h, w, c = grid.shape
    return grid.view(t, h // 2, 2, w // 2, 2, c).mean(dim=(2, 4))


@lru_cache(maxsize=8)
def rope_tables(head_dim: int, video_grid: tuple[int, int, int], with_pose: bool, device: torch.device) -> torch.Tensor:
    """cos + i*sin per channel pair, [L, 1, head_dim/2] complex64 on `device`, for the layout [video | pose].

    video_grid is (frames, h_tok, w_tok) including the reference frame; with_pose appends the
    (frames-1) x h_tok/2 x w_tok/2 pose tokens. Cached per shape: computed once per generation.
    """
    frames, h_tok, w_tok = video_grid
    cos, sin = video_cos_sin(head_dim, frames, h_tok, w_tok)
    if with_pose:
        pose_cos, pose_sin = pose_cos_sin(head_dim, frames - 1, h_tok, w_tok)
        cos, sin = torch.cat([cos, pose_cos]), torch.cat([sin, pose_sin])
    # both channels of a pair share one value: keep one per pair
    return torch.complex(cos[:, ::2], sin[:, ::2]).to(device=device, dtype=torch.complex64)[:, None]


def apply_rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x [B, L, heads, head_dim] times freqs [L, 1, head_dim/2] per interleaved channel pair.

    (x0 + i*x1) * (cos + i*sin) is x*cos + rot(x)*sin with rot(x0, x1) = (-x1, x0); it holds for
    the pooled, non-unit pose values too. Computed in float32 like the reference (which rotates in
    float64 complex) and returned in x's dtype.
    """
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * freqs).flatten(-2).type_as(x)
