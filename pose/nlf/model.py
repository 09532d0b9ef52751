"""NLF (Neural Localizer Fields) for SCAIL: person boxes -> 24 SMPL joints in camera space (mm).

Key layout (under `crop_model.` in the eager safetensors): `backbone.0` mean/std preprocessing,
`backbone.1.*` torchvision EfficientNetV2 `features`, `heatmap_head.layer.*` and
`heatmap_head.weight_field.*`. The canonical points `__meta_cano_all_smpl` [V_sub + 24, 3] are turned
into per-point filters once; SCAIL reads only the last 24 points (`joints3d_nonparam`).

Linear light, deliberately applied once: the public multi-person NLF converts uint8 frames to linear
light in `detect_smpl_batched` and again in `_estimate_poses_batched` (a float16 input is raised to 2.2
a second time), so its crops end up as sRGB^1.76 instead of the sRGB^0.8 that NLF's gamma handling
(crop^(0.8/2.2)) was written for. We follow the intended path (sRGB -> ^2.2 -> warp -> ^(0.8/2.2)); the
crops are then brighter and closer to what the network saw in training. `double_linear_light=True`
reproduces the public code for parity checks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pose.nlf.config import NLFConfig
from pose.nlf.crops import warp_crops
from pose.nlf.geometry import crop_cameras, intrinsics_from_fov, reconstruct_absolute
from pose.nlf.head import LocalizerHead

N_JOINTS = 24
# SCAIL widens each DWPose box by these fractions of the frame width / height before running NLF.
WIDEN_X, WIDEN_Y = 0.025, 0.05
GAMMA = 2.2
# Crop gamma of NLF's single test-time augmentation: linspace(0.6, 1.0, 1) is the midpoint 0.8.
CROP_GAMMA = 0.8
# Points with an uncertainty below this take part in the translation solve.
SOLVE_UNCERTAINTY = 0.3


class MeanStd(nn.Module):
    """(x - mean) / std; buffers `mean`, `std` (0-d or [1] in the file)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.full((1,), 0.5))
        self.register_buffer("std", torch.full((1,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class CropModel(nn.Module):
    """One 384x384 crop -> per-point heatmap features; `backbone` = Sequential(MeanStd, features)."""

    def __init__(self, features: nn.Sequential, head: LocalizerHead):
        super().__init__()
        self.backbone = nn.Sequential(MeanStd(), features)
        self.heatmap_head = head

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """crops [B, 3, S, S] in [0, 1] -> [B, link_dim, S/32, S/32]."""
        return self.heatmap_head.layer(self.backbone(crops))


class NLFModel(nn.Module):
    """NLF for given person boxes; see the module docstring for the key layout and choices."""

    def __init__(self, crop_model: CropModel, canonical_points: torch.Tensor, config: NLFConfig, *,
                 batch_size: int = 32, double_linear_light: bool = False):
        super().__init__()
        self.crop_model = crop_model
        self.config = config
        self.register_buffer("canonical_points", canonical_points, persistent=False)
        self.register_buffer("filters", torch.empty(0), persistent=False)
        self.batch_size = batch_size
        self.double_linear_light = double_linear_light

    @property
    def device(self) -> torch.device:
        return self.canonical_points.device

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.crop_model.heatmap_head.layer[0].weight.dtype

    @torch.no_grad()
    def prepare_filters(self) -> None:
        """Run the weight field (fp32) once over the canonical points; cache in the backbone's dtype."""
        field = self.crop_model.heatmap_head.weight_field
        self.filters = field(self.canonical_points).to(self.compute_dtype)

    def widen_boxes(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """xyxy [N, 4] grown by 2.5% of W on the left and right and 5% of H on top and bottom, clipped."""
        grow = np.array([-WIDEN_X * width, -WIDEN_Y * height, WIDEN_X * width, WIDEN_Y * height])
        widened = boxes.astype(np.float64) + grow
        return np.clip(widened, 0, [width - 1, height - 1, width - 1, height - 1])

    def linear_light(self, frames: np.ndarray) -> torch.Tensor:
        """(F, H, W, 3) uint8 sRGB -> [F, 3, H, W] linear light on the device."""
        images = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        exponent = GAMMA * GAMMA if self.double_linear_light else GAMMA
        return images.pow_(exponent)

    @torch.no_grad()
    def predict_crops(self, images: torch.Tensor, image_ids: torch.Tensor, boxes: torch.Tensor,
                      intrinsics: torch.Tensor) -> torch.Tensor:
        """All P points [B, P, 3] in mm, camera frame, for boxes [B, 4] xyxy in images [F, 3, H, W]."""
        cfg = self.config
        side = cfg.proc_side
        rotation, crop_k = crop_cameras(boxes, intrinsics.expand(len(boxes), 3, 3), side)
        crops = warp_crops(images, image_ids, boxes, intrinsics, rotation, crop_k, side=side,
                           pad_white=cfg.pad_white_pixels)
        crops = crops.pow(CROP_GAMMA / GAMMA).to(self.compute_dtype)
        pixels, relative3d, uncertainty = self.crop_model.heatmap_head.decode(self.crop_model(crops), self.filters)
        absolute = reconstruct_absolute(
            pixels, relative3d, uncertainty < SOLVE_UNCERTAINTY, crop_k, side=side, stride=cfg.stride_test,
            centered_stride=cfg.centered_stride, mix_3d_inside_fov=cfg.mix_3d_inside_fov,
        )
        # Back from the look-at camera of each crop (p_crop = R p) to the frame camera, metres -> mm.
        return absolute @ rotation * 1000.0

    def joints_for_boxes(self, frames: np.ndarray, boxes: list[np.ndarray]) -> list[np.ndarray]:
        """frames (T, H, W, 3) uint8 RGB and per frame boxes (N_t, 4) xyxy -> per frame (N_t, 24, 3)
        float32 mm in the camera frame (x right, y down, z forward), FOV 55 deg on the longer side."""
        n_frames, height, width = frames.shape[:3]
        if len(boxes) != n_frames:
            raise ValueError(f"boxes: one array per frame expected, got {len(boxes)} for {n_frames} frames")
        if self.filters.numel() == 0:
            self.prepare_filters()
        counts = [len(b) for b in boxes]
        flat = [self.widen_boxes(np.asarray(b, dtype=np.float64).reshape(-1, 4), height, width) for b in boxes]
        all_boxes = np.concatenate(flat, axis=0) if flat else np.zeros((0, 4))
        frame_of_box = np.repeat(np.arange(n_frames), counts)
        intrinsics = intrinsics_from_fov(height, width).to(self.device)
        joints = np.zeros((len(all_boxes), N_JOINTS, 3), dtype=np.float32)
        for start in range(0, len(all_boxes), self.batch_size):
            ids = frame_of_box[start : start + self.batch_size]
            used, local_ids = np.unique(ids, return_inverse=True)
            images = self.linear_light(frames[used])
            batch = torch.from_numpy(all_boxes[start : start + self.batch_size]).float().to(self.device)
            points = self.predict_crops(images, torch.from_numpy(local_ids).to(self.device), batch, intrinsics)
            joints[start : start + len(ids)] = points[:, -N_JOINTS:].float().cpu().numpy()
        return list(np.split(joints, np.cumsum(counts)[:-1])) if counts else []
