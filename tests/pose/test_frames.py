"""pose.frames: cover + centre crop, nearest-time resampling, the frame-count policy."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InputError
from pose.frames import choose_num_frames, fit_to_canvas, resample_frames


def _striped(height: int, width: int) -> np.ndarray:
    """An image whose left half is red and right half blue, with a green centre square."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2, 0] = 255
    image[:, width // 2 :, 2] = 255
    image[height // 2 - 8 : height // 2 + 8, width // 2 - 8 : width // 2 + 8] = (0, 255, 0)
    return image


def test_fit_to_canvas_covers_and_crops_the_centre_of_a_wide_image():
    image = _striped(100, 400)  # 4:1 onto 1:1 -> scaled to 128x512, 192 px cut on each side
    out = fit_to_canvas(image, 128, 128)
    assert out.shape == (128, 128, 3)
    assert tuple(out[64, 64]) == (0, 255, 0)  # the centre stays in the centre
    assert out[64, 5, 0] > 200 and out[64, 122, 2] > 200  # both halves still present


def test_fit_to_canvas_handles_a_video_of_frames():
    frames = np.stack([_striped(90, 160)] * 3)
    out = fit_to_canvas(frames, 64, 64)
    assert out.shape == (3, 64, 64, 3)
    assert tuple(out[1, 32, 32]) == (0, 255, 0)


@pytest.mark.parametrize("size", [(8, 64), (64, 5000)])
def test_fit_to_canvas_refuses_absurd_sizes(size):
    with pytest.raises(InputError, match="out of range"):
        fit_to_canvas(_striped(64, 64), *size)


def test_fit_to_canvas_refuses_non_uint8():
    with pytest.raises(InputError, match="uint8"):
        fit_to_canvas(np.zeros((64, 64, 3), np.float32), 64, 64)


def test_resample_halves_the_frame_rate_by_nearest_time():
    frames = np.arange(10)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = resample_frames(frames, 30, 15)
    assert out[:, 0, 0, 0].tolist() == [0, 2, 4, 6, 8]


def test_resample_up_repeats_the_nearest_frame():
    frames = np.arange(4)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = resample_frames(frames, 10, 25)
    assert len(out) == 10
    assert out[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3, 3]


def test_resample_refuses_a_zero_fps():
    with pytest.raises(InputError, match="fps"):
        resample_frames(np.zeros((3, 2, 2, 3), np.uint8), 0, 16)


@pytest.mark.parametrize(("available", "expected"), [(5, 5), (8, 5), (9, 9), (80, 77), (81, 81), (500, 81)])
def test_choose_num_frames_picks_the_largest_4n_plus_1(available, expected):
    assert choose_num_frames(available, None) == expected


def test_choose_num_frames_keeps_a_valid_request():
    assert choose_num_frames(100, 33) == 33


def test_choose_num_frames_says_how_many_frames_exist_and_are_needed():
    with pytest.raises(InputError, match=r"has 40 frames.*needs 49"):
        choose_num_frames(40, 49)


@pytest.mark.parametrize("requested", [4, 6, 85, 1])
def test_choose_num_frames_refuses_counts_that_are_not_4n_plus_1_in_range(requested):
    with pytest.raises(InputError, match="num_frames"):
        choose_num_frames(200, requested)


def test_choose_num_frames_refuses_a_video_shorter_than_5_frames():
    with pytest.raises(InputError, match="has 3 frames"):
        choose_num_frames(3, None)
