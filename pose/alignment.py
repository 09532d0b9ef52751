"""Align the driving skeleton to the reference person by refitting the render camera (no bone retargeting).

The driving 3D joints (frame 0) are projected through K' = [[f*m, 0, W/2+p], [0, f*m*s, H/2+q]] and (m, s, p, q)
are fitted with bounded L-BFGS-B to the reference image's 2D body. All frames are then rendered with K'; the
2D overlay follows through per-frame shifts (head and hand joints projected through K' minus through K) and
the face landmarks are scaled by the reference-to-driving face size ratio.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from pose.keypoints import FACE_CENTRE, VALID_SCORE, PoseKeypoints

log = logging.getLogger(__name__)

FOV_DEGREES = 55.0
# OpenPose slot i (0-13) is SMPL joint SMPL_FOR_OPENPOSE[i].
SMPL_FOR_OPENPOSE = [15, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7]
SMPL_HEAD, SMPL_LEFT_WRIST, SMPL_RIGHT_WRIST = 15, 20, 21
NECK = 1
LOWER_LIMBS = [9, 10, 12, 13]  # knees and ankles
CENTRAL = [0, 2, 3, 5, 6]  # head, shoulders, elbows
FACE_SCALE_RANGE = (0.8, 1.5)


@dataclass(frozen=True)
class Camera:
    """Pinhole intrinsics in pixels, OpenCV axes (x right, y down, z forward), millimetres in."""

    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def default(cls, width: int, height: int) -> Camera:
        """FOV 55 degrees on the longer side, principal point at the image centre."""
        f = max(width, height) / (2 * math.tan(math.radians(FOV_DEGREES / 2)))
        return cls(f, f, width / 2, height / 2)

    def project(self, points: np.ndarray) -> np.ndarray:
        """(...,3) camera-space points -> (...,2) pixels."""
        z = np.where(np.abs(points[..., 2]) < 1e-6, 1e-6, points[..., 2])
        return np.stack([self.fx * points[..., 0] / z + self.cx, self.fy * points[..., 1] / z + self.cy], -1)


@dataclass(frozen=True)
class CameraBounds:
    """Search bounds of the refit: m focal scale, s aspect, (p, q) principal-point shift as fractions of W, H."""

    m: tuple[float, float] = (0.7, 1.4)
    s: tuple[float, float] = (0.8, 1.15)
    p: float = 1.0
    q: float = 1.0


def smpl_to_openpose(joints: np.ndarray) -> np.ndarray:
    """(...,24,3) SMPL joints -> (...,14,3) in OpenPose body slots 0-13."""
    return joints[..., SMPL_FOR_OPENPOSE, :]


def fit_camera(
    joints: np.ndarray,
    body: np.ndarray,
    body_scores: np.ndarray,
    width: int,
    height: int,
    bounds: CameraBounds = CameraBounds(),  # noqa: B008 - frozen dataclass
) -> Camera:
    """Refit the camera so that the driving joints land on the reference body.

    joints (14,3) mm in OpenPose slots (zeros = missing); body (18,2) normalised and body_scores (18,) of the
    reference person. "down" mode (knees and ankles visible in both) weighs the legs, else "central" mode weighs
    the neck. Returns the default camera when the neck is not visible in both.
    """
    base = Camera.default(width, height)
    target = np.asarray(body[:14], np.float64) * [width, height]
    visible = (np.abs(joints).sum(-1) > 0) & (joints[:, 2] > 0) & (np.asarray(body_scores[:14]) >= VALID_SCORE)
    if not visible[NECK]:
        log.warning("alignment skipped: the neck is not visible in both the reference and the driving frame 0")
        return base
    if visible[LOWER_LIMBS].all():
        others, neck_weight, other_weight = LOWER_LIMBS, 1.0, 4.0
    else:
        others, neck_weight, other_weight = [i for i in CENTRAL if visible[i]], 8.0, 1.0
    points = [NECK, *others]
    weights = np.array([neck_weight] + [other_weight] * len(others))
    xy = joints[points, :2] / joints[points, 2:3]  # normalised image-plane coordinates
    goal = target[points]
    f, cx, cy = base.fx, base.cx, base.cy

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        m, s, p_frac, q_frac = params
        u = f * m * xy[:, 0] + cx + p_frac * width
        v = f * m * s * xy[:, 1] + cy + q_frac * height
        du, dv = u - goal[:, 0], v - goal[:, 1]
        value = float((weights * (du**2 + dv**2)).sum())
        grad = 2 * np.array([
            (weights * (du * f * xy[:, 0] + dv * f * s * xy[:, 1])).sum(),
            (weights * dv * f * m * xy[:, 1]).sum(),
            (weights * du).sum() * width,
            (weights * dv).sum() * height,
        ])  # fmt: skip
        return value, grad

    result = minimize(
        loss, np.array([1.0, 1.0, 0.0, 0.0]), jac=True, method="L-BFGS-B",
        bounds=[bounds.m, bounds.s, (-bounds.p, bounds.p), (-bounds.q, bounds.q)],
        options={"maxiter": 500, "ftol": 1e-15, "gtol": 1e-10},
    )  # fmt: skip
    m, s, p_frac, q_frac = result.x
    log.info("camera refit (%s mode): m=%.3f s=%.3f p=%.1f q=%.1f", "down" if others == LOWER_LIMBS else "central",
             m, s, p_frac * width, q_frac * height)  # fmt: skip
    return Camera(f * m, f * m * s, cx + p_frac * width, cy + q_frac * height)


def face_scale(reference: PoseKeypoints, driving: PoseKeypoints, width: int, height: int) -> float:
    """Mean landmark distance to the nose tip, reference over driving (first persons), clipped to [0.8, 1.5].

    1.0 when either face is not visible.
    """

    def spread(pose: PoseKeypoints) -> float | None:
        if pose.num_persons == 0 or pose.face_scores[0, FACE_CENTRE] < VALID_SCORE:
            return None
        valid = pose.face_scores[0] >= VALID_SCORE
        face = pose.face[0] * [width, height]
        distances = np.linalg.norm(face[valid] - face[FACE_CENTRE], axis=-1)
        return float(distances.mean()) if valid.sum() > 1 else None

    ref, drv = spread(reference), spread(driving)
    if not ref or not drv:
        return 1.0
    return float(np.clip(ref / drv, *FACE_SCALE_RANGE))


def overlay_shifts(joints: np.ndarray, base: Camera, fitted: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(T,24,3) SMPL joints of one person -> pixel shifts of the 2D overlay: head (T,2), hands (T,2,2) [left, right].

    A shift is where the joint lands through the fitted camera minus through the default one; 0 where missing.
    """
    picked = joints[:, [SMPL_HEAD, SMPL_LEFT_WRIST, SMPL_RIGHT_WRIST]]
    present = (np.abs(picked).sum(-1) > 0) & (picked[..., 2] > 0)
    shifts = np.where(present[..., None], fitted.project(picked) - base.project(picked), 0.0)
    return shifts[:, 0], shifts[:, 1:]
