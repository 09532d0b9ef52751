"""MatAnyone v1 sizes and inference settings: published defaults, an optional config.json, sizes read from tensors."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from common.errors import VolumeFileError
from pose.files import count_children

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrunkShape:
    """A ResNet trunk cut after layer3: stem width, blocks per stage, bottleneck (ResNet-50) or basic (ResNet-18)."""

    stem: int
    blocks: tuple[int, int, int]
    bottleneck: bool
    in_channels: int = 3

    @property
    def out_dims(self) -> tuple[int, int, int, int]:
        """Channels of (layer3, layer2, layer1, stem) outputs: strides 16, 8, 4, 2."""
        expansion = 4 if self.bottleneck else 1
        return (self.stem * 4 * expansion, self.stem * 2 * expansion, self.stem * expansion, self.stem)


@dataclass(frozen=True)
class MatAnyoneConfig:
    """Model sizes (the published MatAnyone v1 by default) and the inference settings the worker uses."""

    pixel_dim: int = 256
    key_dim: int = 64
    value_dim: int = 256
    sensory_dim: int = 256
    embed_dim: int = 256
    pixel_encoder: TrunkShape = TrunkShape(64, (3, 4, 6), bottleneck=True)
    # single object: RGB + the object's mask
    mask_encoder: TrunkShape = TrunkShape(64, (2, 2, 2), bottleneck=False, in_channels=4)
    num_heads: int = 8
    num_blocks: int = 3
    num_queries: int = 16
    ff_dim: int = 2048
    num_summaries: int = 16
    up_dims: tuple[int, ...] = (256, 128, 128, 64, 16)
    pixel_pe_scale: float = 32.0
    pixel_pe_temperature: float = 128.0
    # inference
    mem_every: int = 5
    max_mem_frames: int = 5
    top_k: int = 30
    stagger_updates: int = 5
    warmup_frames: int = 10
    # frames whose shorter side exceeds this are resized down for the model (-1: never, the published value)
    max_internal_size: int = -1
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD

    @property
    def ms_dims(self) -> tuple[int, ...]:
        """Pixel-encoder feature channels at strides 16, 8, 4, 2, 1 (the last is the image)."""
        return (*self.pixel_encoder.out_dims, 3)

    @property
    def mask_dim(self) -> int:
        """Channels out of the mask encoder trunk (`final_dim` upstream)."""
        return self.mask_encoder.out_dims[0]


def _nested(raw: dict, *names: str):
    """raw[names[0]][names[1]]... or None when any level is missing."""
    for name in names:
        if not isinstance(raw, dict) or name not in raw:
            return None
        raw = raw[name]
    return raw


def config_from_json(path: Path) -> MatAnyoneConfig:
    """Settings from an upstream-style config.json (inference keys at the top, model sizes under `model`)."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise VolumeFileError(path, f"not a readable JSON config ({exc})") from None
    if not isinstance(raw, dict):
        raise VolumeFileError(path, "expected a JSON object")
    updates = {}
    for name in ("mem_every", "max_mem_frames", "top_k", "stagger_updates", "max_internal_size"):
        if isinstance(raw.get(name), int):
            updates[name] = raw[name]
    if raw.get("use_long_term"):
        raise VolumeFileError(path, "use_long_term is true; only working memory is implemented")
    heads = _nested(raw, "model", "object_transformer", "num_heads")
    if isinstance(heads, int):
        updates["num_heads"] = heads
    for name in ("pixel_pe_scale", "pixel_pe_temperature"):
        value = _nested(raw, "model", name)
        if isinstance(value, int | float):
            updates[name] = float(value)
    for name in ("pixel_mean", "pixel_std"):
        value = _nested(raw, "model", name)
        if isinstance(value, list) and len(value) == 3:
            updates[name] = tuple(float(v) for v in value)
    return replace(MatAnyoneConfig(), **updates)


def _trunk(state: dict[str, torch.Tensor], prefix: str, stages: tuple[str, str, str]) -> TrunkShape:
    stem = state[f"{prefix}.conv1.weight"]
    bottleneck = f"{prefix}.{stages[0]}.0.conv3.weight" in state
    blocks = tuple(count_children(state, f"{prefix}.{stage}.") for stage in stages)
    return TrunkShape(stem.shape[0], blocks, bottleneck, in_channels=stem.shape[1])


def config_from_state(state: dict[str, torch.Tensor], base: MatAnyoneConfig | None = None) -> MatAnyoneConfig:
    """`base` (published defaults) with every size that the tensors determine read from them.

    Head count and positional-encoding constants are not in the tensors and stay as in `base`.
    KeyError names a missing tensor.
    """
    base = base or MatAnyoneConfig()
    ot = "object_transformer"
    decoder = "mask_decoder"
    up_dims = [state[f"{decoder}.up_16_8.out_conv.conv1.weight"].shape[1]]
    for block in ("up_16_8", "up_8_4", "up_4_2", "up_2_1"):
        up_dims.append(state[f"{decoder}.{block}.out_conv.conv1.weight"].shape[0])
    return replace(
        base,
        pixel_dim=state["pix_feat_proj.weight"].shape[0],
        key_dim=state["key_proj.key_proj.weight"].shape[0],
        value_dim=state["mask_encoder.fuser.distributor.g_transform.weight"].shape[0],
        sensory_dim=state["mask_encoder.sensory_update.transform.weight"].shape[0] // 3,
        embed_dim=state[f"{ot}.query_init.weight"].shape[1],
        pixel_encoder=_trunk(state, "pixel_encoder", ("res2", "layer2", "layer3")),
        mask_encoder=_trunk(state, "mask_encoder", ("layer1", "layer2", "layer3")),
        num_blocks=count_children(state, f"{ot}.blocks."),
        num_queries=state[f"{ot}.query_init.weight"].shape[0],
        ff_dim=state[f"{ot}.blocks.0.ffn.linear1.weight"].shape[0],
        num_summaries=state["object_summarizer.weights_pred.2.weight"].shape[0],
        up_dims=tuple(up_dims),
    )


def describe(config: MatAnyoneConfig) -> str:
    """One line of the sizes, for logs."""
    shown = ("pixel_dim", "value_dim", "sensory_dim", "embed_dim", "key_dim", "num_blocks", "num_heads", "up_dims")
    return ", ".join(f"{f.name}={getattr(config, f.name)}" for f in fields(config) if f.name in shown)
