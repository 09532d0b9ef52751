"""The pose files of a volume: YOLOX and DWPose ONNX stand-ins, then NLF (and SAM + MatAnyone) via their writers.

The real detector and estimator are not available on build machines, so the volume carries small ONNX graphs
with the real input/output names and shapes. The volume's pair "sees" one standing person: YOLOX puts a
centred box on the image area of its (grey-padded) input, DWPose answers a standing skeleton's SimCC peaks.
Tests build other graphs with the same helpers (planted boxes, planted peaks, nobody).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pose.files import DWPOSE_FILE, YOLOX_FILE

OPSET = 17
YOLOX_ANCHORS, YOLOX_COLUMNS = 8400, 85
DWPOSE_INPUT = (1, 3, 384, 288)
SIMCC_X, SIMCC_Y = 576, 768
PLANTED_SCORE = 0.9
# The volume's YOLOX stand-in answers through this stride-32 anchor, cell (10, 10).
_ANCHOR, _ANCHOR_CELL, _ANCHOR_STRIDE = 6400 + 1600 + 10 * 20 + 10, 10, 32


def _model(nodes, inputs, outputs, initializers) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "stand_in", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="scail-worker")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def constant_output_model(input_name: str, input_shape: tuple[int | str, ...],
                          outputs: dict[str, np.ndarray]) -> onnx.ModelProto:  # fmt: skip
    """A graph that answers the given float32 arrays (leading dim 1) whatever the input (which it still reads),
    once per batch item; a str as the input's first dim makes the batch symbolic."""
    batch = input_shape[0]
    nodes = [helper.make_node("ReduceMean", [input_name], ["input_mean"], axes=list(range(1, len(input_shape))),
                              keepdims=0),
             helper.make_node("Mul", ["input_mean", "zero"], ["nothing"])]  # fmt: skip
    initializers = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    value_infos = []
    for name, array in outputs.items():
        array = np.asarray(array, np.float32)
        initializers.append(numpy_helper.from_array(array, f"{name}_value"))
        initializers.append(numpy_helper.from_array(np.array([-1] + [1] * (array.ndim - 1), np.int64), f"{name}_rows"))
        nodes.append(helper.make_node("Reshape", ["nothing", f"{name}_rows"], [f"{name}_nothing"]))
        nodes.append(helper.make_node("Add", [f"{name}_value", f"{name}_nothing"], [name]))
        value_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *array.shape[1:]]))
    inputs = [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))]
    return _model(nodes, inputs, value_infos, initializers)


def yolox_raw_output(boxes_xyxy: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1,8400,85) raw YOLOX output whose decoding gives exactly these person boxes (input pixels).

    Box i answers through the stride-8 anchor i*97 (distinct cells), with obj = score and class 0 = 1.
    """
    output = np.zeros((1, YOLOX_ANCHORS, YOLOX_COLUMNS), np.float32)
    for i, ((x1, y1, x2, y2), score) in enumerate(zip(np.asarray(boxes_xyxy, np.float64), scores, strict=True)):
        anchor = i * 97
        gx, gy = anchor % 80, anchor // 80
        output[0, anchor, :4] = [(x1 + x2) / 2 / 8 - gx, (y1 + y2) / 2 / 8 - gy, math.log((x2 - x1) / 8),
                                 math.log((y2 - y1) / 8)]  # fmt: skip
        output[0, anchor, 4] = score
        output[0, anchor, 5] = 1.0
    return output


def simcc_peaks(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-hot SimCC outputs (1,133,576), (1,133,768) with peaks `scores` at 2x the input-pixel `keypoints`."""
    simcc_x = np.zeros((1, 133, SIMCC_X), np.float32)
    simcc_y = np.zeros((1, 133, SIMCC_Y), np.float32)
    index = np.rint(np.asarray(keypoints) * 2).astype(np.int64)
    rows = np.arange(133)
    simcc_x[0, rows, np.clip(index[:, 0], 0, SIMCC_X - 1)] = scores
    simcc_y[0, rows, np.clip(index[:, 1], 0, SIMCC_Y - 1)] = scores
    return simcc_x, simcc_y


