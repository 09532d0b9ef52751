"""The Engine: the pose models and the SCAIL pipeline, loaded once per process, running one job at a time.

    fetch inputs -> decode -> fit to canvas -> pose (unless already rendered) -> generate -> encode mp4 -> store

Every stage is timed and reported through `Progress`; the sampler's step callback is where a cancelled
job stops. GPU memory of a job is released whatever way it ends, so the next job starts clean.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from common.errors import InputError
from pose.frames import MAX_FRAMES, fit_to_canvas, resample_frames
from worker.inputs import fetch_input
from worker.media import VideoReader, decode_image, encode_mp4
from worker.models import load_models
from worker.plan import default_size, job_fps, resolve, source_frames_needed
from worker.progress import Progress
from worker.schema import JobInput
from worker.settings import Settings
from worker.storage import Storage

log = logging.getLogger(__name__)


class PoseMaker(Protocol):
    """What the engine needs of `pose.solution.PoseVideoMaker`."""

    def render(
        self, frames: np.ndarray, reference: np.ndarray, *, num_persons: int = 1, align_to_reference: bool = True
    ) -> np.ndarray: ...


class Generator(Protocol):
    """What the engine needs of `wan2gp_integration.pipeline.ScailPipeline`."""

    def generate(self, reference: np.ndarray, pose_frames: np.ndarray, prompt: str, **settings) -> np.ndarray: ...

    def release_job_memory(self) -> None: ...


class Engine:
    """Runs validated jobs on models loaded once; `run` is thread-safe and serialises jobs."""

    def __init__(
        self,
        settings: Settings,
        pose_maker: PoseMaker,
        pipeline: Generator,
        *,
        device: torch.device,
        multi_person: bool,
        storage: Storage | None = None,
    ):
        self.settings = settings
        self.pose_maker = pose_maker
        self.pipeline = pipeline
        self.device = device
        self.multi_person = multi_person
        self.storage = storage or Storage(settings)
        self.jobs_done = 0
        self._lock = threading.Lock()

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """The engine on the models of `settings.model_root` (worker.models: the slow part of a cold start)."""
        models = load_models(settings)
        return cls(settings, models.pose_maker, models.pipeline, device=models.device, multi_person=models.multi_person)

    @property
    def warm(self) -> bool:
        """True once a job went through (kernels compiled, weights paged in)."""
        return self.jobs_done > 0

    def run(self, job: JobInput, progress: Progress, job_id: str = "local") -> dict:
        """Generate the video of `job`; the result dict of the job contract (raises ScailError on bad input)."""
        with self._lock, tempfile.TemporaryDirectory(prefix="scail-job-") as work_dir:
            timings: dict[str, float] = {}
            try:
                result = self._run(job, progress, job_id, Path(work_dir), timings)
            finally:
                self._release_memory()
        self.jobs_done += 1
        return result

    def _run(self, job: JobInput, progress: Progress, job_id: str, work_dir: Path, timings: dict) -> dict:
        settings = self.settings
        if job.num_persons > 1 and not job.pose_video_is_rendered and not self.multi_person:
            raise InputError("num_persons > 1 needs the SAM and MatAnyone files on the volume (mask/); use 1")

        with _stage("fetch", progress, timings):
            ref_path = fetch_input(job.reference_image, "reference_image", "image", work_dir, settings)
            video_path = fetch_input(job.pose_video, "pose_video", "video", work_dir, settings)

        with _stage("decode", progress, timings):
            reference = decode_image(ref_path, "reference_image", settings.max_pixels)
            width, height = default_size(reference.shape[1], reference.shape[0], job.width, job.height)
            video = VideoReader.open(video_path, "pose_video", settings.max_pixels)
            fps = job_fps(job, video.fps)
            source_fps = video.fps or fps
            wanted = source_frames_needed(job.num_frames or MAX_FRAMES, source_fps, fps)
            # Frames are fitted to the canvas while decoding, so a long 4K video never sits in memory whole.
            frames = video.read(min(wanted, settings.max_frames), lambda frame: fit_to_canvas(frame, width, height))
            frames = resample_frames(frames, source_fps, fps)
            plan = resolve(job, size=(width, height), available=len(frames), fps=fps)
            driving = frames[: plan.num_frames]
            reference = fit_to_canvas(reference, width, height)

        if job.pose_video_is_rendered:
            pose_frames = driving
        else:
            with _stage("pose", progress, timings):
                pose_frames = self.pose_maker.render(
                    driving, reference, num_persons=job.num_persons, align_to_reference=job.align_to_reference
                )

        with _stage("generate", progress, timings):
            video_frames = self.pipeline.generate(
                reference,
                pose_frames,
                job.prompt,
                negative_prompt=plan.negative_prompt,
                seed=plan.seed,
                steps=plan.steps,
                guidance_scale=plan.guidance_scale,
                shift=plan.shift,
                sampler=plan.sampler,
                callback=progress.step,
            )

        with _stage("encode", progress, timings):
            video_path = encode_mp4(video_frames, plan.fps, work_dir / "video.mp4")
            pose_path = encode_mp4(pose_frames, plan.fps, work_dir / "pose.mp4") if job.return_pose_video else None

        with _stage("store", progress, timings):
            result = self.storage.deliver(video_path, job_id, "video", inline=job.return_base64)
            if pose_path is not None:
                pose_answer = self.storage.deliver(pose_path, job_id, "pose_video", inline=job.return_base64)
                if "warning" in pose_answer and "warning" in result:
                    pose_answer["warning"] = f"{result['warning']}; {pose_answer['warning']}"
                result.update(pose_answer)

        # The generator's own breakdown (text/CLIP/VAE encode, denoise, decode) when it keeps one.
        timings.update({f"generate.{name}": sec for name, sec in getattr(self.pipeline, "last_timings", {}).items()})
        plan_fields = plan.as_dict()
        plan_fields.pop("negative_prompt")  # long and known from the preset; the job can always send its own
        return {**result, **plan_fields, "timings": {name: round(sec, 3) for name, sec in timings.items()}}

    def _release_memory(self) -> None:
        """Free what the last job left on the GPU (activations, caches) but keep the loaded models."""
        try:
            self.pipeline.release_job_memory()
        finally:
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


@contextmanager
def _stage(name: str, progress: Progress, timings: dict[str, float]) -> Iterator[None]:
    """Report entering `name`, then record how long it took."""
    progress.stage(name)
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started
    log.info("stage %s: %.2f s", name, timings[name])
