"""Pose extraction + render of 81 frames at 896x512 on a CUDA host.

    python -m bench.pose_bench --volume build/volume-full

NLF runs with full-size random weights (EfficientNetV2-L, the real architecture). YOLOX and DWPose
are the volume's ONNX stand-ins on onnxruntime's CPU provider (the GPU host has no onnxruntime-gpu
and full-size random ONNX graphs are not built here), so their share is reported apart and is not
representative of the real models.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from bench.measure import report, reset_vram_peak, time_cuda, vram_peak_gib

WIDTH, HEIGHT, FRAMES = 896, 512, 81


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--volume", type=Path, default=Path("build/volume-full"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from pose.alignment import Camera, smpl_to_openpose
    from pose.renderer import person_palettes
    from pose.solution import PoseVideoMaker
    from tools.volume.pose_files import write_pose_files

    result: dict = {"device": torch.cuda.get_device_name()}
    if not (args.volume / "pose").is_dir():
        write_pose_files(args.volume, "full", multi_person=False)
    device = torch.device("cuda")
    started = time.perf_counter()
    maker = PoseVideoMaker.from_model_root(args.volume, device, multi_person=False)
    result["load_s"] = time.perf_counter() - started
    # The detector is a stand-in that boxes a centred person whatever the pixels: random frames do.
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    reference = frames[0].copy()

    started = time.perf_counter()
    poses = maker.detect(frames, 1)
    result["detect_dwpose_standin_cpu_s"] = time.perf_counter() - started
    reset_vram_peak()
    nlf_timing = time_cuda(lambda: maker.joints(frames, poses.boxes), warmup=1, repeat=3)
    result["nlf_81_boxes_s"] = nlf_timing.median
    result["nlf_vram_peak_gib"] = vram_peak_gib()

    joints = smpl_to_openpose(maker.joints(frames, poses.boxes))[:, None]
    joints[..., 2] = np.abs(joints[..., 2]) + 3000  # random NLF weights: put the skeleton in front of the camera
    camera = Camera.default(WIDTH, HEIGHT)
    reset_vram_peak()
    render_timing = time_cuda(
        lambda: maker.renderer.render(joints, person_palettes(1), camera, WIDTH, HEIGHT), warmup=1, repeat=5
    )
    result["render_81_frames_s"] = render_timing.median
    result["render_vram_peak_gib"] = vram_peak_gib()

    started = time.perf_counter()
    video = maker.render(frames, reference, num_persons=1, align_to_reference=True)
    torch.cuda.synchronize()
    result["end_to_end_s"] = time.perf_counter() - started
    result["output_shape"] = list(video.shape)
    report(result, args.out)


if __name__ == "__main__":
    main()
