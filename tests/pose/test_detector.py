"""pose.detector: YOLOX preprocessing and decoding on ONNX stand-ins with planted boxes, checked against rtmlib."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from pose.detector import PersonDetector, anchor_grid, nms
from tools.volume.pose_files import constant_output_model, yolox_model, yolox_raw_output

HEIGHT, WIDTH = 480, 720  # ratio 640/720: the image fills the top int(426.7) = 426 rows of the input
RATIO = 640 / 720


def _detector(tmp_path, model: onnx.ModelProto) -> tuple[PersonDetector, str]:
    path = tmp_path / "yolox.onnx"
    onnx.save(model, path)
    return PersonDetector.from_file(path, torch.device("cpu")), str(path)


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def test_anchor_grid_lists_strides_8_16_32_row_major():
    grid, strides = anchor_grid()
    assert len(grid) == 8400
    assert grid[1].tolist() == [1, 0] and grid[80].tolist() == [0, 1]
    assert strides[6399, 0] == 8 and strides[6400, 0] == 16 and strides[8000, 0] == 32
    assert grid[8000 + 21].tolist() == [1, 1]


def test_preprocess_pastes_the_resized_image_top_left_on_grey(tmp_path):
    batch, ratio = PersonDetector.preprocess(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    assert batch.shape == (1, 3, 640, 640) and ratio == pytest.approx(RATIO)
    assert batch[0, :, 425, 0].tolist() == [0, 0, 0] and batch[0, :, 426, 0].tolist() == [114, 114, 114]


def test_planted_boxes_decode_exactly_in_image_pixels(tmp_path):
    planted = np.array([[100, 50, 300, 400], [400, 60, 560, 420]], np.float32)
    detector, _ = _detector(tmp_path, yolox_model(planted, np.array([0.95, 0.8])))
    boxes, scores = detector(_image())
    np.testing.assert_allclose(boxes, planted / RATIO, rtol=1e-5)
    np.testing.assert_allclose(scores, [0.95, 0.8], rtol=1e-6)


def test_boxes_come_best_score_first(tmp_path):
    planted = np.array([[10, 10, 100, 200], [300, 20, 400, 300]], np.float32)
    detector, _ = _detector(tmp_path, yolox_model(planted, np.array([0.5, 0.9])))
    _, scores = detector(_image())
    assert scores.tolist() == pytest.approx([0.9, 0.5])


def test_scores_at_or_below_0_3_are_dropped(tmp_path):
    planted = np.array([[10, 10, 100, 200], [300, 20, 400, 300]], np.float32)
    detector, _ = _detector(tmp_path, yolox_model(planted, np.array([0.3, 0.31])))
    boxes, _ = detector(_image())
    np.testing.assert_allclose(boxes, planted[1:] / RATIO, rtol=1e-5)


def test_score_is_objectness_times_the_person_class(tmp_path):
    raw = yolox_raw_output(np.array([[10, 10, 100, 200]]), np.array([0.8]))
    raw[0, 0, 5] = 0.5  # person probability
    detector, _ = _detector(tmp_path, constant_output_model("images", (1, 3, 640, 640), {"output": raw}))
    _, scores = detector(_image())
    assert scores.tolist() == pytest.approx([0.4])


def test_other_classes_are_not_persons(tmp_path):
    raw = yolox_raw_output(np.array([[10, 10, 100, 200]]), np.array([0.9]))
    raw[0, 0, 5], raw[0, 0, 6] = 0.0, 1.0  # a bicycle
    detector, _ = _detector(tmp_path, constant_output_model("images", (1, 3, 640, 640), {"output": raw}))
    boxes, _ = detector(_image())
    assert boxes.shape == (0, 4)


def test_nms_suppresses_overlaps_above_0_45_only():
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [0, 0, 100, 40]], np.float32)
    keep = nms(boxes, np.array([0.9, 0.8, 0.7]), 0.45)
    assert keep.tolist() == [0, 2]  # the second overlaps ~0.82, the third 0.41


def test_decoding_matches_rtmlib_yolox(tmp_path):
    from rtmlib import YOLOX

    planted = np.array([[100, 50, 300, 400], [120, 70, 310, 390], [400, 60, 560, 420]], np.float32)
    detector, path = _detector(tmp_path, yolox_model(planted, np.array([0.95, 0.9, 0.6])))
    image = _image()
    ours, _ = detector(image)
    reference = YOLOX(path, model_input_size=(640, 640), score_thr=0.3, nms_thr=0.45, backend="onnxruntime")
    theirs = reference(np.ascontiguousarray(image[..., ::-1]))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    assert len(ours) == 2  # the overlapping second box was suppressed by both


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback of a CUDA request")
def test_a_cuda_session_that_lands_on_the_cpu_says_so(tmp_path, caplog):
    from pose.detector import make_session

    path = tmp_path / "yolox.onnx"
    onnx.save(yolox_model(np.array([[100, 50, 300, 400]], np.float32), np.array([0.9])), path)
    with caplog.at_level("WARNING", logger="pose.detector"):
        session = make_session(path, torch.device("cuda"))
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert "yolox.onnx runs on the CPU" in caplog.text