def yolox_model(boxes_xyxy: np.ndarray, scores: np.ndarray) -> onnx.ModelProto:
    """A YOLOX stand-in answering fixed boxes (in 640x640 input pixels)."""
    return constant_output_model("images", (1, 3, 640, 640), {"output": yolox_raw_output(boxes_xyxy, scores)})


def dwpose_model(keypoints: np.ndarray, scores: np.ndarray, batch: int | str = 1) -> onnx.ModelProto:
    """A DWPose stand-in answering fixed keypoints (133,2) in 288x384 input pixels for each crop of the batch
    (fixed 1 as in the released export, or a symbolic name)."""
    simcc_x, simcc_y = simcc_peaks(keypoints, scores)
    return constant_output_model("input", (batch, *DWPOSE_INPUT[1:]), {"simcc_x": simcc_x, "simcc_y": simcc_y})


def centred_person_yolox_model() -> onnx.ModelProto:
    """A YOLOX stand-in that boxes a standing person in the middle of the image area of its input.

    The image area is where the input differs from the grey padding (114); the box is centred on it,
    85% of its height tall and 40% of its height wide (at most its width).
    """
    const = {
        "pad": np.float32(114), "half": np.float32(0.5), "tall": np.float32(0.85), "wide": np.float32(0.4),
        "stride": np.float32(_ANCHOR_STRIDE), "cell": np.float32(_ANCHOR_CELL), "one": np.float32(1),
        "zero_axis": np.array([0], np.int64),
        "rest": np.concatenate([[PLANTED_SCORE, 1.0], np.zeros(YOLOX_COLUMNS - 6)]).astype(np.float32),
        "pads": np.array([_ANCHOR, 0, YOLOX_ANCHORS - _ANCHOR - 1, 0], np.int64),
        "row_shape": np.array([1, YOLOX_COLUMNS], np.int64),
        "out_shape": np.array([1, YOLOX_ANCHORS, YOLOX_COLUMNS], np.int64),
    }  # fmt: skip
    n = helper.make_node
    nodes = [
        n("Sub", ["images", "pad"], ["centred"]),
        n("Abs", ["centred"], ["distance"]),
        n("ReduceMax", ["distance"], ["columns"], axes=[0, 1, 2], keepdims=0),
        n("ReduceMax", ["distance"], ["rows"], axes=[0, 1, 3], keepdims=0),
        n("Greater", ["columns", "half"], ["column_used"]),
        n("Greater", ["rows", "half"], ["row_used"]),
        n("Cast", ["column_used"], ["column_used_f"], to=TensorProto.FLOAT),
        n("Cast", ["row_used"], ["row_used_f"], to=TensorProto.FLOAT),
        n("ReduceSum", ["column_used_f", "zero_axis"], ["image_w_raw"], keepdims=1),
        n("ReduceSum", ["row_used_f", "zero_axis"], ["image_h_raw"], keepdims=1),
        n("Max", ["image_w_raw", "one"], ["image_w"]),
        n("Max", ["image_h_raw", "one"], ["image_h"]),
        n("Mul", ["image_w", "half"], ["cx"]),
        n("Mul", ["image_h", "half"], ["cy"]),
        n("Mul", ["image_h", "tall"], ["box_h"]),
        n("Mul", ["image_h", "wide"], ["box_w_free"]),
        n("Min", ["box_w_free", "image_w"], ["box_w"]),
        n("Div", ["cx", "stride"], ["cx_cells"]),
        n("Div", ["cy", "stride"], ["cy_cells"]),
        n("Sub", ["cx_cells", "cell"], ["dx"]),
        n("Sub", ["cy_cells", "cell"], ["dy"]),
        n("Div", ["box_w", "stride"], ["w_cells"]),
        n("Div", ["box_h", "stride"], ["h_cells"]),
        n("Log", ["w_cells"], ["dw"]),
        n("Log", ["h_cells"], ["dh"]),
        n("Concat", ["dx", "dy", "dw", "dh", "rest"], ["row"], axis=0),
        n("Reshape", ["row", "row_shape"], ["row_2d"]),
        n("Pad", ["row_2d", "pads"], ["all_rows"]),
        n("Reshape", ["all_rows", "out_shape"], ["output"]),
    ]
    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in const.items()]
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, YOLOX_ANCHORS, YOLOX_COLUMNS])]
    return _model(nodes, inputs, outputs, initializers)


