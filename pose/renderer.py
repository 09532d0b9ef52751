"""SCAIL's 3D skeleton render: bones as capsules, analytic ray casting, Blinn-Phong-like shading (torch).

Vectorised over pixels and capsules, chunked over frames; the nearest capsule over all persons wins.
"""

from __future__ import annotations

import numpy as np
import torch

from pose.alignment import Camera

RADIUS_MM = 21.5
# Bones as (from, to) OpenPose slots: neck -> shoulders -> elbows -> wrists, neck -> hips -> knees -> ankles, neck -> head.
LIMBS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 0)]
LIMB_COLOURS = np.array([
    (255, 0, 0), (0, 255, 255), (255, 85, 0), (255, 170, 0), (0, 170, 255), (0, 85, 255), (180, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 0, 255), (85, 0, 255), (170, 0, 255), (150, 150, 150),
], np.float32)  # fmt: skip
SPECULAR_POWER = 32
DEPTH_MARGIN_MM, DEPTH_FAR_MM, DEPTH_NEAR_MM = 6000.0, 20000.0, 0.1


def shade_colours(colours_255: np.ndarray) -> np.ndarray:
    """RGB 0..255 -> the renderer's base colours c/300 + 0.15."""
    return (np.asarray(colours_255, np.float32) / 300 + 0.15).astype(np.float32)


def person_palettes(num_persons: int) -> np.ndarray:
    """(P,13,3) base colours: the standard limb colours for one person; with several, person 1 gets a pastel
    version (halfway to white) and the others the saturated one, so the first person stays distinguishable."""
    palettes = np.repeat(LIMB_COLOURS[None], num_persons, 0)
    if num_persons > 1:
        palettes[0] = (LIMB_COLOURS + 255) / 2
    return shade_colours(palettes)


def depth_range(joints: np.ndarray) -> tuple[float, float]:
    """(z_min, z_max) over the endpoints of every drawn limb of the clip; joints (T,P,14,3)."""
    ends = joints[..., np.array(LIMBS).ravel(), :].reshape(*joints.shape[:2], len(LIMBS), 2, 3)
    drawn = (np.abs(ends).sum(-1) > 0).all(-1)
    z = ends[..., 2][drawn]
    if z.size == 0:
        return 1.0, 1.0
    return float(z.min()), float(z.max())


