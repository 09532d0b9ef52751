"""The 2D marks SCAIL draws over the capsule render: head sticks and dots, hands, face (OpenCV, RGB)."""

from __future__ import annotations

import colorsys
import math

import cv2
import numpy as np

from pose.keypoints import FACE_CENTRE, VALID_SCORE, PoseKeypoints

# Head sticks as OpenPose body slots: nose-R eye, R eye-R ear, nose-L eye, L eye-L ear.
HEAD_STICKS = [(0, 14), (14, 16), (0, 15), (15, 17)]
HEAD_STICK_COLOURS = [(85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170)]
HEAD_STICK_HALF_WIDTH = 4
HEAD_STICK_INTENSITY = 0.6
HEAD_DOTS = [0, 14, 15, 16, 17]
# OpenPose's per-point colours; the head dots use entries 0, 14-17.
BODY_POINT_COLOURS = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]  # fmt: skip
HEAD_DOT_RADIUS = 4
HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11), (11, 12),
              (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20)]  # fmt: skip
HAND_EDGE_COLOURS = [tuple(int(c * 255) for c in colorsys.hsv_to_rgb(i / len(HAND_EDGES), 1, 1)) for i in range(20)]
HAND_DOT_COLOUR = (0, 0, 255)
FACE_POINTS = [*range(17, 27), *range(36, 68)]  # brows, eyes, mouth: no jaw, no nose
FACE_COLOUR = (255, 255, 255)
MIN_COORD = 0.01  # normalised coordinates at or below this are "not detected" in the release's drawing code


def line_width(width: int, height: int) -> int:
    """Hand line width clamp(int(min(H,W)/300), 1, 2); also the hand and face dot radius."""
    return min(2, max(1, int(min(width, height) / 300)))


def _shown(points: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(...,2) normalised points, (...) scores -> which to draw."""
    return (scores >= VALID_SCORE) & (points > MIN_COORD).all(-1)


def _pixel(point: np.ndarray) -> tuple[int, int]:
    return int(point[0]), int(point[1])


def draw_head(canvas: np.ndarray, body: np.ndarray, shown: np.ndarray) -> None:
    """Eye/ear sticks at 60% intensity, then full-colour dots; body (18,2) pixels, shown (18,) bool."""
    sticks = np.zeros_like(canvas)
    for (i, j), colour in zip(HEAD_STICKS, HEAD_STICK_COLOURS, strict=True):
        if not (shown[i] and shown[j]):
            continue
        (x0, y0), (x1, y1) = body[i], body[j]
        length = math.hypot(x1 - x0, y1 - y0)
        angle = math.degrees(math.atan2(y1 - y0, x1 - x0))
        polygon = cv2.ellipse2Poly(
            (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int(length / 2), HEAD_STICK_HALF_WIDTH), int(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(sticks, polygon, colour)
    stick_pixels = sticks.any(-1)
    canvas[stick_pixels] = (sticks[stick_pixels] * HEAD_STICK_INTENSITY).astype(np.uint8)
    for i in HEAD_DOTS:
        if shown[i]:
            cv2.circle(canvas, _pixel(body[i]), HEAD_DOT_RADIUS, BODY_POINT_COLOURS[i], thickness=-1)


def draw_hand(canvas: np.ndarray, hand: np.ndarray, shown: np.ndarray, width: int) -> None:
    """20 rainbow edges and blue dots; hand (21,2) pixels, shown (21,) bool."""
    for (i, j), colour in zip(HAND_EDGES, HAND_EDGE_COLOURS, strict=True):
        if shown[i] and shown[j]:
            cv2.line(canvas, _pixel(hand[i]), _pixel(hand[j]), colour, thickness=width)
    for i in np.flatnonzero(shown):
        cv2.circle(canvas, _pixel(hand[i]), width, HAND_DOT_COLOUR, thickness=-1)


def draw_face(canvas: np.ndarray, face: np.ndarray, shown: np.ndarray, radius: int) -> None:
    """White dots at brows, eyes and mouth; face (68,2) pixels, shown (68,) bool."""
    for i in FACE_POINTS:
        if shown[i]:
            cv2.circle(canvas, _pixel(face[i]), radius, FACE_COLOUR, thickness=-1)


def draw_overlay(
    pose: PoseKeypoints,
    width: int,
    height: int,
    *,
    head_shift: np.ndarray | None = None,
    hand_shifts: np.ndarray | None = None,
    face_scale: float = 1.0,
) -> np.ndarray:
    """The overlay of one frame's persons on black: (H,W,3) uint8 RGB.

    head_shift (P,2) pixels moves body and face points, hand_shifts (P,2,2) each hand; the face landmarks are
    scaled by `face_scale` about the nose tip (landmark 30) before shifting.
    """
    canvas = np.zeros((height, width, 3), np.uint8)
    size = np.array([width, height], np.float32)
    thickness = line_width(width, height)
    persons = pose.num_persons
    head_shift = np.zeros((persons, 2)) if head_shift is None else head_shift
    hand_shifts = np.zeros((persons, 2, 2)) if hand_shifts is None else hand_shifts
    for p in range(persons):
        face = pose.face[p] * size
        face = face[FACE_CENTRE] + (face - face[FACE_CENTRE]) * face_scale
        draw_head(canvas, pose.body[p] * size + head_shift[p], _shown(pose.body[p], pose.body_scores[p]))
        for side in range(2):
            hand = pose.hands[p, side] * size + hand_shifts[p, side]
            draw_hand(canvas, hand, _shown(pose.hands[p, side], pose.hand_scores[p, side]), thickness)
        draw_face(canvas, face + head_shift[p], _shown(pose.face[p], pose.face_scores[p]), thickness)
    return canvas


def compose(render: np.ndarray, overlay: np.ndarray) -> np.ndarray:
    """Overlay pixels that are not black replace the render's, in place; (H,W,3) uint8 each."""
    mask = overlay.any(-1)
    render[mask] = overlay[mask]
    return render
