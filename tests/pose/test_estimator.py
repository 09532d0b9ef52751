"""pose.estimator: DWPose crop and SimCC decoding on ONNX stand-ins with planted peaks, checked against rtmlib."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from pose.estimator import WholeBodyEstimator, box_to_centre_scale, crop_matrix, decode_simcc
from tools.volume.pose_files import dwpose_model, standing_wholebody

HEIGHT, WIDTH = 480, 640


def _planted() -> tuple[np.ndarray, np.ndarray]:
    """133 input-pixel points on the half-pixel SimCC grid, with distinct scores."""
    points = np.round(standing_wholebody() * 2) / 2
    scores = np.linspace(0.35, 0.95, 133).astype(np.float32)
    return points, scores


def _estimator(tmp_path, points, scores) -> tuple[WholeBodyEstimator, str]:
    path = tmp_path / "dwpose.onnx"
    onnx.save(dwpose_model(points, scores), path)
    return WholeBodyEstimator.from_file(path, torch.device("cpu")), str(path)


def _image() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def test_box_is_padded_and_widened_to_three_by_four():
    centre, scale = box_to_centre_scale(np.array([[100, 100, 200, 400]], np.float32))
    assert centre.tolist() == [[150, 250]]
    assert scale.tolist() == [[281.25, 375.0]]  # height 300*1.25, width enlarged to 3/4 of it


def test_crop_maps_the_centre_to_the_input_centre_and_the_scale_to_its_width():
    m = crop_matrix(np.array([150.0, 250.0]), np.array([281.25, 375.0]))
    corner = m @ np.array([150 - 281.25 / 2, 250 - 375 / 2, 1])
    np.testing.assert_allclose(m @ np.array([150, 250, 1]), [144, 192], atol=1e-4)
    np.testing.assert_allclose(corner, [0, 0], atol=1e-4)


def test_planted_peaks_decode_to_image_pixels(tmp_path):
    points, scores = _planted()
    estimator, _ = _estimator(tmp_path, points, scores)
    box = np.array([[200, 40, 360, 440]], np.float32)
    keypoints, found = estimator(_image(), box)
    centre, scale = box_to_centre_scale(box)
    expected = points / [288, 384] * scale[0] + centre[0] - scale[0] / 2
    np.testing.assert_allclose(keypoints[0], expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(found[0], scores, rtol=1e-6)


def test_score_is_the_smaller_axis_maximum(tmp_path):
    points, scores = _planted()
    estimator, _ = _estimator(tmp_path, points, scores)
    simcc_x, simcc_y = estimator.session.run(None, {"input": np.zeros((1, 3, 384, 288), np.float32)})
    assert simcc_x.shape == (1, 133, 576) and simcc_y.shape == (1, 133, 768)
    simcc_y = simcc_y.copy()
    simcc_y[0, 7] *= 0.5
    _, decoded = decode_simcc(simcc_x, simcc_y, np.zeros((1, 2)), np.ones((1, 2)))
    assert decoded[0, 7] == np.float32(scores[7] * 0.5)


def test_no_box_runs_on_the_whole_image(tmp_path):
    points, scores = _planted()
    estimator, _ = _estimator(tmp_path, points, scores)
    keypoints, _ = estimator(_image(), np.zeros((0, 4)))
    whole = np.array([[0, 0, WIDTH, HEIGHT]], np.float32)
    expected, _ = estimator(_image(), whole)
    assert keypoints.shape == (1, 133, 2)
    np.testing.assert_allclose(keypoints, expected)


def test_decoding_matches_rtmlib_rtmpose(tmp_path):
    from rtmlib import RTMPose

    points = np.round(standing_wholebody() * 2) / 2
    scores = np.full(133, 0.8, np.float32)  # rtmlib averages the two axes where DWPose takes the minimum
    estimator, path = _estimator(tmp_path, points, scores)
    boxes = np.array([[200, 40, 360, 440], [10, 100, 300, 300]], np.float32)
    image = _image()
    ours, our_scores = estimator(image, boxes)
    reference = RTMPose(path, model_input_size=(288, 384), backend="onnxruntime")
    theirs, their_scores = reference(np.ascontiguousarray(image[..., ::-1]), bboxes=list(boxes))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(our_scores, their_scores, rtol=1e-6)


def test_the_crop_matches_rtmlib_top_down_affine():
    from rtmlib.tools.pose_estimation.pre_processings import top_down_affine

    image = _image()
    centre, scale = box_to_centre_scale(np.array([[200, 40, 360, 440]], np.float32))
    ours = WholeBodyEstimator.preprocess(np.ascontiguousarray(image[..., ::-1]), centre[0], scale[0])
    crop, _ = top_down_affine((288, 384), scale[0] / 1.0, centre[0], np.ascontiguousarray(image[..., ::-1]))
    theirs = ((crop.astype(np.float32) - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]).transpose(2, 0, 1)
    assert np.abs(ours - theirs).mean() < 0.02  # same geometry, up to float32 rounding of the affine


def test_a_symbolic_batch_export_takes_all_boxes_in_one_run(tmp_path):
    points, scores = _planted()
    fixed, _ = _estimator(tmp_path, points, scores)
    path = tmp_path / "dwpose_batched.onnx"
    onnx.save(dwpose_model(points, scores, batch="N"), path)
    batched = WholeBodyEstimator.from_file(path, torch.device("cpu"))
    boxes = np.array([[200, 40, 360, 440], [20, 100, 180, 300], [400, 0, 600, 470]], np.float32)
    assert batched.batched and not fixed.batched
    for got, expected in zip(batched(_image(), boxes), fixed(_image(), boxes), strict=True):
        np.testing.assert_array_equal(got, expected)
