"""Stand-ins for the pose models and the generator, for tests of the serving logic only.

They implement the two interfaces the Engine uses (`render`, `generate` + `release_job_memory`) with
cheap deterministic arithmetic, and record how they were called. The end-to-end tests use the real ones.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class StandInPoseMaker:
    """`render` returns the inverted frames (any deterministic change of the input would do)."""

    def __init__(self):
        self.calls = []

    def render(self, frames, reference, *, num_persons=1, align_to_reference=True):
        self.calls.append({"frames": frames.shape, "reference": reference.shape, "num_persons": num_persons})
        return 255 - frames


class StandInPipeline:
    """`generate` runs `steps` steps of `step_s` seconds, calling back after each, then blends its inputs.

    `fail_with` makes the next generation raise that exception after its first step.
    """

    def __init__(self, step_s: float = 0.0):
        self.step_s = step_s
        self.fail_with: BaseException | None = None
        self.calls: list[dict] = []
        self.steps_done = 0
        self.released = 0
        self.started = threading.Event()
        self.gemm = "bf16"

    def generate(self, reference, pose_frames, prompt, *, callback=None, **settings):
        self.calls.append({"reference": reference, "pose_frames": pose_frames, "prompt": prompt, **settings})
        self.steps_done = 0
        self.started.set()
        total = settings["steps"]
        for step in range(1, total + 1):
            time.sleep(self.step_s)
            self.steps_done = step
            if self.fail_with is not None:
                error, self.fail_with = self.fail_with, None
                raise error
            if callback is not None:
                callback(step, total)
        return ((reference[None].astype(np.uint16) + pose_frames) // 2).astype(np.uint8)

    def release_job_memory(self):
        self.released += 1
