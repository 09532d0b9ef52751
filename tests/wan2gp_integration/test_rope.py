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
    freqs = rope_tables(HEAD_DIM, (frames, grid_h, grid_w), True, torch.device("cpu"))
    video_len = frames * grid_h * grid_w
    assert freqs.shape == (video_len + (frames - 1) * (grid_h // 2) * (grid_w // 2), 1, HEAD_DIM // 2)
    video_cos, video_sin = video_cos_sin(HEAD_DIM, frames, grid_h, grid_w)
    pose_cos, pose_sin = pose_cos_sin(HEAD_DIM, frames - 1, grid_h, grid_w)
    torch.testing.assert_close(freqs[:video_len, 0].real, video_cos[:, ::2].float())
    torch.testing.assert_close(freqs[:video_len, 0].imag, video_sin[:, ::2].float())
    torch.testing.assert_close(freqs[video_len:, 0].real, pose_cos[:, ::2].float())
    torch.testing.assert_close(freqs[video_len:, 0].imag, pose_sin[:, ::2].float())


def test_rope_tables_are_computed_once_per_shape():
    first = rope_tables(HEAD_DIM, (2, 2, 4), True, torch.device("cpu"))
    assert rope_tables(HEAD_DIM, (2, 2, 4), True, torch.device("cpu")) is first


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    out = torch.empty_like(x)
    out[..., 0::2], out[..., 1::2] = -x[..., 1::2], x[..., 0::2]
    return out


def test_apply_rope_is_x_cos_plus_rotated_x_sin_for_pooled_pose_values():
    frames, grid_h, grid_w = 3, 2, 4
    freqs = rope_tables(HEAD_DIM, (frames, grid_h, grid_w), True, torch.device("cpu"))
    video_cos, video_sin = video_cos_sin(HEAD_DIM, frames, grid_h, grid_w)
    pose_cos, pose_sin = pose_cos_sin(HEAD_DIM, frames - 1, grid_h, grid_w)
    cos, sin = torch.cat([video_cos, pose_cos])[:, None], torch.cat([video_sin, pose_sin])[:, None]
    x = torch.randn(2, cos.shape[0], 2, HEAD_DIM, dtype=torch.float64)
    out = apply_rope(x.float(), freqs)
    torch.testing.assert_close(out.double(), x * cos + rotate_pairs(x) * sin, atol=1e-5, rtol=1e-5)


def test_apply_rope_keeps_the_norm_of_video_tokens():
    freqs = rope_tables(HEAD_DIM, (2, 2, 2), False, torch.device("cpu"))
    x = torch.randn(1, freqs.shape[0], 2, HEAD_DIM)
    assert math.isclose(apply_rope(x, freqs).norm().item(), x.norm().item(), rel_tol=1e-5)


def test_apply_rope_keeps_the_input_dtype():
    freqs = rope_tables(HEAD_DIM, (2, 2, 2), False, torch.device("cpu"))
    x = torch.randn(1, freqs.shape[0], 2, HEAD_DIM, dtype=torch.bfloat16)
    assert apply_rope(x, freqs).dtype == torch.bfloat16
