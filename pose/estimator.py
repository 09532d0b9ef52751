"""DWPose whole-body estimator (RTMPose SimCC head, onnxruntime): 133 keypoints per person box."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from pose.detector import make_session

INPUT_WIDTH, INPUT_HEIGHT = 288, 384
BOX_PADDING = 1.25
SIMCC_SPLIT_RATIO = 2.0
MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)
NUM_KEYPOINTS = 133


def box_to_centre_scale(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,4) xyxy -> (centre (N,2), scale (N,2)): padded by 1.25, short side enlarged to the 3:4 input aspect."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    w, h = ((boxes[:, 2:] - boxes[:, :2]) * BOX_PADDING).T
    aspect = INPUT_WIDTH / INPUT_HEIGHT
    wide = w > h * aspect
    scale = np.stack([np.where(wide, w, h * aspect), np.where(wide, w / aspect, h)], 1)
    return centre.astype(np.float32), scale.astype(np.float32)


def crop_matrix(centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """2x3 affine (no rotation) mapping `centre` to the input centre and `scale` width to the input width."""
    s = INPUT_WIDTH / scale[0]
    return np.array(
        [[s, 0, INPUT_WIDTH / 2 - s * centre[0]], [0, s, INPUT_HEIGHT / 2 - s * centre[1]]], np.float32
    )


def decode_simcc(
    simcc_x: np.ndarray, simcc_y: np.ndarray, centre: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N,K,576), (N,K,768), centre/scale (N,2) -> (keypoints (N,K,2) image pixels, scores (N,K)).

    Location is the argmax index / 2 in input pixels; score is min(max_x, max_y); scores <= 0 put the point at -1
    in input pixels before mapping back, as the release does.
    """
    locs = np.stack([simcc_x.argmax(-1), simcc_y.argmax(-1)], -1).astype(np.float32) / SIMCC_SPLIT_RATIO
    scores = np.minimum(simcc_x.max(-1), simcc_y.max(-1))
    locs[scores <= 0] = -1
    size = np.array([INPUT_WIDTH, INPUT_HEIGHT], np.float32)
    keypoints = locs / size * scale[:, None] + centre[:, None] - scale[:, None] / 2
    return keypoints.astype(np.float32), scores.astype(np.float32)


class WholeBodyEstimator:
    """DWPose 133 keypoints (COCO-WholeBody order) for each person box of one RGB image."""

    def __init__(self, session):
        self.session = session
        inputs = session.get_inputs()
        self.input_name = inputs[0].name
        self.output_names = [o.name for o in session.get_outputs()]
        # Exports with a fixed batch of 1 are run box by box; symbolic batch dims take all boxes at once.
        self.batched = not isinstance(inputs[0].shape[0], int)

    @classmethod
    def from_file(cls, path: Path, device: torch.device) -> WholeBodyEstimator:
        return cls(make_session(path, device))

    @staticmethod
    def preprocess(image_bgr: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """(H,W,3) uint8 BGR, one box's centre/scale -> (3,384,288) float32 normalised crop."""
        crop = cv2.warpAffine(image_bgr, crop_matrix(centre, scale), (INPUT_WIDTH, INPUT_HEIGHT), flags=cv2.INTER_LINEAR)
        return ((crop.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.batched:
            simcc_x, simcc_y = self.session.run(self.output_names, {self.input_name: batch})
            return simcc_x, simcc_y
        outputs = [self.session.run(self.output_names, {self.input_name: crop[None]}) for crop in batch]
        return np.concatenate([o[0] for o in outputs]), np.concatenate([o[1] for o in outputs])

    def __call__(self, image_rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H,W,3) uint8 RGB, boxes (N,4) xyxy -> (keypoints (N,133,2) pixels, scores (N,133)).

        No box: the whole image is one box, as in the DWPose release.
        """
        h, w = image_rgb.shape[:2]
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            boxes = np.array([[0, 0, w, h]], np.float32)
        image_bgr = np.ascontiguousarray(image_rgb[..., ::-1])
        centres, scales = box_to_centre_scale(boxes)
        batch = np.stack([self.preprocess(image_bgr, c, s) for c, s in zip(centres, scales, strict=True)])
        simcc_x, simcc_y = self._run(batch)
        return decode_simcc(simcc_x, simcc_y, centres, scales)
