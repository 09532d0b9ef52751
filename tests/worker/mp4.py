"""Read back what an mp4 written by the worker holds: codec, pixel format, size, fps, frames, faststart."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg


@dataclass(frozen=True)
class Mp4Info:
    """What a written mp4 holds, read back from the file."""

    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    num_frames: int
    faststart: bool


def inspect_mp4(path: Path) -> Mp4Info:
    """Codec, pixel format, size, fps, frame count and whether `moov` precedes `mdat`."""
    frames = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(frames)
    finally:
        frames.close()
    num_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    return Mp4Info(
        codec=meta["codec"],
        pix_fmt=meta["pix_fmt"].split("(")[0],
        width=meta["size"][0],
        height=meta["size"][1],
        fps=float(meta["fps"]),
        num_frames=num_frames,
        faststart=_moov_before_mdat(path),
    )


def _moov_before_mdat(path: Path) -> bool:
    """Walk the top-level ISO-BMFF boxes: True when the index comes before the media data."""
    with open(path, "rb") as f:
        while header := f.read(8):
            if len(header) < 8:
                return False
            size = int.from_bytes(header[:4], "big")
            box = header[4:8]
            if box in (b"moov", b"mdat"):
                return box == b"moov"
            if size == 1:
                size = int.from_bytes(f.read(8), "big") - 8
            elif size == 0:
                return False
            f.seek(size - 8, 1)
    return False