def standing_wholebody(width: float = 288, height: float = 384) -> np.ndarray:
    """(133,2) COCO-WholeBody points of a person facing the camera, arms down, in a width x height crop.

    The crop's middle 80% holds the person (DWPose crops pad the box by 1.25).
    """
    cx = width / 2
    u = height / 384  # points below are laid out for a 384-pixel-tall crop
    body = {
        0: (0, 70), 1: (8, 64), 2: (-8, 64), 3: (16, 68), 4: (-16, 68), 5: (40, 110), 6: (-40, 110),
        7: (50, 165), 8: (-50, 165), 9: (55, 215), 10: (-55, 215), 11: (25, 205), 12: (-25, 205),
        13: (25, 270), 14: (-25, 270), 15: (25, 330), 16: (-25, 330),
        17: (32, 342), 18: (20, 342), 19: (25, 336), 20: (-32, 342), 21: (-20, 342), 22: (-25, 336),
    }  # fmt: skip
    points = np.zeros((133, 2), np.float64)
    for index, (x, y) in body.items():
        points[index] = (x, y)
    t = np.linspace(0, np.pi, 17)
    face = [np.stack([-18 * np.cos(t), 62 + 16 * np.sin(t)], 1)]  # jaw 0-16, from the image left
    face.append(np.stack([np.linspace(-15, 15, 10), np.full(10, 56)], 1))  # brows 17-26
    face.append(np.stack([np.zeros(4), np.linspace(60, 70, 4)], 1))  # nose bridge 27-30
    face.append(np.stack([np.linspace(-6, 6, 5), np.full(5, 72)], 1))  # nostrils 31-35
    ring = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    for ex in (-8, 8):  # eyes 36-47
        face.append(np.stack([ex + 3 * np.cos(ring), 63 + 1.5 * np.sin(ring)], 1))
    outer, inner = np.linspace(0, 2 * np.pi, 12, endpoint=False), np.linspace(0, 2 * np.pi, 8, endpoint=False)
    face.append(np.stack([8 * np.cos(outer), 79 + 3 * np.sin(outer)], 1))  # mouth 48-59
    face.append(np.stack([5 * np.cos(inner), 79 + 1.5 * np.sin(inner)], 1))  # mouth 60-67
    points[23:91] = np.concatenate(face)
    for first, wrist in ((91, 9), (112, 10)):  # left then right hand: wrist, then 5 fingers of 4 joints
        hand = [points[wrist]]
        for finger in range(5):
            angle = np.deg2rad(90 + (finger - 2) * 18)
            for joint in range(1, 5):
                hand.append(points[wrist] + 5 * joint * np.array([np.cos(angle), np.sin(angle)]))
        points[first : first + 21] = hand
    return np.stack([cx + points[:, 0] * u, points[:, 1] * u], 1).astype(np.float32)


def write_detector_files(root: Path) -> None:
    """Write the volume's YOLOX and DWPose stand-ins (one centred standing person) under `root`."""
    root = Path(root)
    (root / YOLOX_FILE).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(centred_person_yolox_model(), root / YOLOX_FILE)
    onnx.save(dwpose_model(standing_wholebody(), np.full(133, PLANTED_SCORE, np.float32)), root / DWPOSE_FILE)


def write_pose_files(root: Path, size: Literal["tiny", "full"], *, multi_person: bool = True, seed: int = 0) -> None:
    """Every pose file of the volume: detector stand-ins, NLF, and (with `multi_person`) SAM + MatAnyone."""
    # Imported here so that tests can build detector stand-ins without the NLF / mask writers' dependencies.
    from tools.volume.mask_files import write_mask_files
    from tools.volume.nlf_file import write_nlf_files

    write_detector_files(root)
    write_nlf_files(root, size, seed=seed)
    if multi_person:
        write_mask_files(root, size, seed=seed)
