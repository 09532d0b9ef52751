"""pose.renderer: capsule coverage and shading against an independent cylinder solve, depth order, a golden image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pose.alignment import Camera
from pose.renderer import LIMB_COLOURS, LIMBS, CapsuleRenderer, person_palettes, shade_colours

GOLDEN = Path(__file__).parent / "data" / "golden_render.png"
NECK, HEAD = 1, 0
HEAD_LIMB = LIMBS.index((1, 0))


def _renderer() -> CapsuleRenderer:
    return CapsuleRenderer(torch.device("cpu"), max_elements=1 << 18)  # small chunks: several per clip


def _vertical_bone(x: float, z: float, top: float = -200, bottom: float = 200) -> np.ndarray:
    """(14,3) joints with only the neck -> head bone, vertical at (x, z)."""
    joints = np.zeros((14, 3), np.float32)
    joints[NECK] = (x, bottom, z)
    joints[HEAD] = (x, top, z)
    return joints


def _expected_vertical_cylinder(camera: Camera, width: int, height: int, x0: float, z0: float, colour: np.ndarray):
    """Independent solve of rays against the infinite vertical cylinder at (x0, z0): (hit (H,W), rgb (H,W,3))."""
    ys, xs = np.mgrid[:height, :width].astype(np.float64)
    d = np.stack([(xs - camera.cx) / camera.fx, (ys - camera.cy) / camera.fy, np.ones_like(xs)], -1)
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    # |(t dx - x0, t dz - z0)| = r in the xz-plane.
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = -2 * (d[..., 0] * x0 + d[..., 2] * z0)
    c = x0**2 + z0**2 - 21.5**2
    disc = b**2 - 4 * a * c
    hit = disc >= 0
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    point = t[..., None] * d
    normal = np.stack([point[..., 0] - x0, np.zeros_like(t), point[..., 2] - z0], -1) / 21.5
    diffuse = np.maximum(-normal[..., 2], 0)
    half = -d + [0, 0, -1]
    half /= np.linalg.norm(half, axis=-1, keepdims=True)
    spec = np.maximum((normal * half).sum(-1), 0) ** 32
    span = min(z0 + 6000, 20000) - 0.1
    depth = np.clip(1 - (point[..., 2] - max(z0, 0.1)) / span, 0, 1)
    rgb = colour * ((0.3 + 0.7 * diffuse) * depth)[..., None] + (0.5 * spec * depth)[..., None]
    return hit, np.where(hit[..., None], np.floor(np.clip(rgb, 0, 1) * 255), 0)


def test_a_capsule_covers_the_predicted_pixels_with_the_predicted_colours():
    width, height = 64, 48
    camera = Camera(400.0, 400.0, width / 2, height / 2)
    x0, z0 = 30.0, 2000.0
    video = _renderer().render(_vertical_bone(x0, z0)[None, None], person_palettes(1), camera, width, height).numpy()
    hit, rgb = _expected_vertical_cylinder(camera, width, height, x0, z0, shade_colours(LIMB_COLOURS[HEAD_LIMB]))
    rows = slice(height // 2 - 10, height // 2 + 10)  # well inside the segment's rows (it spans +-40 px)
    assert hit[rows].sum() > 100
    np.testing.assert_array_equal(video[0, rows].any(-1), hit[rows])
    assert np.abs(video[0, rows].astype(int) - rgb[rows]).max() <= 1  # float32 vs float64 truncation


def test_capsule_ends_are_round():
    width, height = 64, 64
    camera = Camera(400.0, 400.0, width / 2, height / 2)
    video = _renderer().render(_vertical_bone(0, 2000, -50, 50)[None, None], person_palettes(1), camera, width, height)
    covered = video[0].numpy().any(-1)
    rows = np.flatnonzero(covered.any(1))
    # The segment ends at +-10 px, the end spheres add the 4.3 px radius.
    assert rows.min() == height // 2 - 14 and rows.max() == height // 2 + 14
    assert covered[rows.min()].sum() < covered[height // 2].sum()  # narrower at the cap than along the body


@pytest.mark.parametrize("vertical_in_front", [True, False])
def test_the_nearer_capsule_wins_across_persons(vertical_in_front):
    width, height = 48, 48
    # Far bones: the depth span is capped (z_max + 6000 > 20000), so a pair and its nearer bone alone shade alike.
    camera = Camera(5000.0, 5000.0, width / 2, height / 2)
    near, far = 14500.0, 16000.0
    vertical = _vertical_bone(0, near if vertical_in_front else far, -100, 100)
    horizontal = np.zeros((14, 3), np.float32)
    z = far if vertical_in_front else near
    horizontal[1], horizontal[2] = (-100, 0, z), (100, 0, z)  # neck -> right shoulder
    persons = [horizontal, vertical]
    palettes = person_palettes(2)
    renderer = _renderer()
    both = renderer.render(np.stack(persons)[None], palettes, camera, width, height)[0].numpy()
    nearer = 1 if vertical_in_front else 0
    alone = [p if i == nearer else np.zeros_like(p) for i, p in enumerate(persons)]
    expected = renderer.render(np.stack(alone)[None], palettes, camera, width, height)[0].numpy()
    pixel = (height // 2 + 3, width // 2 + 3)  # covered by both, off the specular highlight
    other = renderer.render(np.stack(persons[::-1])[None], palettes[::-1], camera, width, height)[0].numpy()
    assert both[pixel].any() and tuple(both[pixel]) == tuple(expected[pixel])
    assert tuple(both[pixel]) == tuple(other[pixel])  # person order does not matter, depth does


def test_a_bone_with_a_missing_end_is_not_drawn():
    joints = _vertical_bone(0, 2000)
    joints[HEAD] = 0
    video = _renderer().render(joints[None, None], person_palettes(1), Camera(400, 400, 16, 16), 32, 32)
    assert not video.numpy().any()


def test_frames_are_rendered_independently_across_chunks():
    joints = np.stack([_vertical_bone(x, 2000) for x in (-60, 0, 60)])[:, None]
    camera = Camera(400.0, 400.0, 32, 24)
    renderer = _renderer()
    clip = renderer.render(joints, person_palettes(1), camera, 64, 48).numpy()
    for t in range(3):  # the depth range of the clip is the same for every single frame here
        np.testing.assert_array_equal(clip[t], renderer.render(joints[t : t + 1], person_palettes(1), camera, 64, 48)[0])


def _golden_joints() -> np.ndarray:
    """(1,1,14,3) mm: a standing person, arms slightly out, 2 m away, right side turned to the camera."""
    points = {
        0: (0, -700), 1: (0, -500), 2: (-180, -480), 3: (-260, -220), 4: (-300, 20), 5: (180, -480),
        6: (260, -220), 7: (300, 20), 8: (-100, 0), 9: (-110, 420), 10: (-120, 820), 11: (100, 0),
        12: (110, 420), 13: (120, 820),
    }  # fmt: skip
    joints = np.array([(x, y, 2000 + 0.8 * x) for x, y in points.values()], np.float32)
    return joints[None, None]


def test_golden_render():
    video = _renderer().render(_golden_joints(), person_palettes(1), Camera.default(96, 128), 96, 128)
    image = video[0].numpy()
    golden = cv2.imread(str(GOLDEN))[..., ::-1]
    assert golden is not None and golden.shape == image.shape
    differs = np.abs(golden.astype(int) - image).max(-1) > 1
    assert differs.mean() < 0.002, f"{differs.sum()} pixels differ from {GOLDEN.name}"


@pytest.mark.gpu
def test_cuda_render_matches_cpu():
    joints = _golden_joints().repeat(5, 0)
    camera = Camera.default(96, 128)
    cpu = CapsuleRenderer(torch.device("cpu")).render(joints, person_palettes(1), camera, 96, 128).numpy()
    gpu = CapsuleRenderer(torch.device("cuda")).render(joints, person_palettes(1), camera, 96, 128).cpu().numpy()
    assert (np.abs(cpu.astype(int) - gpu).max(-1) > 1).mean() < 0.002
