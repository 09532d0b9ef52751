"""3D RoPE checked from first principles: angle = position * 10000^(-2j/part) per interleaved pair."""

from __future__ import annotations

import math

import torch

from wan2gp_integration.rope import apply_rope, axis_dims, pose_cos_sin, rope_tables, video_cos_sin

HEAD_DIM = 128


def expected_angles(t: float, h: float, w: float) -> torch.Tensor:
    """[head_dim] angles of one token at (t, h, w), written out channel pair by channel pair."""
    angles = []
    for position, part in zip((t, h, w), axis_dims(HEAD_DIM), strict=True):
        for j in range(part // 2):
            angle = position * 10000.0 ** (-2 * j / part)
            angles += [angle, angle]
    return torch.tensor(angles, dtype=torch.float64)


def token_index(t: int, h: int, w: int, grid_h: int, grid_w: int) -> int:
    return (t * grid_h + h) * grid_w + w


def test_axis_split_is_44_42_42_for_head_dim_128():
    assert axis_dims(128) == (44, 42, 42)


def test_video_token_angles_follow_t_h_w_grid():
    frames, grid_h, grid_w = 3, 4, 6
    cos, sin = video_cos_sin(HEAD_DIM, frames, grid_h, grid_w)
    for t, h, w in [(0, 0, 0), (1, 2, 3), (2, 3, 5)]:
        angles = expected_angles(t, h, w)
        i = token_index(t, h, w, grid_h, grid_w)
        torch.testing.assert_close(cos[i], angles.cos())
        torch.testing.assert_close(sin[i], angles.sin())


def test_reference_frame_sits_at_t_zero():
    cos, sin = video_cos_sin(HEAD_DIM, 3, 4, 6)
    t_part = axis_dims(HEAD_DIM)[0]
    reference = slice(0, 4 * 6)
    assert torch.all(cos[reference, :t_part] == 1) and torch.all(sin[reference, :t_part] == 0)
    assert not torch.all(sin[4 * 6 :, :t_part] == 0)


def test_pose_tokens_are_2x2_means_of_cos_and_sin_on_the_grid_shifted_to_w_120():
    pose_frames, grid_h, grid_w = 2, 4, 6
    cos, sin = pose_cos_sin(HEAD_DIM, pose_frames, grid_h, grid_w)
    assert cos.shape == (pose_frames * (grid_h // 2) * (grid_w // 2), HEAD_DIM)
    for k, i, j in [(0, 0, 0), (1, 1, 2), (0, 1, 1)]:
        window = [expected_angles(1 + k, 2 * i + dh, 120 + 2 * j + dw) for dh in (0, 1) for dw in (0, 1)]
        index = token_index(k, i, j, grid_h // 2, grid_w // 2)
        torch.testing.assert_close(cos[index], torch.stack([a.cos() for a in window]).mean(0))
        torch.testing.assert_close(sin[index], torch.stack([a.sin() for a in window]).mean(0))


def test_pooled_pose_rotations_are_not_unit_magnitude():
    cos, sin = pose_cos_sin(HEAD_DIM, 1, 4, 4)
    magnitude = cos**2 + sin**2
    assert magnitude.min() < 0.99  # pooling the fast w / h frequencies shrinks them
    t_part = axis_dims(HEAD_DIM)[0]
    torch.testing.assert_close(magnitude[:, :t_part], torch.ones_like(magnitude[:, :t_part]))  # t is not pooled


def test_pose_latent_k_shares_t_with_video_latent_k():
    frames, grid_h, grid_w = 4, 4, 6
    video_cos, _ = video_cos_sin(HEAD_DIM, frames, grid_h, grid_w)
    pose_cos, _ = pose_cos_sin(HEAD_DIM, frames - 1, grid_h, grid_w)
    t_part = axis_dims(HEAD_DIM)[0]
    for k in range(frames - 1):
        video_t = video_cos[token_index(1 + k, 0, 0, grid_h, grid_w), :t_part]
        pose_t = pose_cos[token_index(k, 0, 0, grid_h // 2, grid_w // 2), :t_part]
        torch.testing.assert_close(pose_t, video_t)


def test_rope_tables_lay_out_video_then_pose_tokens():
    frames, grid_h, grid_w = 3, 4, 6
    cos, sin = rope_tables(HEAD_DIM, (frames, grid_h, grid_w), True, torch.device("cpu"))
    video_len = frames * grid_h * grid_w
    assert cos.shape == (video_len + (frames - 1) * (grid_h // 2) * (grid_w // 2), 1, HEAD_DIM)
    assert cos.dtype == torch.float32
    pose_cos, _ = pose_cos_sin(HEAD_DIM, frames - 1, grid_h, grid_w)
    torch.testing.assert_close(cos[video_len:, 0], pose_cos.float())


def test_rope_tables_are_computed_once_per_shape():
    first = rope_tables(HEAD_DIM, (2, 2, 4), True, torch.device("cpu"))
    assert rope_tables(HEAD_DIM, (2, 2, 4), True, torch.device("cpu")) is first


def test_apply_rope_equals_complex_multiplication_of_pairs():
    frames, grid_h, grid_w = 2, 2, 2
    cos, sin = video_cos_sin(HEAD_DIM, frames, grid_h, grid_w)
    x = torch.randn(1, cos.shape[0], 2, HEAD_DIM, dtype=torch.float64)
    angles = torch.stack([expected_angles(t, h, w)[::2] for t in range(2) for h in range(2) for w in range(2)])
    expected = torch.view_as_real(
        torch.view_as_complex(x.unflatten(-1, (-1, 2))) * torch.polar(torch.ones_like(angles), angles)[None, :, None]
    ).flatten(-2)
    out = apply_rope(x.float(), cos.float()[:, None], sin.float()[:, None])
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert math.isclose(out.norm().item(), x.norm().item(), rel_tol=1e-5)  # unit rotations keep the norm
