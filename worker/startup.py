"""Bring a worker process up: settings, optional self-test volume, fitness checks, the engine, the handler.

A failure to load the engine does not crash the process: the status job still answers (and says what
is wrong), generation jobs answer the startup error, and in production a fitness check stops the worker.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

from worker.engine import Engine
from worker.handler import JobHandler
from worker.preflight import NotFitError, register_fitness_checks
from worker.settings import Settings

log = logging.getLogger(__name__)


def with_self_test_volume(settings: Settings) -> Settings:
    """Settings whose model root is a freshly built tiny volume with the demo inputs under `demo/`.

    This is how the RunPod Hub tests run: without the real volume, the full path on tiny random weights.
    """
    from tools.make_demo_inputs import write_demo_inputs
    from tools.make_volume import build_volume

    root = Path(tempfile.mkdtemp(prefix="scail-self-test-"))
    log.info("self-test: building the tiny volume in %s", root)
    build_volume(root, "tiny")
    write_demo_inputs(root / "demo")
    return dataclasses.replace(settings, model_root=root)


def build_handler(settings: Settings) -> JobHandler:
    """The job handler of this process, with the engine loaded (or the reason it could not be)."""
    if settings.self_test:
        settings = with_self_test_volume(settings)
    register_fitness_checks(settings)
    try:
        engine = Engine.load(settings)
        startup_error = None
    except Exception as exc:  # noqa: BLE001 - reported by the status job and every generation job
        log.exception("the engine could not be loaded from %s", settings.model_root)
        engine, startup_error = None, f"{type(exc).__name__}: {exc}"

    def engine_loaded() -> None:
        if startup_error is not None:
            raise NotFitError(f"the engine could not be loaded: {startup_error}")

    from runpod.serverless import register_fitness_check

    register_fitness_check(engine_loaded)
    return JobHandler(settings, engine, startup_error=startup_error)
