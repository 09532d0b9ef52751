"""The models a worker serves, loaded once per process: the pose models beside the SCAIL pipeline.

Apart from the engine so that a cold start can be loaded (and benchmarked) without the job stack.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pose.files import MATANYONE_FILE, SAM_FILE
from worker.settings import Settings

if TYPE_CHECKING:
    from pose.solution import PoseVideoMaker
    from wan2gp_integration.pipeline import ScailPipeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Models:
    pose_maker: PoseVideoMaker
    pipeline: ScailPipeline
    device: torch.device
    multi_person: bool  # SAM and MatAnyone are on the volume and loaded


def choose_device(name: str) -> torch.device:
    """`auto` -> the first CUDA device when usable, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_models(settings: Settings) -> Models:
    """The pose models and the pipeline from `settings.model_root` (the slow part of a cold start)."""
    from pose.solution import PoseVideoMaker
    from wan2gp_integration.pipeline import ScailPipeline

    root = settings.model_root
    device = choose_device(settings.device)
    multi_person = (root / SAM_FILE).is_file() and (root / MATANYONE_FILE).is_file()
    started = time.perf_counter()
    # Side by side: the pose models' sessions and the NLF read take seconds that the generator's
    # 28 GB of reads hide.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="models-load") as pool:
        pose_maker = pool.submit(PoseVideoMaker.from_model_root, root, device, multi_person=multi_person)
        pipeline = pool.submit(
            ScailPipeline.from_model_root,
            root,
            device,
            profile=settings.offload_profile,
            attention=settings.attention,
            compile=settings.compile,
            pin_memory=settings.pin_memory,
            gemm=settings.gemm,
        )
        pose_maker, pipeline = _results(pose_maker, pipeline)
    log.info("models loaded from %s on %s in %.1f s", root, device, time.perf_counter() - started)
    return Models(pose_maker, pipeline, device, multi_person)


def _results(*futures: Future) -> list:
    """Each future's result once all are done; the first failure raised, any later one logged."""
    failures = [error for error in (future.exception() for future in futures) if error is not None]
    for failure in failures[1:]:
        log.error("also failed while loading: %s: %s", type(failure).__name__, failure)
    if failures:
        raise failures[0]
    return [future.result() for future in futures]
