"""Decode the job's image and video with guards, and encode the result as a browser-playable mp4.

Decoding checks the pixel count from the header before any pixel is decompressed (decompression
bombs) and stops reading a video after a frame limit. Video goes through imageio-ffmpeg's static
ffmpeg binary both ways; the output is H.264 yuv420p with the index (`moov`) at the front.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from common.errors import InputError

log = logging.getLogger(__name__)

Frame = np.ndarray  # (H, W, 3) uint8 RGB
CRF = 18  # x264 quality: visually lossless for generated video at a fraction of the lossless size


def decode_image(path: Path, field: str, max_pixels: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (first frame when animated, EXIF rotation applied)."""
    try:
        with Image.open(path) as image:
            width, height = image.size  # from the header; nothing decoded yet
            if width * height > max_pixels:
                raise InputError(f"{field}: image is {width}x{height}, over the limit of {max_pixels} pixels")
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                # Transparent areas become white rather than whatever colour the hidden pixels hold.
                canvas = Image.new("RGB", image.size, (255, 255, 255))
                canvas.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
                image = canvas
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Image.DecompressionBombError:
        raise InputError(f"{field}: image header claims more than {max_pixels} pixels (decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{field}: not a readable image ({exc})") from None


@dataclass
class VideoReader:
    """A video opened for streaming decode: `fps` and `size` known before any frame is read."""

    path: Path
    field: str
    fps: float | None
    size: tuple[int, int]  # (width, height)
    _frames: object  # imageio-ffmpeg's generator of rgb24 frame bytes

    @classmethod
    def open(cls, path: Path, field: str, max_pixels: int) -> VideoReader:
        frames = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        try:
            meta = next(frames)
        except (OSError, RuntimeError, StopIteration) as exc:
            frames.close()
            raise InputError(f"{field}: not a readable video ({_last_line(exc)})") from None
        width, height = meta["size"]
        if width * height > max_pixels:
            frames.close()
            raise InputError(f"{field}: video is {width}x{height}, over the limit of {max_pixels} pixels per frame")
        fps = meta.get("fps")
        return cls(path, field, float(fps) if fps and 0 < fps < 1000 else None, (width, height), frames)

    def read(self, max_frames: int, transform: Callable[[Frame], Frame] | None = None) -> np.ndarray:
        """Up to `max_frames` leading frames, each passed through `transform`: (T, H', W', 3) uint8."""
        width, height = self.size
        frames = []
        try:
            for raw in self._frames:
                frame = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
                frames.append(transform(frame) if transform else frame.copy())
                if len(frames) >= max_frames:
                    break
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{self.field}: video decoding failed ({_last_line(exc)})") from None
        finally:
            self.close()
        if not frames:
            raise InputError(f"{self.field}: the video has no frames")
        return np.stack(frames)

    def close(self) -> None:
        self._frames.close()


def encode_mp4(frames: np.ndarray, fps: float, path: Path) -> Path:
    """Write (T, H, W, 3) uint8 RGB frames as H.264 yuv420p mp4 with faststart; odd edges are cropped."""
    frames = frames[:, : frames.shape[1] // 2 * 2, : frames.shape[2] // 2 * 2]  # yuv420p needs even sizes
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        quality=None,
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-crf", str(CRF), "-preset", "medium", "-movflags", "+faststart"],
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
    finally:
        writer.close()
    return path


def ffmpeg_version() -> str:
    """The version line of the bundled ffmpeg."""
    result = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False)
    return result.stdout.split("\n", 1)[0]


def _last_line(exc: BaseException) -> str:
    """ffmpeg's last stderr line is the one that names the problem."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
