"""YOLOX person detector (onnxruntime): preprocessing, anchor decoding and NMS of the DWPose release."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from common.errors import VolumeFileError
from common.files import require_file

log = logging.getLogger(__name__)

INPUT_SIZE = 640
STRIDES = (8, 16, 32)
PAD_VALUE = 114
PERSON_CLASS = 0


def make_session(path: Path, device: torch.device):
    """An onnxruntime session on CUDA when asked for and available, else on CPU."""
    import onnxruntime as ort

    path = Path(path)
    require_file(path)
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types for bad files
        raise VolumeFileError(path, f"onnxruntime cannot load it ({type(exc).__name__}: {exc})") from None
    if device.type == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        # onnxruntime falls back to the CPU silently when its CUDA libraries do not load: say so once.
        log.warning("%s runs on the CPU: onnxruntime's CUDA provider is not usable here (available: %s)",
                    path.name, ", ".join(ort.get_available_providers()))  # fmt: skip
    return session


def anchor_grid(size: int = INPUT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(grid (A,2) cell x,y; stride (A,1)) for the anchors in stride order 8, 16, 32, row-major."""
    grids, strides = [], []
    for stride in STRIDES:
        cells = size // stride
        ys, xs = np.mgrid[:cells, :cells]
        grids.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((cells * cells, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the kept boxes, best first (greedy NMS, inclusive-pixel areas as in the DWPose release)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[best] + areas[rest] - inter) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class PersonDetector:
    """Person boxes of one RGB image, xyxy in image pixels, best score first."""

    def __init__(self, session, *, score_threshold: float = 0.3, iou_threshold: float = 0.45):
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.grid, self.strides = anchor_grid()

    @classmethod
    def from_file(cls, path: Path, device: torch.device) -> PersonDetector:
        return cls(make_session(path, device))

    @staticmethod
    def preprocess(image_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """(H,W,3) uint8 BGR -> ((1,3,640,640) float32 raw 0..255, resize ratio); pasted top-left on grey 114."""
        h, w = image_bgr.shape[:2]
        ratio = min(INPUT_SIZE / h, INPUT_SIZE / w)
        resized = cv2.resize(image_bgr, (int(w * ratio), int(h * ratio)), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((INPUT_SIZE, INPUT_SIZE, 3), PAD_VALUE, np.uint8)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        return canvas.transpose(2, 0, 1)[None].astype(np.float32), ratio

    def decode(self, output: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
        """(A,85) raw head output -> (boxes (N,4) xyxy in image pixels, scores (N,)) of persons after NMS."""
        centres = (output[:, :2] + self.grid) * self.strides
        sizes = np.exp(output[:, 2:4]) * self.strides
        scores = output[:, 4] * output[:, 5 + PERSON_CLASS]
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1) / ratio
        candidates = np.flatnonzero(scores > self.score_threshold)
        keep = candidates[nms(boxes[candidates], scores[candidates], self.iou_threshold)]
        return boxes[keep].astype(np.float32), scores[keep].astype(np.float32)

    def __call__(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H,W,3) uint8 RGB -> (boxes (N,4) float32 xyxy, scores (N,) float32), best first."""
        batch, ratio = self.preprocess(np.ascontiguousarray(image_rgb[..., ::-1]))
        (output,) = self.session.run([self.output_name], {self.input_name: batch})
        return self.decode(output[0], ratio)
