"""Camera geometry of NLF: default intrinsics, look-at crops, heatmap decoding, absolute 3D solve.

Shapes: B crops, P points. Pixel coordinates are OpenCV style (x right, y down), camera axes x right,
y down, z forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pose.alignment import FOV_DEGREES


def intrinsics_from_fov(height: int, width: int) -> torch.Tensor:
    """K [3, 3] with the field of view (FOV_DEGREES) on the longer side and the principal point at the pixel
    centre ((W-1)/2, (H-1)/2, NLF's convention; the renderer's camera uses (W/2, H/2))."""
    focal = max(height, width) / (2.0 * math.tan(math.radians(FOV_DEGREES) / 2.0))
    return torch.tensor([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def to_homogeneous(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def lookat_rotation(forward: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """Rotations [B, 3, 3] whose rows are the new x, y, z axes: z along `forward` [B, 3], y towards -`up`."""
    new_z = F.normalize(forward, dim=-1)
    new_x = torch.linalg.cross(new_z, up.expand_as(new_z))
    # Looking straight along `up`: any x orthogonal to z will do.
    fallback = torch.stack([new_z[:, 2], torch.zeros_like(new_z[:, 2]), -new_z[:, 0]], dim=1)
    new_x = torch.where(torch.linalg.norm(new_x, dim=-1, keepdim=True) == 0, fallback, new_x)
    new_x = F.normalize(new_x, dim=-1)
    new_y = torch.linalg.cross(new_z, new_x)
    return torch.stack([new_x, new_y, new_z], dim=1)


def crop_cameras(boxes: torch.Tensor, intrinsics: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Virtual crop cameras looking at each box centre, zoomed so the box's longer side fills `side` px.

    boxes [B, 4] xyxy pixels, intrinsics [B, 3, 3] -> (rotation R [B, 3, 3] with p_crop = R p_cam,
    crop intrinsics K' [B, 3, 3]).
    """
    x0, y0, x1, y1 = boxes.unbind(-1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    # Centre, then the mid-points of the top, right, bottom and left sides.
    points = torch.stack(
        [torch.stack(p, dim=-1) for p in ((cx, cy), (cx, y0), (x1, cy), (cx, y1), (x0, cy))], dim=1
    )
    rays = to_homogeneous(points) @ torch.linalg.inv(intrinsics).mT
    up = torch.tensor([0.0, -1.0, 0.0], device=boxes.device, dtype=boxes.dtype)
    rotation = lookat_rotation(rays[:, 0], up)
    sides = rays[:, 1:] @ (intrinsics @ rotation).mT
    sides = sides[..., :2] / sides[..., 2:]
    vertical = torch.linalg.norm(sides[:, 0] - sides[:, 2], dim=-1)
    horizontal = torch.linalg.norm(sides[:, 1] - sides[:, 3], dim=-1)
    scale = side / torch.maximum(vertical, horizontal)
    crop_k = torch.zeros_like(intrinsics)
    crop_k[:, :2, :2] = intrinsics[:, :2, :2] * scale[:, None, None]
    crop_k[:, :2, 2] = side / 2
    crop_k[:, 2, 2] = 1.0
    return rotation, crop_k


def heatmap_to_image(coords: torch.Tensor, side: int, stride: int, centered_stride: bool) -> torch.Tensor:
    """Soft-argmax coordinates in [0, 1] -> crop pixels (e.g. c * 352 + 16 for side 384, stride 32)."""
    last_centre = (side - 1) - (side - 1) % stride
    pixels = coords * last_centre
    return pixels + stride // 2 if centered_stride else pixels


def heatmap_to_metric(coords: torch.Tensor, side: int, stride: int, centered_stride: bool,
                      box_size_m: float) -> torch.Tensor:
    """[..., 3] in [0, 1] -> metres relative to the crop: xy through the pixel mapping, z times the box size."""
    xy = heatmap_to_image(coords[..., :2], side, stride, centered_stride) * box_size_m / side
    return torch.cat([xy, coords[..., 2:] * box_size_m], dim=-1)


def is_within_fov(pixels: torch.Tensor, side: int, stride: int, centered_stride: bool,
                  border_factor: float) -> torch.Tensor:
    """[B, P, 2] crop pixels -> [B, P] bool: inside the crop minus a border of `border_factor` strides."""
    offset = 0.0 if centered_stride else -stride / 2
    lower = stride * border_factor + offset
    upper = side - stride * border_factor + offset
    return ((pixels >= lower) & (pixels <= upper)).all(dim=-1)


def _masked_rms(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMS over points and coordinates of x [B, P, 2] where mask [B, P]; [B, 1, 1]."""
    m = mask[..., None].to(x.dtype)
    mean_sq = (x.square() * m).sum(dim=(1, 2), keepdim=True) / (m.sum(dim=(1, 2), keepdim=True) * x.shape[-1])
    return torch.sqrt(torch.nan_to_num(mean_sq) + 1e-10)


def solve_translation(normalised2d: torch.Tensor, relative3d: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Translation t [B, 3] such that relative3d + t projects onto normalised2d (weighted least squares).

    normalised2d [B, P, 2] (K^-1 applied), relative3d [B, P, 3], valid [B, P]. For each point:
    (tx - u tz) = u z - x and (ty - v tz) = v z - y; both sides RMS-normalised, ridge 1e-4.
    """
    n_batch, n_points = normalised2d.shape[:2]
    scale2d = _masked_rms(normalised2d, valid)
    lhs_uv = (normalised2d / scale2d).reshape(n_batch, 2 * n_points, 1)
    eye = torch.eye(2, device=normalised2d.device, dtype=normalised2d.dtype).repeat(n_batch, n_points, 1)
    design = torch.cat([eye, -lhs_uv], dim=2)
    rhs = normalised2d * relative3d[..., 2:] - relative3d[..., :2]
    scale_rhs = _masked_rms(rhs, valid)
    rhs = (rhs / scale_rhs).reshape(n_batch, 2 * n_points, 1)
    weights = (valid.to(design.dtype) + 1e-8).repeat_interleave(2, dim=1)
    weighted = weights[..., None] * design
    gram = weighted.mT @ design + 1e-4 * torch.eye(3, device=design.device, dtype=design.dtype)
    chol, _ = torch.linalg.cholesky_ex(gram)
    solution = torch.cholesky_solve(weighted.mT @ rhs, chol)[..., 0]
    scale = scale_rhs[:, :, 0]
    return torch.cat([solution[:, :2] * scale, solution[:, 2:] * scale / scale2d[:, :, 0]], dim=1)


def project(points: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """[B, P, 3] -> [B, P, 2] pixels, depth clamped at 0.1 (no flips behind the camera)."""
    normalised = points / points[..., 2:].clamp(min=0.1)
    return normalised @ intrinsics[:, :2, :].mT


def reconstruct_absolute(pixels: torch.Tensor, relative3d: torch.Tensor, valid: torch.Tensor,
                         intrinsics: torch.Tensor, *, side: int, stride: int, centered_stride: bool,
                         mix_3d_inside_fov: float) -> torch.Tensor:
    """Absolute crop-camera points [B, P, 3] (metres) from 2D crop pixels and root-relative 3D.

    Points trusted for the solve: inside the crop and `valid` (low uncertainty). Points that land inside
    the crop take a blend of the 2D back-projection and the 3D prediction; others keep the 3D prediction.
    """
    normalised = (to_homogeneous(pixels) @ torch.linalg.inv(intrinsics).mT)[..., :2]
    trusted = is_within_fov(pixels, side, stride, centered_stride, border_factor=1.0) & valid
    translation = solve_translation(normalised, relative3d, trusted)
    absolute_3d = relative3d + translation[:, None]
    depth = relative3d[..., 2] + translation[:, None, 2]
    absolute_2d = to_homogeneous(normalised) * depth[..., None]
    blended = mix_3d_inside_fov * absolute_3d + (1 - mix_3d_inside_fov) * absolute_2d
    inside = is_within_fov(project(absolute_3d, intrinsics), side, stride, centered_stride, border_factor=0.6)
    inside = inside & (absolute_3d[..., 2] > 0.001)
    return torch.where(inside[..., None], blended, absolute_3d)
