"""MatAnyone's mask decoder: stride-16 readout upsampled to full resolution with the image's skip features,
an alpha head (`pred_mat`; `pred_seg` is the segmentation head used in training), and the sensory update."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pose.multi.matanyone.config import MatAnyoneConfig
from pose.multi.matanyone.layers import GConv2d, GroupResBlock, MainToGroupDistributor, gru_update, resize_groups


class MaskUpsampleBlock(nn.Module):
    """x2 bilinear upsampling of the group tensor, plus the skip feature, then a residual block."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.distributor = MainToGroupDistributor(method="add")
        self.out_conv = GroupResBlock(in_dim, out_dim)

    def forward(self, g: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.out_conv(self.distributor(skip, resize_groups(g, 2, "bilinear")))


class DecoderFeatureProcessor(nn.Module):
    """1x1 projections of the image skip features (strides 8, 4, 2, 1) to the decoder widths."""

    def __init__(self, in_dims: tuple[int, ...], out_dims: tuple[int, ...]):
        super().__init__()
        self.transforms = nn.ModuleList(nn.Conv2d(i, o, kernel_size=1) for i, o in zip(in_dims, out_dims, strict=True))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [transform(f) for transform, f in zip(self.transforms, features, strict=True)]


class SensoryUpdaterFullscale(nn.Module):
    """`sensory_update`: decoder features of every scale, area-pooled to stride 16, drive the sensory GRU."""

    def __init__(self, g_dims: tuple[int, ...], mid_dim: int, sensory_dim: int):
        super().__init__()
        self.g16_conv = GConv2d(g_dims[0], mid_dim, kernel_size=1)
        self.g8_conv = GConv2d(g_dims[1], mid_dim, kernel_size=1)
        self.g4_conv = GConv2d(g_dims[2], mid_dim, kernel_size=1)
        self.g2_conv = GConv2d(g_dims[3], mid_dim, kernel_size=1)
        self.g1_conv = GConv2d(g_dims[4], mid_dim, kernel_size=1)
        self.transform = GConv2d(mid_dim + sensory_dim, sensory_dim * 3, kernel_size=3, padding=1)

    def forward(self, g: list[torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
        """g: group features at strides 16, 8, 4, 2, 1; hidden (B, N, Cs, h, w) -> the new sensory memory."""
        convs = (self.g16_conv, self.g8_conv, self.g4_conv, self.g2_conv, self.g1_conv)
        x = sum(conv(resize_groups(f, 0.5**i, "area") if i else f) for i, (conv, f) in enumerate(zip(convs, g, strict=True)))
        return gru_update(hidden, self.transform(torch.cat([x, hidden], 2)))


class MaskDecoder(nn.Module):
    def __init__(self, config: MatAnyoneConfig):
        super().__init__()
        up = config.up_dims
        self.sensory_update = SensoryUpdaterFullscale((*up[:4], up[4] + 1), config.sensory_dim, config.sensory_dim)
        self.decoder_feat_proc = DecoderFeatureProcessor(config.ms_dims[1:], up[:-1])
        self.up_16_8 = MaskUpsampleBlock(up[0], up[1])
        self.up_8_4 = MaskUpsampleBlock(up[1], up[2])
        self.up_4_2 = MaskUpsampleBlock(up[2], up[3])
        self.up_2_1 = MaskUpsampleBlock(up[3], up[4])
        self.pred_seg = nn.Conv2d(up[-1], 1, kernel_size=3, padding=1)
        self.pred_mat = nn.Conv2d(up[-1], 1, kernel_size=3, padding=1)

    def forward(self, ms_features: list[torch.Tensor], readout: torch.Tensor, sensory: torch.Tensor,
                update_sensory: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """ms_features: image features at strides 16..1 (B, C, H/s, W/s); readout (B, N, Ce, h, w);
        sensory (B, N, Cs, h, w) -> (sensory, alpha logits (B, N, H, W))."""
        f8, f4, f2, f1 = self.decoder_feat_proc(ms_features[1:])
        p8 = self.up_16_8(readout, f8)
        p4 = self.up_8_4(p8, f4)
        p2 = self.up_4_2(p4, f2)
        p1 = self.up_2_1(p2, f1)
        logits = self.pred_mat(F.relu(p1.flatten(0, 1))).unflatten(0, p1.shape[:2])  # (B, N, 1, H, W)
        if update_sensory:
            sensory = self.sensory_update([readout, p8, p4, p2, torch.cat([p1, logits], 2)], sensory)
        return sensory, logits.squeeze(2)
