"""Guarded decoding of images and videos; the mp4 the worker answers plays in browsers."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from common.errors import InputError
from tests.worker.mp4 import inspect_mp4
from worker.media import VideoReader, decode_image, encode_mp4


def test_png_decodes_to_rgb_uint8(demo_media):
    image = decode_image(demo_media.reference, "reference_image", 10**8)
    assert image.shape == (256, 256, 3) and image.dtype == np.uint8


def test_transparent_pixels_become_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4, :, :] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    image = decode_image(tmp_path / "a.png", "reference_image", 10**8)
    assert image[0, 0].tolist() == [255, 0, 0] and image[7, 7].tolist() == [255, 255, 255]


def test_exif_rotation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (0, 128, 0)).save(tmp_path / "r.jpg", exif=exif)
    assert decode_image(tmp_path / "r.jpg", "reference_image", 10**8).shape == (40, 20, 3)


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    Image.new("L", (8000, 6000)).save(tmp_path / "big.png")  # compresses to ~50 kB, decodes to 48 MP
    with pytest.raises(InputError, match="reference_image: image is 8000x6000, over the limit of 40000000 pixels"):
        decode_image(tmp_path / "big.png", "reference_image", 40_000_000)


def test_corrupt_image_is_refused(tmp_path, demo_media):
    (tmp_path / "cut.png").write_bytes(demo_media.reference.read_bytes()[:100])
    with pytest.raises(InputError, match="reference_image: not a readable image"):
        decode_image(tmp_path / "cut.png", "reference_image", 10**8)


def test_video_reader_knows_fps_and_size_before_reading(demo_media):
    reader = VideoReader.open(demo_media.driving_video, "pose_video", 10**8)
    assert (reader.fps, reader.size) == (16.0, (256, 256))
    reader.close()


def test_video_reader_stops_at_the_frame_limit_and_applies_the_transform(demo_media):
    reader = VideoReader.open(demo_media.driving_video, "pose_video", 10**8)
    frames = reader.read(10, lambda frame: frame[::2, ::2])
    assert frames.shape == (10, 128, 128, 3)


def test_video_reader_reads_all_frames_of_a_short_video(demo_media):
    frames = VideoReader.open(demo_media.driving_video, "pose_video", 10**8).read(1000)
    assert frames.shape == (demo_media.num_frames, 256, 256, 3)


def test_video_over_the_pixel_limit_is_refused(demo_media):
    with pytest.raises(InputError, match="pose_video: video is 256x256, over the limit of 1000 pixels per frame"):
        VideoReader.open(demo_media.driving_video, "pose_video", 1000)


def test_truncated_video_is_refused(tmp_path, demo_media):
    (tmp_path / "cut.mp4").write_bytes(demo_media.driving_video.read_bytes()[:300])
    with pytest.raises(InputError, match="pose_video: (not a readable video|video decoding failed|the video has no frames)"):
        VideoReader.open(tmp_path / "cut.mp4", "pose_video", 10**8).read(100)


def test_encoded_mp4_is_h264_yuv420p_faststart_at_the_job_fps(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 64, 96, 3), dtype=np.uint8)
    info = inspect_mp4(encode_mp4(frames, 12.0, tmp_path / "out.mp4"))
    assert (info.codec, info.pix_fmt, info.width, info.height) == ("h264", "yuv420p", 96, 64)
    assert (info.fps, info.num_frames, info.faststart) == (12.0, 9, True)


def test_odd_sizes_are_cropped_to_even(tmp_path):
    frames = np.zeros((5, 33, 47, 3), np.uint8)
    info = inspect_mp4(encode_mp4(frames, 16.0, tmp_path / "odd.mp4"))
    assert (info.width, info.height) == (46, 32)


def test_encoded_frames_are_close_to_the_input(tmp_path):
    frames = np.zeros((5, 64, 64, 3), np.uint8)
    frames[:, :, :32] = (200, 50, 20)
    path = encode_mp4(frames, 16.0, tmp_path / "out.mp4")
    decoded = VideoReader.open(path, "video", 10**8).read(10)
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 4


def test_png_header_claiming_a_huge_image_is_refused(tmp_path):
    # A hand-made png whose header claims 100000 x 100000 pixels and that holds no pixel data at all.
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    with pytest.raises(InputError, match="reference_image: .*(over the limit|decompression bomb)"):
        decode_image(tmp_path / "bomb.png", "reference_image", 40_000_000)
