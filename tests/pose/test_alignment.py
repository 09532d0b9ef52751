"""pose.alignment: the camera refit recovers a known camera; face scale; overlay shifts."""

from __future__ import annotations

import numpy as np
import pytest

from pose.alignment import (
    SMPL_FOR_OPENPOSE,
    Camera,
    CameraBounds,
    face_scale,
    fit_camera,
    overlay_shifts,
    smpl_to_openpose,
)
from pose.keypoints import PoseKeypoints
from tests.pose.skeletons import standing_smpl

W, H = 512, 896


def reference_body(joints: np.ndarray, camera: Camera, visible=range(14)) -> tuple[np.ndarray, np.ndarray]:
    """(18,2) normalised OpenPose body of `joints` seen through `camera`, and scores (1 where visible)."""
    body = np.zeros((18, 2), np.float32)
    body[:14] = camera.project(smpl_to_openpose(joints)) / [W, H]
    scores = np.zeros(18, np.float32)
    scores[list(visible)] = 1.0
    return body, scores


def _known(m: float, s: float, p: float, q: float) -> Camera:
    base = Camera.default(W, H)
    return Camera(base.fx * m, base.fx * m * s, W / 2 + p, H / 2 + q)


def test_default_camera_has_a_55_degree_fov_on_the_longer_side():
    camera = Camera.default(W, H)
    assert camera.fx == pytest.approx(H / 2 / np.tan(np.radians(27.5)))
    assert (camera.cx, camera.cy) == (W / 2, H / 2)


def test_smpl_to_openpose_takes_the_head_neck_and_limb_joints():
    joints = np.arange(72, dtype=np.float32).reshape(24, 3)
    out = smpl_to_openpose(joints)
    assert out.shape == (14, 3)
    assert out[0, 0] == joints[15, 0] and out[1, 0] == joints[12, 0] and out[13, 0] == joints[7, 0]
    assert SMPL_FOR_OPENPOSE[4] == 21  # right wrist


def test_down_mode_recovers_a_known_camera():
    joints = standing_smpl()
    truth = _known(1.2, 0.9, 40.0, -60.0)
    body, scores = reference_body(joints, truth)
    fitted = fit_camera(smpl_to_openpose(joints), body, scores, W, H)
    assert fitted.fx == pytest.approx(truth.fx, rel=1e-4)
    assert fitted.fy == pytest.approx(truth.fy, rel=1e-4)
    assert fitted.cx == pytest.approx(truth.cx, abs=0.05)
    assert fitted.cy == pytest.approx(truth.cy, abs=0.05)


def test_central_mode_recovers_a_known_camera_without_legs():
    joints = standing_smpl()
    truth = _known(0.85, 1.1, -30.0, 25.0)
    body, scores = reference_body(joints, truth, visible=[0, 1, 2, 3, 5, 6])
    fitted = fit_camera(smpl_to_openpose(joints), body, scores, W, H)
    assert fitted.fx == pytest.approx(truth.fx, rel=1e-4)
    assert fitted.fy == pytest.approx(truth.fy, rel=1e-4)
    assert (fitted.cx, fitted.cy) == pytest.approx((truth.cx, truth.cy), abs=0.05)


def test_the_fit_stays_inside_the_bounds():
    joints = standing_smpl()
    body, scores = reference_body(joints, _known(2.0, 1.0, 0.0, 0.0))  # twice as large: beyond m <= 1.4
    fitted = fit_camera(smpl_to_openpose(joints), body, scores, W, H)
    assert fitted.fx == pytest.approx(Camera.default(W, H).fx * 1.4)


def test_wider_bounds_can_be_asked_for():
    joints = standing_smpl()
    truth = _known(2.0, 1.0, 0.0, 0.0)
    body, scores = reference_body(joints, truth)
    fitted = fit_camera(smpl_to_openpose(joints), body, scores, W, H, CameraBounds(m=(0.5, 3.0)))
    assert fitted.fx == pytest.approx(truth.fx, rel=1e-4)


def test_no_visible_neck_keeps_the_default_camera():
    joints = standing_smpl()
    body, scores = reference_body(joints, _known(1.2, 1.0, 10.0, 10.0), visible=[0, 2, 3, 9, 10, 12, 13])
    assert fit_camera(smpl_to_openpose(joints), body, scores, W, H) == Camera.default(W, H)


def _face(spread: float) -> PoseKeypoints:
    pose = PoseKeypoints.empty(1)
    angles = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    pose.face[0] = (np.stack([np.cos(angles), np.sin(angles)], 1) * spread + [W / 2, H / 2]) / [W, H]
    pose.face[0, 30] = [0.5, 0.5]
    pose.face_scores[0] = 1.0
    return pose


def test_face_scale_is_the_ratio_of_face_sizes():
    assert face_scale(_face(30), _face(25), W, H) == pytest.approx(1.2, rel=1e-3)


def test_face_scale_is_clipped_and_neutral_without_a_face():
    assert face_scale(_face(100), _face(20), W, H) == 1.5
    assert face_scale(_face(10), _face(20), W, H) == 0.8
    assert face_scale(PoseKeypoints.empty(1), _face(20), W, H) == 1.0


def test_overlay_shifts_follow_head_and_wrists_through_the_fitted_camera():
    joints = np.stack([standing_smpl(), np.zeros((24, 3), np.float32)])
    base, fitted = Camera.default(W, H), _known(1.1, 1.0, 20.0, -10.0)
    head, hands = overlay_shifts(joints, base, fitted)
    np.testing.assert_allclose(head[0], fitted.project(joints[0, 15]) - base.project(joints[0, 15]), rtol=1e-5)
    np.testing.assert_allclose(hands[0, 1], fitted.project(joints[0, 21]) - base.project(joints[0, 21]), rtol=1e-5)
    assert head[1].tolist() == [0, 0] and hands[1].tolist() == [[0, 0], [0, 0]]  # a frame without a person
