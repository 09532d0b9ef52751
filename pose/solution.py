"""PoseVideoMaker: driving frames + reference image -> SCAIL pose video (the composition of this package).

Interfaces assumed from the other pose packages:
- pose.nlf: `load_nlf(weights, meta, device) -> NLFModel`; `NLFModel.joints_for_boxes(frames (T,H,W,3) uint8 RGB,
  boxes list[(N_t,4) xyxy]) -> list[(N_t,24,3) float32 mm]`, camera from FOV 55 deg on the longer side; it widens
  the boxes and blacks out the frame outside them itself.
- pose.multi (2-5 persons): `load_multi(root, device) -> MaskModels` (SAM + MatAnyone), `segment_persons(frames,
  boxes (N,4) of frame 0, points list[(K,2) pixels], segmenter, matting) -> alpha (N,T,H,W)`,
  `composite_person(frames, alpha) -> (T,H,W,3) uint8`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from common.errors import InputError
from pose.alignment import Camera, face_scale, fit_camera, overlay_shifts, smpl_to_openpose
from pose.detector import PersonDetector
from pose.estimator import WholeBodyEstimator
from pose.files import DWPOSE_FILE, NLF_META_FILE, NLF_WEIGHTS_FILE, YOLOX_FILE, require_pose_files
from pose.frames import check_image_array
from pose.keypoints import VALID_SCORE, PoseKeypoints, to_openpose
from pose.overlay import compose, draw_overlay
from pose.renderer import CapsuleRenderer, person_palettes

if TYPE_CHECKING:  # imported where used: they pull torchvision and segment-anything
    from pose.multi import MaskModels
    from pose.nlf import NLFModel

log = logging.getLogger(__name__)

MAX_PERSONS = 5
MAX_FRAMES = 1024
# Body points SAM is prompted with when visible (OpenPose slots): nose, neck, eyes; else the box centre.
SAM_PROMPT_POINTS = [0, 1, 14, 15]


@dataclass
class FramePoses:
    """What the 2D models found in each frame: boxes (N_t,4) xyxy pixels and the matching keypoints."""

    boxes: list[np.ndarray]
    keypoints: list[PoseKeypoints]


def box_on_alpha(boxes: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """boxes (N,4) xyxy pixels, one person's alpha (H,W) in [0,1] -> (1,4): the box of highest IoU with the alpha.

    On a composited video the best-scoring box can be a remnant of another person (a soft alpha edge); the
    box that overlaps this person's matte is the one to follow. (0,4) when there is no box.
    """
    if len(boxes) == 0:
        return boxes
    height, width = alpha.shape
    corners = np.clip(np.rint(boxes), 0, [width, height, width, height]).astype(np.int64)
    inside = np.array([alpha[y0:y1, x0:x1].sum() for x0, y0, x1, y1 in corners])
    areas = (corners[:, 2] - corners[:, 0]) * (corners[:, 3] - corners[:, 1])
    iou = inside / np.maximum(areas + alpha.sum() - inside, 1e-6)
    best = int(np.argmax(iou))
    return boxes[best : best + 1]


class PoseVideoMaker:
    """Extracts the driving motion (YOLOX, DWPose, NLF) and renders it as SCAIL's pose video."""

    def __init__(self, detector: PersonDetector, estimator: WholeBodyEstimator, nlf: NLFModel,
                 renderer: CapsuleRenderer, masks: MaskModels | None = None):  # fmt: skip
        self.detector = detector
        self.estimator = estimator
        self.nlf = nlf
        self.renderer = renderer
        self.masks = masks  # only for 2-5 persons

    @classmethod
    def from_model_root(cls, root: Path, device: torch.device, multi_person: bool = True) -> PoseVideoMaker:
        """Check and load the pose files under `root` (SAM and MatAnyone only with `multi_person`)."""
        started = time.perf_counter()
        from pose.nlf import load_nlf

        root = Path(root)
        require_pose_files(root, multi_person=multi_person)
        masks = None
        if multi_person:
            from pose.multi import load_multi

            masks = load_multi(root, device)
        maker = cls(
            PersonDetector.from_file(root / YOLOX_FILE, device),
            WholeBodyEstimator.from_file(root / DWPOSE_FILE, device),
            load_nlf(root / NLF_WEIGHTS_FILE, root / NLF_META_FILE, device),
            CapsuleRenderer(device),
            masks,
        )
        log.info("pose models loaded from %s on %s in %.1f s", root, device, time.perf_counter() - started)
        return maker

    def detect(self, frames: np.ndarray, max_persons: int) -> FramePoses:
        """Per frame: up to `max_persons` best person boxes and their keypoints."""
        return self.estimate(frames, [self.detector(frame)[0][:max_persons] for frame in frames])

    def estimate(self, frames: np.ndarray, boxes: list[np.ndarray]) -> FramePoses:
        """DWPose keypoints for the given boxes (N_t,4) of each frame.

        A frame without a box gets DWPose on the whole image (its 2D marks are still drawn) and no box.
        """
        height, width = frames.shape[1:3]
        keypoints = [to_openpose(*self.estimator(frame, b), width, height) for frame, b in zip(frames, boxes, strict=True)]
        return FramePoses(boxes, keypoints)

    def joints(self, frames: np.ndarray, boxes: list[np.ndarray]) -> np.ndarray:
        """(T,24,3) mm SMPL joints of the first box of each frame; zeros where a frame has no box."""
        firsts = [b[:1] for b in boxes]
        joints = np.zeros((len(frames), 24, 3), np.float32)
        for t, found in enumerate(self.nlf.joints_for_boxes(frames, firsts)):
            if len(found):
                joints[t] = found[0]
        return joints

    def render(self, frames: np.ndarray, reference: np.ndarray, *, num_persons: int = 1,
               align_to_reference: bool = True) -> np.ndarray:  # fmt: skip
        """frames (T,H,W,3) and reference (H,W,3) uint8 RGB, already fitted to the output canvas;
        returns the pose video (T,H,W,3) uint8 RGB at the same size. InputError when no person is found."""
        check_image_array(frames, "pose_video")
        check_image_array(reference, "reference_image")
        if frames.ndim != 4 or not 1 <= len(frames) <= MAX_FRAMES:
            raise InputError(f"pose_video: expected 1..{MAX_FRAMES} frames (T,H,W,3), got shape {frames.shape}")
        if reference.ndim != 3 or reference.shape != frames.shape[1:]:
            raise InputError(f"reference_image: size {reference.shape} differs from the frames' {frames.shape[1:]}")
        if not 1 <= num_persons <= MAX_PERSONS:
            raise InputError(f"num_persons {num_persons} is out of range (1..{MAX_PERSONS})")
        if num_persons > 1:
            return self.render_multi(frames, num_persons)
        return self.render_single(frames, reference, align_to_reference)

    def render_single(self, frames: np.ndarray, reference: np.ndarray, align_to_reference: bool) -> np.ndarray:
        """One person (the best box of each frame), optionally aligned to the reference person."""
        height, width = frames.shape[1:3]
        poses = self.detect(frames, 1)
        present = [t for t, b in enumerate(poses.boxes) if len(b)]
        if not present:
            raise InputError("pose_video: no person was found in the driving video")
        joints = self.joints(frames, poses.boxes)
        base = camera = Camera.default(width, height)
        scale = 1.0
        if align_to_reference:
            reference_pose = self.detect(reference[None], 1)
            if len(reference_pose.boxes[0]):
                first = present[0]
                ref = reference_pose.keypoints[0]
                camera = fit_camera(smpl_to_openpose(joints[first]), ref.body[0], ref.body_scores[0], width, height)
                scale = face_scale(ref, poses.keypoints[first], width, height)
            else:
                log.warning("no person found in the reference image; rendering without alignment")
        head_shift, hand_shifts = overlay_shifts(joints, base, camera)
        video = self.renderer.render(smpl_to_openpose(joints)[:, None], person_palettes(1), camera, width, height)
        video = video.cpu().numpy()
        for t in range(len(frames)):
            overlay = draw_overlay(poses.keypoints[t], width, height, head_shift=head_shift[t][None],
                                   hand_shifts=hand_shifts[t][None], face_scale=scale)  # fmt: skip
            compose(video[t], overlay)
        return video

    def render_multi(self, frames: np.ndarray, num_persons: int) -> np.ndarray:
        """2-5 persons: the largest boxes of frame 0 are segmented and tracked (pose.multi), each person is
        posed on its own composited video, and all are rendered together (no alignment)."""
        if self.masks is None:
            raise InputError("num_persons > 1 needs the multi-person models (SAM, MatAnyone) on the volume")
        height, width = frames.shape[1:3]
        boxes0 = self.detector(frames[0])[0]
        if len(boxes0) == 0:
            raise InputError("pose_video: no person was found in the first frame of the driving video")
        areas = (boxes0[:, 2] - boxes0[:, 0]) * (boxes0[:, 3] - boxes0[:, 1])
        boxes0 = boxes0[np.argsort(-areas, kind="stable")[:num_persons]]
        if len(boxes0) < num_persons:
            log.warning("num_persons=%d but only %d persons found in frame 0", num_persons, len(boxes0))
        first = self.estimate(frames[:1], [boxes0]).keypoints[0]
        body = first.body * [width, height]
        shown = first.body_scores[:, SAM_PROMPT_POINTS] >= VALID_SCORE
        centres = (boxes0[:, :2] + boxes0[:, 2:]) / 2
        points = [b[SAM_PROMPT_POINTS][s] if s.any() else c[None] for b, s, c in zip(body, shown, centres, strict=True)]
        from pose.multi import composite_person, segment_persons

        alpha = segment_persons(frames, boxes0, points, self.masks.segmenter, matting=self.masks.matting)
        joints = np.zeros((len(frames), len(boxes0), 24, 3), np.float32)
        keypoints: list[list[PoseKeypoints]] = []
        for p, person_alpha in enumerate(alpha):
            person_frames = composite_person(frames, person_alpha)  # one person's video at a time (memory)
            boxes = [box_on_alpha(self.detector(f)[0], a) for f, a in zip(person_frames, person_alpha, strict=True)]
            poses = self.estimate(person_frames, boxes)
            joints[:, p] = self.joints(person_frames, poses.boxes)
            keypoints.append(poses.keypoints)
        camera = Camera.default(width, height)
        video = self.renderer.render(smpl_to_openpose(joints), person_palettes(len(boxes0)), camera, width, height)
        video = video.cpu().numpy()
        for t in range(len(frames)):
            merged = PoseKeypoints.concatenate([person_keypoints[t] for person_keypoints in keypoints])
            compose(video[t], draw_overlay(merged, width, height))
        return video
