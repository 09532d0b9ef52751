"""MatAnyone v1 (single object per batch item): the modules of `mask/model.safetensors` and the per-frame steps
the propagation loop composes. Keys match the upstream checkpoint (562 tensors at the published size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pose.multi.matanyone.config import MatAnyoneConfig
from pose.multi.matanyone.decoder import MaskDecoder
from pose.multi.matanyone.encoders import KeyProjection, MaskEncoder, PixelEncoder, PixelFeatureFuser, TemporalSparsity
from pose.multi.matanyone.layers import GConv2d
from pose.multi.matanyone.transformer import ObjectSummarizer, QueryTransformer


class LinearPredictor(nn.Module):
    """Training-only auxiliary head on the sensory memory (kept for the checkpoint's keys)."""

    def __init__(self, in_dim: int, pixel_dim: int):
        super().__init__()
        self.projection = GConv2d(in_dim, pixel_dim + 1, kernel_size=1)


class AuxComputer(nn.Module):
    """Holds `sensory_aux`; auxiliary losses are not computed at inference."""

    def __init__(self, config: MatAnyoneConfig):
        super().__init__()
        self.sensory_aux = LinearPredictor(config.sensory_dim, config.embed_dim)


class MatAnyone(nn.Module):
    def __init__(self, config: MatAnyoneConfig):
        super().__init__()
        self.config = config
        self.pixel_encoder = PixelEncoder(config.pixel_encoder)
        self.pix_feat_proj = nn.Conv2d(config.ms_dims[0], config.pixel_dim, kernel_size=1)
        self.key_proj = KeyProjection(config.ms_dims[0], config.pixel_dim, config.key_dim)
        self.mask_encoder = MaskEncoder(config)
        self.mask_decoder = MaskDecoder(config)
        self.pixel_fuser = PixelFeatureFuser(config)
        self.object_transformer = QueryTransformer(config)
        self.object_summarizer = ObjectSummarizer(config)
        self.aux_computer = AuxComputer(config)
        self.temp_sparity = TemporalSparsity(config.pixel_dim, config.value_dim)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(3, 1, 1), persistent=False)

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> ImageNet-normalised."""
        return (image - self.pixel_mean) / self.pixel_std

    def encode_image(self, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, 3, H, W) in [0, 1], H and W multiples of 16 -> multi-scale features (strides 16..1) and the
        stride-16 pixel feature (B, Cp, H/16, W/16)."""
        features = self.pixel_encoder(self.normalise(image))
        return features, self.pix_feat_proj(features[0])

    def transform_key(self, f16: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Key, shrinkage and selection of the stride-16 features (see KeyProjection)."""
        return self.key_proj(f16)

    def encode_mask(self, image: torch.Tensor, pix_feat: torch.Tensor, sensory: torch.Tensor, masks: torch.Tensor,
                    deep_update: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """image (B, 3, H, W) in [0, 1], masks (B, N, H, W) -> memory value (B, N, Cv, h, w), sensory, and the
        object summaries (B, N, Q, Ce + 1)."""
        value, sensory = self.mask_encoder(self.normalise(image), pix_feat, sensory, masks, deep_update)
        return value, sensory, self.object_summarizer(masks, value)

    def uncertainty(self, last_pix_feat: torch.Tensor, pix_feat: torch.Tensor, last_mask: torch.Tensor,
                    value_change: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Probability (B, 1, h, w) that a pixel takes the memory readout rather than the last frame's value."""
        return torch.sigmoid(self.temp_sparity(last_pix_feat, pix_feat, last_mask, value_change))

    def pixel_fusion(self, pix_feat: torch.Tensor, readout: torch.Tensor, sensory: torch.Tensor,
                     last_mask: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """last_mask (B, N, H, W) is area-pooled to the sensory grid before fusing."""
        last_mask = F.interpolate(last_mask, size=sensory.shape[-2:], mode="area")
        return self.pixel_fuser(pix_feat, readout, sensory, last_mask)

    def readout_query(self, pixel_readout: torch.Tensor, summaries: torch.Tensor) -> torch.Tensor:
        return self.object_transformer(pixel_readout, summaries)

    def segment(self, ms_features: list[torch.Tensor], readout: torch.Tensor, sensory: torch.Tensor,
                update_sensory: bool = True) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """-> sensory and alpha (B, N, H, W) clamped to [0, 1] (the matting head)."""
        sensory, logits = self.mask_decoder(ms_features, readout, sensory, update_sensory)
        return sensory, logits.clamp(0.0, 1.0)
