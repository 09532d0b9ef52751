"""Encoders of MatAnyone: image (ResNet-50 to layer3), key projection, mask (ResNet-18 to layer3), pixel fuser,
and the temporal-sparsity head that decides where the memory readout replaces the last frame's value."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from pose.multi.matanyone.config import MatAnyoneConfig, TrunkShape
from pose.multi.matanyone.layers import GConv2d, GroupFeatureFusionBlock, MainToGroupDistributor, SensoryDeepUpdater


def resnet_stages(shape: TrunkShape) -> tuple[nn.Conv2d, nn.BatchNorm2d, list[nn.Sequential]]:
    """Stem conv, stem norm and the three stages of a torchvision ResNet (random init, nothing downloaded).

    With stem 64, blocks (3, 4, 6) and bottlenecks these are resnet50's conv1/bn1/layer1-3; (2, 2, 2) basic
    blocks give resnet18's. A narrower stem keeps every key name (the tiny test file).
    """
    block = Bottleneck if shape.bottleneck else BasicBlock
    conv1 = nn.Conv2d(shape.in_channels, shape.stem, kernel_size=7, stride=2, padding=3, bias=False)
    inplanes, stages = shape.stem, []
    for i, count in enumerate(shape.blocks):
        planes, stride = shape.stem * 2**i, 1 if i == 0 else 2
        out = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        layers = [block(inplanes, planes, stride, downsample)] + [block(out, planes) for _ in range(count - 1)]
        stages.append(nn.Sequential(*layers))
        inplanes = out
    return conv1, nn.BatchNorm2d(shape.stem), stages


class PixelEncoder(nn.Module):
    """ResNet-50 up to layer3 on the normalised image."""

    def __init__(self, shape: TrunkShape):
        super().__init__()
        self.conv1, self.bn1, (self.res2, self.layer2, self.layer3) = resnet_stages(shape)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) -> features at strides 16, 8, 4, 2 and the input itself (stride 1)."""
        f2 = F.relu(self.bn1(self.conv1(x)))
        f4 = self.res2(self.maxpool(f2))
        f8 = self.layer2(f4)
        return [self.layer3(f8), f8, f4, f2, x]


class KeyProjection(nn.Module):
    """Stride-16 features -> memory key, shrinkage (>= 1) and selection (in (0, 1))."""

    def __init__(self, in_dim: int, mid_dim: int, key_dim: int):
        super().__init__()
        self.pix_feat_proj = nn.Conv2d(in_dim, mid_dim, kernel_size=1)
        self.key_proj = nn.Conv2d(mid_dim, key_dim, kernel_size=3, padding=1)
        self.d_proj = nn.Conv2d(mid_dim, 1, kernel_size=3, padding=1)
        self.e_proj = nn.Conv2d(mid_dim, key_dim, kernel_size=3, padding=1)

    def forward(self, f16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """f16 (B, C16, h, w) -> key (B, Ck, h, w), shrinkage (B, 1, h, w), selection (B, Ck, h, w)."""
        x = self.pix_feat_proj(f16)
        return self.key_proj(x), self.d_proj(x) ** 2 + 1, torch.sigmoid(self.e_proj(x))


class MaskEncoder(nn.Module):
    """ResNet-18 (to layer3) on image + object mask, fused with the pixel features into the memory value;
    also refreshes the sensory memory from that value."""

    def __init__(self, config: MatAnyoneConfig):
        super().__init__()
        self.conv1, self.bn1, (self.layer1, self.layer2, self.layer3) = resnet_stages(config.mask_encoder)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.distributor = MainToGroupDistributor()
        self.fuser = GroupFeatureFusionBlock(config.pixel_dim, config.mask_dim, config.value_dim)
        self.sensory_update = SensoryDeepUpdater(config.value_dim, config.sensory_dim)

    def forward(self, image: torch.Tensor, pix_feat: torch.Tensor, sensory: torch.Tensor, masks: torch.Tensor,
                deep_update: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """image (B, 3, H, W) normalised, pix_feat (B, Cp, h, w), sensory (B, N, Cs, h, w), masks (B, N, H, W)
        -> value (B, N, Cv, h, w) and the sensory memory (updated when `deep_update`)."""
        g = self.distributor(image, masks.unsqueeze(2)).flatten(0, 1)
        # upstream order: max-pool before the ReLU (equivalent, both monotone)
        g = F.relu(self.maxpool(self.bn1(self.conv1(g))))
        g = self.layer3(self.layer2(self.layer1(g))).unflatten(0, masks.shape[:2])
        value = self.fuser(pix_feat, g)
        if deep_update:
            sensory = self.sensory_update(value, sensory)
        return value, sensory


class PixelFeatureFuser(nn.Module):
    """Memory readout + compressed sensory memory (with the last mask), fused with the pixel features."""

    def __init__(self, config: MatAnyoneConfig):
        super().__init__()
        self.fuser = GroupFeatureFusionBlock(config.pixel_dim, config.value_dim, config.embed_dim)
        self.sensory_compress = GConv2d(config.sensory_dim + 1, config.value_dim, kernel_size=1)

    def forward(self, pix_feat: torch.Tensor, readout: torch.Tensor, sensory: torch.Tensor,
                last_mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """pix_feat (B, Cp, h, w), readout (B, N, Cv, h, w), sensory (B, N, Cs, h, w), last_mask (B, N, h, w)
        -> (B, N, Ce, h, w)."""
        compressed = self.sensory_compress(torch.cat([sensory, last_mask.unsqueeze(2)], 2))
        return self.fuser(pix_feat, readout + compressed)


class TemporalSparsity(nn.Module):
    """`temp_sparity` upstream: per-pixel logit of how much the frame changed since the last one."""

    def __init__(self, pixel_dim: int, value_dim: int):
        super().__init__()
        self.conv1x1_v2 = nn.Conv2d(pixel_dim * 2 + 1 + value_dim, 64, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv3x3 = nn.Conv2d(64, 32, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3x3_out = nn.Conv2d(32, 1, kernel_size=3, padding=1, bias=False)

    def forward(self, last_pix_feat: torch.Tensor, pix_feat: torch.Tensor, last_mask: torch.Tensor,
                value_change: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Pixel features of the last and this frame (B, Cp, h, w), last mask (B, 1, H, W), readout minus the
        last value (B, Cv, h, w) -> logits (B, 1, h, w)."""
        last_mask = F.interpolate(last_mask, size=pix_feat.shape[-2:], mode="area")
        x = torch.cat([last_pix_feat, pix_feat, last_mask, value_change], 1)
        x = F.relu(self.bn1(self.conv1x1_v2(x)))
        x = F.relu(self.bn2(self.conv3x3(x)))
        return self.conv3x3_out(x)
