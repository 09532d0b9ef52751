"""The demo's synthetic inputs: a drawn character and a short driving video that a player can decode."""

from __future__ import annotations

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from tools.make_demo_inputs import driving_frames, reference_image, write_demo_inputs


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return write_demo_inputs(tmp_path_factory.mktemp("demo"), width=256, height=192, seconds=2.0, fps=16)


def read_video(path):
    """Decode every frame with ffmpeg: (T, H, W, 3) uint8 and the stream's metadata."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    return np.stack([np.frombuffer(f, np.uint8).reshape(height, width, 3) for f in reader]), meta


def test_reference_is_an_rgb_image_of_the_asked_size(demo):
    image = cv2.imread(str(demo.reference), cv2.IMREAD_UNCHANGED)
    assert image.shape == (192, 256, 3)


def test_reference_shows_a_figure_on_the_background():
    image = reference_image(256, 256).astype(np.int16)
    centre_column, edge_column = image[:, 128], image[:, 5]
    # The figure stands in the middle: the centre column differs from the background beside it.
    assert np.abs(centre_column - edge_column).sum(axis=1).max() > 100


def test_driving_video_has_the_asked_frame_count_size_and_rate(demo):
    frames, meta = read_video(demo.driving_video)
    assert frames.shape == (32, 192, 256, 3)
    assert demo.num_frames == 32
    assert meta["fps"] == pytest.approx(16.0)


def test_driving_video_is_h264_yuv420p(demo):
    _, meta = read_video(demo.driving_video)
    assert "h264" in meta["codec"]
    assert meta["pix_fmt"].startswith("yuv420p")


def test_figure_moves_between_frames():
    frames = driving_frames(128, 128, num_frames=8, fps=16).astype(np.int16)
    changed = (np.abs(frames[1:] - frames[:-1]).sum(axis=-1) > 30).sum(axis=(1, 2))
    assert (changed > 20).all(), changed


def test_inputs_are_the_same_on_every_run(tmp_path):
    first = write_demo_inputs(tmp_path / "a", width=64, height=64, seconds=0.5)
    second = write_demo_inputs(tmp_path / "b", width=64, height=64, seconds=0.5)
    assert first.reference.read_bytes() == second.reference.read_bytes()
    np.testing.assert_array_equal(read_video(first.driving_video)[0], read_video(second.driving_video)[0])


def test_odd_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="must be even"):
        write_demo_inputs(tmp_path, width=255, height=256)
