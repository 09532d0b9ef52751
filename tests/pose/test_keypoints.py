"""pose.keypoints: COCO-WholeBody 133 -> OpenPose-18 body, face and per-person hands."""

from __future__ import annotations

import numpy as np
import pytest

from pose.keypoints import PoseKeypoints, to_openpose

W, H = 200, 100


def _people(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint i of person p sits at (i + 1000 p, i); every score 0.9."""
    points = np.stack([np.arange(133) + 0.0, np.arange(133) + 0.0], 1)[None].repeat(count, 0)
    points[..., 0] += 1000 * np.arange(count)[:, None]
    return points.astype(np.float32), np.full((count, 133), 0.9, np.float32)


def test_body_follows_the_openpose_order():
    points, scores = _people(1)
    pose = to_openpose(points, scores, W, H)
    # OpenPose slot -> COCO index (nose, neck, R arm, L arm, R leg, L leg, R eye, L eye, R ear, L ear).
    coco_for_slot = [0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3]
    for slot, coco in enumerate(coco_for_slot):
        if coco is not None:
            assert pose.body[0, slot, 0] * W == pytest.approx(coco), slot


def test_neck_is_the_shoulder_midpoint_valid_only_with_both_shoulders():
    points, scores = _people(2)
    scores[1, 6] = 0.2
    pose = to_openpose(points, scores, W, H)
    np.testing.assert_allclose(pose.body[0, 1] * [W, H], [5.5, 5.5])
    assert pose.body_scores[:, 1].tolist() == [1.0, 0.0]


def test_coordinates_are_normalised_by_width_and_height():
    points, scores = _people(1)
    pose = to_openpose(points, scores, W, H)
    np.testing.assert_allclose(pose.body[0, 0], [0, 0])
    np.testing.assert_allclose(pose.face[0, 0], [23 / W, 23 / H])


def test_face_is_points_23_to_90():
    points, scores = _people(1)
    pose = to_openpose(points, scores, W, H)
    assert pose.face.shape == (1, 68, 2)
    assert pose.face[0, -1, 1] * H == pytest.approx(90)


def test_each_person_keeps_its_own_left_and_right_hand():
    points, scores = _people(3)
    pose = to_openpose(points, scores, W, H)
    assert pose.hands.shape == (3, 2, 21, 2)
    for person in range(3):
        left, right = pose.hands[person, :, 0] * [W, H]
        assert left.tolist() == pytest.approx([91 + 1000 * person, 91])
        assert right.tolist() == pytest.approx([112 + 1000 * person, 112])


def test_scores_travel_with_their_points():
    points, scores = _people(1)
    scores[0, 8] = 0.1  # right elbow (COCO 8) -> OpenPose slot 3
    scores[0, 120] = 0.2  # right hand point 8
    pose = to_openpose(points, scores, W, H)
    assert pose.body_scores[0, 3] == np.float32(0.1)
    assert pose.hand_scores[0, 1, 8] == np.float32(0.2)


def test_concatenate_keeps_each_persons_points_in_order():
    first, second = PoseKeypoints.empty(1), PoseKeypoints.empty(2)
    second.body[:] = 0.5
    merged = PoseKeypoints.concatenate([first, second])
    assert merged.num_persons == 3
    assert (merged.body[0] == 0).all() and (merged.body[1:] == 0.5).all()
