"""The async RunPod handler: validate, dispatch, run the job in a thread, map every failure to an answer.

RunPod stops a job by cancelling its asyncio task. The generation runs in a worker thread, so the
handler turns the cancellation into the job's cancel flag, waits until the thread has stopped (within
one denoising step) and its GPU memory is released, and only then lets the cancellation through:
the next job never overlaps the remains of the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from common.errors import InputError
from worker.engine import Engine
from worker.errors import error_response
from worker.progress import Progress, Sink, runpod_sink
from worker.schema import ActionInput, parse_input
from worker.settings import Settings
from worker.status import status_report

log = logging.getLogger(__name__)


class JobHandler:
    """`await handler(job)` -> the job's answer; `startup_error` set when the engine could not load."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine | None,
        *,
        startup_error: str | None = None,
        sink_for: Callable[[dict], Sink] = runpod_sink,
    ):
        self.settings = settings
        self.engine = engine
        self.startup_error = startup_error
        self.sink_for = sink_for

    async def __call__(self, job: dict) -> dict:
        job_id = str(job.get("id", "local"))
        try:
            request = parse_input(job.get("input"))
        except InputError as exc:
            return error_response(exc, job_id)
        if isinstance(request, ActionInput):
            return await asyncio.to_thread(status_report, self.settings, self.engine, self.startup_error)
        if self.engine is None:
            return {"error": f"the worker is not ready: {self.startup_error}"}

        cancel = threading.Event()
        progress = Progress(self.sink_for(job), cancel, self.settings.progress_interval_s)
        work = asyncio.ensure_future(asyncio.to_thread(self.engine.run, request, progress, job_id))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            log.info("job %s: cancel requested; stopping at the next step", job_id)
            cancel.set()
            with contextlib.suppress(Exception):
                await work
            log.info("job %s: stopped", job_id)
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes {"error": ...}
            return error_response(exc, job_id)
