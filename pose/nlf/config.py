"""NLF crop-model settings, read from the `crop_model` section of the eager meta json."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class NLFConfig:
    """The published values of nlf_l_multi 0.3.2 are the defaults."""

    proc_side: int = 384
    stride_test: int = 32
    centered_stride: bool = True
    backbone_link_dim: int = 512
    depth: int = 8
    box_size_m: float = 2.2
    uncert_bias: float = 0.0
    uncert_bias2: float = 0.001
    fix_uncert_factor: bool = False
    mix_3d_inside_fov: float = 0.5
    weak_perspective: bool = False
    backbone: str = "efficientnetv2-l"
    pad_white_pixels: bool = True

    @classmethod
    def from_meta(cls, meta: dict) -> NLFConfig:
        """From the whole meta json: `crop_model` keys plus the top-level `pad_white_pixels`."""
        crop = meta.get("crop_model", {})
        known = {f.name: f.type for f in fields(cls)}
        values = {k: v for k, v in crop.items() if k in known}
        if "pad_white_pixels" in meta:
            values["pad_white_pixels"] = bool(meta["pad_white_pixels"])
        return cls(**values)

    @property
    def n_out(self) -> int:
        """Channels per point: uncertainty, xy heatmap, `depth` depth bins."""
        return 2 + self.depth
