"""pose.solution: the whole single-person extraction on a synthetic video, and its refusals."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch

from common.errors import InputError
from pose.alignment import Camera
from pose.estimator import WholeBodyEstimator
from pose.files import YOLOX_FILE
from pose.overlay import BODY_POINT_COLOURS
from pose.solution import PoseVideoMaker, box_on_alpha
from tests.pose.skeletons import standing_smpl
from tools.make_demo_inputs import driving_frames, reference_image
from tools.volume.pose_files import dwpose_model, standing_wholebody, write_pose_files, yolox_model

H, W = 224, 160
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def pose_root(tmp_path_factory):
    """The single-person pose files of a tiny volume (detector stand-ins, tiny NLF)."""
    root = tmp_path_factory.mktemp("pose_volume")
    write_pose_files(root, "tiny", multi_person=False)
    return root


@pytest.fixture(scope="module")
def maker(pose_root) -> PoseVideoMaker:
    return PoseVideoMaker.from_model_root(pose_root, CPU, multi_person=False)


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    return driving_frames(H, W, 5, 16.0), reference_image(H, W)


def test_extraction_renders_the_detected_person_at_the_canvas_size(maker, inputs):
    frames, reference = inputs
    video = maker.render(frames, reference)
    assert video.shape == frames.shape and video.dtype == np.uint8
    boxes, _ = maker.detector(frames[0])
    keypoints, _ = maker.estimator(frames[0], boxes)
    nose = np.round(keypoints[0, 0]).astype(int)
    # The head marks are drawn where DWPose found the head (alignment may shift them by a few pixels).
    window = video[0, nose[1] - 6 : nose[1] + 7, nose[0] - 6 : nose[0] + 7].reshape(-1, 3)
    assert any(tuple(p) == BODY_POINT_COLOURS[0] for p in window)
    assert not video[0, :, :10].any()  # the stand-in person is centred: the margins stay black


class StandingNLF:
    """Test double for NLF only (random tiny NLF weights give a collapsed skeleton): a standing person
    600 mm right of and 300 mm below the optical axis, 4 m away, for every box."""

    def joints_for_boxes(self, frames, boxes):
        joints = standing_smpl() + np.array([600.0, 300.0, 0.0], np.float32)
        return [np.repeat(joints[None], len(b), 0) for b in boxes]


def _legs_centre_x(video: np.ndarray) -> float:
    """Mean column of the rendered pixels in the bottom quarter (legs only: no overlay marks there)."""
    rows = video[0, int(H * 0.75) :].any(-1)
    return float(np.nonzero(rows)[1].mean())


def test_alignment_moves_the_skeleton_onto_the_reference_person(maker, inputs):
    frames, reference = inputs
    double = PoseVideoMaker(maker.detector, maker.estimator, StandingNLF(), maker.renderer)
    f = Camera.default(W, H).fx
    unaligned = double.render(frames, reference, align_to_reference=False)
    aligned = double.render(frames, reference, align_to_reference=True)
    assert _legs_centre_x(unaligned) == pytest.approx(W / 2 + f * 600 / 4000, abs=6)
    assert _legs_centre_x(aligned) == pytest.approx(W / 2, abs=6)  # the stand-in reference person is centred


def test_no_person_in_the_video_is_an_input_error(pose_root, inputs, tmp_path):
    nobody = tmp_path / "nobody.onnx"
    onnx.save(yolox_model(np.zeros((0, 4)), np.zeros(0)), nobody)
    maker = PoseVideoMaker.from_model_root(pose_root, CPU, multi_person=False)
    maker.detector = type(maker.detector).from_file(nobody, CPU)
    with pytest.raises(InputError, match="no person"):
        maker.render(*inputs)


def test_absurd_frame_sizes_are_refused(maker):
    with pytest.raises(InputError, match="out of range"):
        maker.render(np.zeros((3, 8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))


def test_a_reference_of_another_size_is_refused(maker, inputs):
    frames, reference = inputs
    with pytest.raises(InputError, match="reference_image"):
        maker.render(frames, reference[:-32])


@pytest.mark.parametrize("count", [0, 6])
def test_num_persons_out_of_range_is_refused(maker, inputs, count):
    with pytest.raises(InputError, match="num_persons"):
        maker.render(*inputs, num_persons=count)


def test_several_persons_need_the_mask_models(maker, inputs):
    with pytest.raises(InputError, match="multi-person"):
        maker.render(*inputs, num_persons=2)


def test_a_broken_detector_file_is_a_volume_error(pose_root, tmp_path):
    from common.errors import VolumeFileError

    (tmp_path / "pose").mkdir()
    for path in pose_root.rglob("*"):
        if path.is_file():
            (tmp_path / path.relative_to(pose_root)).write_bytes(path.read_bytes())
    (tmp_path / YOLOX_FILE).write_bytes(b"not onnx")
    with pytest.raises(VolumeFileError, match="yolox_l.onnx"):
        PoseVideoMaker.from_model_root(tmp_path, CPU, multi_person=False)


def test_box_on_alpha_takes_the_box_overlapping_the_matte_not_the_first():
    alpha = np.zeros((H, W), np.float32)
    alpha[20:200, 90:150] = 1.0
    boxes = np.array([[10, 20, 70, 200], [90, 20, 150, 200], [0, 0, W, H]], np.float32)  # best score first
    assert np.array_equal(box_on_alpha(boxes, alpha), boxes[1:2])


def test_box_on_alpha_without_boxes_gives_none():
    assert box_on_alpha(np.zeros((0, 4), np.float32), np.ones((H, W), np.float32)).shape == (0, 4)


class TwoPersonDetector:
    """Test double for YOLOX: the same two boxes in every frame, the left one scoring best."""

    boxes = np.array([[10, 20, 70, 200], [90, 20, 150, 200]], np.float32)

    def __call__(self, frame):
        return self.boxes, np.array([0.9, 0.8], np.float32)


class RecordingNLF(StandingNLF):
    def __init__(self):
        self.boxes = []

    def joints_for_boxes(self, frames, boxes):
        self.boxes.append(boxes)
        return super().joints_for_boxes(frames, boxes)


def test_each_person_is_posed_from_the_box_on_its_own_matte(maker, inputs, monkeypatch):
    import pose.multi

    frames, reference = inputs
    alpha = np.zeros((2, len(frames), H, W), np.float32)
    for person, (x0, y0, x1, y1) in enumerate(TwoPersonDetector.boxes.astype(int)):
        alpha[person, :, y0:y1, x0:x1] = 1.0
    # SAM and MatAnyone with random tiny weights give no usable matte: plant one per person instead.
    monkeypatch.setattr(pose.multi, "segment_persons", lambda *args, **kwargs: alpha)
    nlf = RecordingNLF()
    masks = SimpleNamespace(segmenter=None, matting=None)
    double = PoseVideoMaker(TwoPersonDetector(), maker.estimator, nlf, maker.renderer, masks)
    double.render(frames, reference, num_persons=2)
    for person, person_boxes in enumerate(nlf.boxes):
        assert all(np.array_equal(b, TwoPersonDetector.boxes[person : person + 1]) for b in person_boxes)


def _prompted_points(maker, frames, reference, monkeypatch) -> list[np.ndarray]:
    """The SAM prompt points render_multi passes for the two persons of TwoPersonDetector."""
    import pose.multi

    seen = []

    def planted(frames, boxes, points, segmenter, matting=None):
        seen.extend(points)
        return np.ones((len(boxes), *frames.shape[:3]), np.float32)

    monkeypatch.setattr(pose.multi, "segment_persons", planted)
    masks = SimpleNamespace(segmenter=None, matting=None)
    PoseVideoMaker(TwoPersonDetector(), maker.estimator, StandingNLF(), maker.renderer, masks).render(
        frames, reference, num_persons=2)
    return seen


def test_sam_is_prompted_at_the_box_centre_when_no_head_point_is_visible(maker, inputs, tmp_path, monkeypatch):
    unsure = tmp_path / "unsure.onnx"
    onnx.save(dwpose_model(standing_wholebody(), np.full(133, 0.1, np.float32)), unsure)
    double = PoseVideoMaker(maker.detector, WholeBodyEstimator.from_file(unsure, CPU), maker.nlf, maker.renderer)
    points = _prompted_points(double, *inputs, monkeypatch)
    boxes = TwoPersonDetector.boxes
    assert np.allclose(np.concatenate(points), (boxes[:, :2] + boxes[:, 2:]) / 2)


def test_sam_is_prompted_at_the_visible_nose_neck_and_eyes(maker, inputs, monkeypatch):
    points = _prompted_points(maker, *inputs, monkeypatch)
    assert [len(p) for p in points] == [4, 4]


def test_multi_person_volume_loads_matanyone_for_the_propagation(tmp_path):
    from pose.multi.matanyone import MatAnyone

    write_pose_files(tmp_path, "tiny", multi_person=True)
    maker = PoseVideoMaker.from_model_root(tmp_path, CPU)
    assert isinstance(maker.masks.matting, MatAnyone)
