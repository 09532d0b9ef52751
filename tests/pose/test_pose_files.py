"""pose.files checks and the volume's detector stand-ins (tools/volume/pose_files.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from common.errors import VolumeFileError
from pose.detector import PersonDetector
from pose.files import DWPOSE_FILE, DWPOSE_IO, YOLOX_FILE, check_onnx_file, check_pose_files
from tools.volume.pose_files import constant_output_model, write_detector_files


@pytest.fixture()
def detector_root(tmp_path):
    write_detector_files(tmp_path)
    return tmp_path


def test_the_stand_ins_pass_the_onnx_checks(detector_root):
    checks = {c.name: c for c in check_pose_files(detector_root, multi_person=False)}
    assert checks[YOLOX_FILE].ok and checks[DWPOSE_FILE].ok


def test_missing_files_are_reported_not_raised(tmp_path):
    checks = check_pose_files(tmp_path, multi_person=True)
    assert len(checks) == 6 and all(c.problem == "missing" for c in checks)


def test_an_onnx_model_with_other_output_names_is_refused(tmp_path):
    path = tmp_path / "dw.onnx"
    onnx.save(constant_output_model("input", (1, 3, 384, 288), {"heatmaps": np.zeros((1, 133, 96, 72))}), path)
    with pytest.raises(VolumeFileError, match="'simcc_x'"):
        check_onnx_file(path, DWPOSE_IO)


def test_an_onnx_model_with_the_wrong_shape_is_refused(tmp_path):
    path = tmp_path / "dw.onnx"
    outputs = {"simcc_x": np.zeros((1, 17, 576)), "simcc_y": np.zeros((1, 17, 768))}
    onnx.save(constant_output_model("input", (1, 3, 384, 288), outputs), path)
    with pytest.raises(VolumeFileError, match="simcc_x.*133"):
        check_onnx_file(path, DWPOSE_IO)


def test_a_truncated_onnx_file_is_refused(detector_root):
    path = detector_root / YOLOX_FILE
    path.write_bytes(path.read_bytes()[:100])
    (check,) = [c for c in check_pose_files(detector_root, multi_person=False) if c.name == YOLOX_FILE]
    assert not check.ok and "ONNX" in check.problem


@pytest.mark.parametrize(("height", "width"), [(512, 896), (896, 512), (320, 320)])
def test_the_volume_yolox_boxes_a_centred_person_on_any_canvas(detector_root, height, width):
    detector = PersonDetector.from_file(detector_root / YOLOX_FILE, torch.device("cpu"))
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    boxes, _ = detector(image)
    assert len(boxes) == 1
    x1, y1, x2, y2 = boxes[0]
    assert (x1 + x2) / 2 == pytest.approx(width / 2, abs=2) and (y1 + y2) / 2 == pytest.approx(height / 2, abs=2)
    assert y2 - y1 == pytest.approx(0.85 * height, abs=3)
