"""COCO-WholeBody 133 keypoints -> OpenPose-18 body, 68 face landmarks and two 21-point hands, per person."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VALID_SCORE = 0.3
# COCO-WholeBody layout: 0-16 body, 17-22 feet, 23-90 face, 91-111 left hand, 112-132 right hand.
FACE = slice(23, 91)
LEFT_HAND = slice(91, 112)
RIGHT_HAND = slice(112, 133)
FACE_CENTRE = 30  # nose tip among the 68 face landmarks: the face is scaled and measured about it
# After the neck is appended as point 17, OpenPose slot OPENPOSE_SLOTS[i] takes COCO point COCO_SOURCES[i].
OPENPOSE_SLOTS = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
COCO_SOURCES = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]


@dataclass
class PoseKeypoints:
    """2D keypoints of the persons of one image, normalised by (W, H); a point is valid where its score >= 0.3.

    body (N,18,2) OpenPose order, body_scores (N,18); face (N,68,2), face_scores (N,68);
    hands (N,2,21,2) [left, right] of the same person, hand_scores (N,2,21).
    """

    body: np.ndarray
    body_scores: np.ndarray
    face: np.ndarray
    face_scores: np.ndarray
    hands: np.ndarray
    hand_scores: np.ndarray

    @property
    def num_persons(self) -> int:
        return len(self.body)

    @classmethod
    def concatenate(cls, poses: list[PoseKeypoints]) -> PoseKeypoints:
        """The persons of several PoseKeypoints, in order, as one."""
        return cls(*(np.concatenate([getattr(p, f) for p in poses]) for f in cls.__dataclass_fields__))

    @classmethod
    def empty(cls, count: int = 0) -> PoseKeypoints:
        """`count` persons with every point invalid (zeros, score 0)."""
        return cls(
            np.zeros((count, 18, 2), np.float32), np.zeros((count, 18), np.float32),
            np.zeros((count, 68, 2), np.float32), np.zeros((count, 68), np.float32),
            np.zeros((count, 2, 21, 2), np.float32), np.zeros((count, 2, 21), np.float32),
        )  # fmt: skip


def to_openpose(keypoints: np.ndarray, scores: np.ndarray, width: int, height: int) -> PoseKeypoints:
    """(N,133,2) pixels and (N,133) scores -> PoseKeypoints normalised by (width, height).

    The neck is the shoulders' midpoint, scored 1 when both shoulders are valid and 0 otherwise.
    Each person keeps its own two hands (never mixed across persons).
    """
    keypoints = np.asarray(keypoints, np.float32).reshape(-1, 133, 2)
    scores = np.asarray(scores, np.float32).reshape(-1, 133)
    neck = keypoints[:, [5, 6]].mean(1, keepdims=True)
    neck_score = (scores[:, [5, 6]] > VALID_SCORE).all(1, keepdims=True).astype(np.float32)
    body = np.concatenate([keypoints[:, :17], neck], 1)
    body_scores = np.concatenate([scores[:, :17], neck_score], 1)
    body[:, OPENPOSE_SLOTS] = body[:, COCO_SOURCES]
    body_scores[:, OPENPOSE_SLOTS] = body_scores[:, COCO_SOURCES]
    size = np.array([width, height], np.float32)
    return PoseKeypoints(
        body=body / size,
        body_scores=body_scores,
        face=keypoints[:, FACE] / size,
        face_scores=scores[:, FACE],
        hands=np.stack([keypoints[:, LEFT_HAND], keypoints[:, RIGHT_HAND]], 1) / size,
        hand_scores=np.stack([scores[:, LEFT_HAND], scores[:, RIGHT_HAND]], 1),
    )