class CapsuleRenderer:
    """Renders (T,P,14,3) mm joints in OpenPose slots to (T,H,W,3) uint8 RGB on black."""

    def __init__(self, device: torch.device, *, radius: float = RADIUS_MM, max_elements: int = 1 << 25):
        self.device = device
        self.radius = radius
        self.max_elements = max_elements  # bound on frames x pixels x capsules per chunk (memory)

    def rays(self, camera: Camera, width: int, height: int) -> torch.Tensor:
        """(H*W,3) unit ray directions through the integer pixel positions."""
        ys, xs = torch.meshgrid(
            torch.arange(height, device=self.device, dtype=torch.float32),
            torch.arange(width, device=self.device, dtype=torch.float32),
            indexing="ij",
        )
        d = torch.stack([(xs - camera.cx) / camera.fx, (ys - camera.cy) / camera.fy, torch.ones_like(xs)], -1)
        return torch.nn.functional.normalize(d.reshape(-1, 3), dim=-1)

    def hit_distance(self, rays: torch.Tensor, start: torch.Tensor, end: torch.Tensor, drawn: torch.Tensor) -> torch.Tensor:
        """Ray parameter of the first hit of each ray on each capsule, inf for a miss.

        rays (N,3) unit, from the origin; start/end (F,C,3) capsule axis ends; drawn (F,C) -> (F,N,C).
        """
        r2 = self.radius**2
        axis = end - start
        axis_len2 = (axis * axis).sum(-1)[:, None]  # (F,1,C)
        rd_axis = torch.einsum("nk,fck->fnc", rays, axis)
        rd_start = torch.einsum("nk,fck->fnc", rays, start)
        start_len2 = (start * start).sum(-1)[:, None]
        axis_start = (axis * start).sum(-1)[:, None]  # axis . start
        # Infinite cylinder around the axis, kept where the hit projects inside the segment.
        a = axis_len2 - rd_axis**2
        b = axis_len2 * rd_start - axis_start * rd_axis  # half-b with the origin at the camera
        c = axis_len2 * (start_len2 - r2) - axis_start**2
        disc = b**2 - a * c
        t_cyl = (b - disc.clamp_min(0).sqrt()) / a.clamp_min(1e-12)
        along = t_cyl * rd_axis - axis_start
        inf = torch.full_like(t_cyl, float("inf"))
        t = torch.where((disc >= 0) & (a > 1e-9) & (along > 0) & (along < axis_len2) & (t_cyl > 0), t_cyl, inf)
        # End spheres.
        rd_end = rd_start + rd_axis
        end_len2 = (end * end).sum(-1)[:, None]
        for rd_centre, centre_len2 in ((rd_start, start_len2), (rd_end, end_len2)):
            disc_s = rd_centre**2 - (centre_len2 - r2)
            t_s = rd_centre - disc_s.clamp_min(0).sqrt()
            t = torch.minimum(t, torch.where((disc_s >= 0) & (t_s > 0), t_s, inf))
        return torch.where(drawn[:, None], t, inf)

    @torch.no_grad()
    def render(self, joints: np.ndarray, colours: np.ndarray, camera: Camera, width: int, height: int) -> torch.Tensor:
        """joints (T,P,14,3) mm (all-zero = missing), colours (P,13,3) in 0..1 -> (T,H,W,3) uint8 on the device."""
        joints_t = torch.as_tensor(np.ascontiguousarray(joints, np.float32), device=self.device)
        num_frames, num_persons = joints_t.shape[:2]
        limbs = torch.tensor(LIMBS, device=self.device)
        start = joints_t[:, :, limbs[:, 0]].reshape(num_frames, -1, 3)  # (T,C,3), C = P*13
        end = joints_t[:, :, limbs[:, 1]].reshape(num_frames, -1, 3)
        drawn = (start.abs().sum(-1) > 0) & (end.abs().sum(-1) > 0)
        base = torch.as_tensor(np.ascontiguousarray(colours, np.float32), device=self.device).reshape(-1, 3)  # (C,3)
        z_min, z_max = depth_range(np.asarray(joints))
        z_near = max(z_min, DEPTH_NEAR_MM)
        z_span = min(z_max + DEPTH_MARGIN_MM, DEPTH_FAR_MM) - DEPTH_NEAR_MM
        rays = self.rays(camera, width, height)
        half = torch.nn.functional.normalize(-rays + rays.new_tensor([0.0, 0.0, -1.0]), dim=-1)  # (N,3)
        out = torch.empty((num_frames, height * width, 3), dtype=torch.uint8, device=self.device)
        chunk = max(1, self.max_elements // max(1, rays.shape[0] * start.shape[1]))
        for f0 in range(0, num_frames, chunk):
            sl = slice(f0, f0 + chunk)
            t_all = self.hit_distance(rays, start[sl], end[sl], drawn[sl])
            t, nearest = t_all.min(-1)  # (F,N)
            hit = torch.isfinite(t)
            t = torch.where(hit, t, torch.zeros_like(t))
            point = t[..., None] * rays  # (F,N,3)
            a = torch.gather(start[sl], 1, nearest[..., None].expand(-1, -1, 3))
            axis = torch.gather(end[sl], 1, nearest[..., None].expand(-1, -1, 3)) - a
            along = ((point - a) * axis).sum(-1, keepdim=True) / (axis * axis).sum(-1, keepdim=True).clamp_min(1e-12)
            normal = torch.nn.functional.normalize(point - (a + along.clamp(0, 1) * axis), dim=-1)
            diffuse = (-normal[..., 2]).clamp_min(0)
            specular = (normal * half).sum(-1).clamp_min(0) ** SPECULAR_POWER
            depth = (1 - (point[..., 2] - z_near) / z_span).clamp(0, 1)
            rgb = base[nearest] * ((0.3 + 0.7 * diffuse) * depth)[..., None] + (0.5 * specular * depth)[..., None]
            rgb = torch.where(hit[..., None], rgb.clamp(0, 1) * 255, torch.zeros_like(rgb))
            out[sl] = rgb.to(torch.uint8)
        return out.reshape(num_frames, height, width, 3)
