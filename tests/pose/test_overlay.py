"""pose.overlay: head sticks and dots, hands, face marks, and how the overlay replaces render pixels."""

from __future__ import annotations

import numpy as np

from pose.keypoints import PoseKeypoints
from pose.overlay import BODY_POINT_COLOURS, HAND_EDGE_COLOURS, HEAD_STICK_COLOURS, compose, draw_overlay, line_width

W, H = 200, 160


def _head() -> PoseKeypoints:
    pose = PoseKeypoints.empty(1)
    pose.body[0, [0, 14, 16]] = np.array([[100, 80], [130, 80], [170, 80]]) / [W, H]  # nose, R eye, R ear
    pose.body_scores[0, [0, 14, 16]] = 0.9
    return pose


def test_head_sticks_are_drawn_at_60_percent_with_full_colour_dots():
    canvas = draw_overlay(_head(), W, H)
    stick = np.array(HEAD_STICK_COLOURS[1]) * 0.6  # R eye -> R ear, between x 130 and 170
    np.testing.assert_allclose(canvas[80, 150], stick.astype(np.uint8), atol=1)
    assert tuple(canvas[80, 100]) == BODY_POINT_COLOURS[0]  # nose dot
    assert tuple(canvas[80, 170]) == BODY_POINT_COLOURS[16]  # right ear dot
    assert not canvas[80, 40].any()  # left side absent


def test_points_below_the_score_threshold_are_not_drawn():
    pose = _head()
    pose.body_scores[0, 16] = 0.2
    canvas = draw_overlay(pose, W, H)
    assert not canvas[80, 170].any() and not canvas[80, 160].any()


def test_hand_edges_need_both_ends_and_use_the_rainbow():
    pose = PoseKeypoints.empty(1)
    hand = np.zeros((21, 2))
    hand[0], hand[1], hand[2] = (50, 50), (50, 90), (50, 130)
    pose.hands[0, 1] = hand / [W, H]
    pose.hand_scores[0, 1, :2] = 0.9  # point 2 not detected
    canvas = draw_overlay(pose, W, H)
    assert tuple(canvas[70, 50]) == HAND_EDGE_COLOURS[0]
    assert not canvas[110, 50].any()
    assert tuple(canvas[50, 50]) == (0, 0, 255)  # blue joint dot


def test_face_marks_skip_the_jaw_and_nose():
    pose = PoseKeypoints.empty(1)
    pose.face[0] = (np.stack([np.arange(68) * 2 + 20, np.full(68, 40)], 1)) / [W, H]
    pose.face_scores[0] = 0.9
    canvas = draw_overlay(pose, W, H)
    assert tuple(canvas[40, 20 + 2 * 40]) == (255, 255, 255)  # an eye landmark
    assert not canvas[40, 20 + 2 * 5].any()  # a jaw landmark
    assert not canvas[40, 20 + 2 * 31].any()  # a nostril


def test_shifts_move_the_head_and_the_face_scale_spreads_the_face():
    pose = _head()
    canvas = draw_overlay(pose, W, H, head_shift=np.array([[0.0, 30.0]]))
    assert tuple(canvas[110, 100]) == BODY_POINT_COLOURS[0] and not canvas[80, 100].any()
    face = PoseKeypoints.empty(1)
    face.face[0, 30] = (100 / W, 80 / H)
    face.face[0, 40] = (110 / W, 80 / H)
    face.face_scores[0, [30, 40]] = 0.9
    scaled = draw_overlay(face, W, H, face_scale=1.5)
    assert scaled[80, 115].all() and not scaled[80, 110].any()


def test_line_width_grows_with_the_canvas_up_to_2():
    assert line_width(512, 512) == 1 and line_width(640, 896) == 2 and line_width(2000, 2000) == 2


def test_compose_replaces_only_non_black_overlay_pixels():
    render = np.full((4, 4, 3), 50, np.uint8)
    overlay = np.zeros((4, 4, 3), np.uint8)
    overlay[1, 2] = (0, 0, 9)
    out = compose(render, overlay)
    assert tuple(out[1, 2]) == (0, 0, 9) and tuple(out[0, 0]) == (50, 50, 50)
