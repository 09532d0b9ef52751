"""EfficientNetV2 feature extractor of NLF, built from the checkpoint's tensor shapes.

The real file holds torchvision's `efficientnet_v2_l().features`; the tiny test volume keeps the same
key names with fewer layers and channels. Stage strides and block types cannot be read from tensors,
so they follow EfficientNetV2's table (stride per stage), everything else comes from the shapes.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

from pose.files import count_children

# EfficientNetV2 stage strides (features.1 .. features.7); the same for -S, -M and -L.
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
# Stages 1-3 are FusedMBConv, 4-7 MBConv with squeeze-excitation.
FUSED_STAGES = 3
BN_EPS = 1e-3


class CenteredStrideConv2d(nn.Conv2d):
    """Stride-2 depthwise conv padded (left 0, right 2, top 0, bottom 2) instead of 1 on every side.

    NLF was trained with this shifted padding on the deepest strided block ("centered stride"), which
    puts the 12x12 output cells on the centres assumed by the heatmap decoding. Keeps the key `weight`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_total = self.kernel_size[0] - 1
        before = pad_total // 2 - 1
        after = pad_total - pad_total // 2 + 1
        return self._conv_forward(F.pad(x, (before, after, before, after)), self.weight, self.bias)


def _stage_setting(state: dict[str, torch.Tensor], stage: int) -> FusedMBConvConfig | MBConvConfig:
    """The block config of stage `<stage>` (torchvision `features[stage]`) read from its tensors."""
    prefix = f"{stage}."
    n_layers = count_children(state, prefix)
    first = f"{prefix}0.block."
    stride = STAGE_STRIDES[stage - 1]
    if stage <= FUSED_STAGES:
        conv0 = state[f"{first}0.0.weight"]  # [expanded or out, in, k, k]
        in_ch, kernel = conv0.shape[1], conv0.shape[2]
        if f"{first}1.0.weight" in state:  # expand conv followed by a 1x1 projection
            expand = conv0.shape[0] / in_ch
            out_ch = state[f"{first}1.0.weight"].shape[0]
        else:
            expand, out_ch = 1, conv0.shape[0]
        return FusedMBConvConfig(expand, kernel, stride, in_ch, out_ch, n_layers)
    expand_w = state[f"{first}0.0.weight"]  # [expanded, in, 1, 1]
    depthwise = state[f"{first}1.0.weight"]  # [expanded, 1, k, k]
    project = state[f"{first}3.0.weight"]  # [out, expanded, 1, 1]
    in_ch = expand_w.shape[1]
    return MBConvConfig(expand_w.shape[0] / in_ch, depthwise.shape[2], stride, in_ch, project.shape[0], n_layers)


def build_features(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """An (uninitialised, meta-device) EfficientNetV2 `features` matching `state` (keys of `features.state_dict()`).

    Raises KeyError when a tensor the layout needs is absent.
    """
    setting = [_stage_setting(state, stage) for stage in range(1, len(STAGE_STRIDES) + 1)]
    last_channel = state[f"{len(STAGE_STRIDES) + 1}.0.weight"].shape[0]
    with torch.device("meta"):
        net = EfficientNet(
            setting, dropout=0.0, norm_layer=partial(nn.BatchNorm2d, eps=BN_EPS), last_channel=last_channel
        )
    features = net.features
    _apply_centered_stride(features)
    return features


def _apply_centered_stride(features: nn.Sequential) -> None:
    """Swap the depthwise conv of the first block of the deepest stride-2 stage for the shifted-pad one."""
    stage = max(i + 1 for i, s in enumerate(STAGE_STRIDES) if s == 2)
    conv_act = features[stage][0].block[1]
    old: nn.Conv2d = conv_act[0]
    new = CenteredStrideConv2d(
        old.in_channels, old.out_channels, old.kernel_size, old.stride, padding=0, groups=old.groups,
        bias=old.bias is not None, device="meta",
    )
    conv_act[0] = new
