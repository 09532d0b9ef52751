"""Throttled progress reports and the cancel flag checked between denoising steps.

`runpod.serverless.progress_update` starts a thread and an HTTP session per call, so step updates are
sent at most every `interval_s`; a stage change and the first and last step of a stage always go out.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from runpod.serverless import progress_update

from common.errors import JobCancelled

log = logging.getLogger(__name__)

Sink = Callable[[dict], None]


class Progress:
    """Reports `{"stage", "step", "total"}` of one job to `sink`, throttled; raises JobCancelled once cancelled."""

    def __init__(self, sink: Sink, cancel: threading.Event, interval_s: float = 2.0, clock=time.monotonic):
        self._sink = sink
        self._cancel = cancel
        self._interval_s = interval_s
        self._clock = clock
        self._stage = ""
        self._last_step_sent = float("-inf")

    def stage(self, name: str) -> None:
        """Enter a new stage (always reported); raises JobCancelled when the job was cancelled."""
        self.check_cancelled()
        self._stage = name
        self._last_step_sent = float("-inf")  # the first step of a stage goes out: it carries the total
        self._send({"stage": name})

    def step(self, step: int, total: int) -> None:
        """The step callback of the sampler: cancel check, then a throttled report."""
        self.check_cancelled()
        now = self._clock()
        if step >= total or now - self._last_step_sent >= self._interval_s:
            self._last_step_sent = now
            self._send({"stage": self._stage, "step": step, "total": total})

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled(f"job cancelled during {self._stage or 'start-up'}")

    def _send(self, payload: dict) -> None:
        try:
            self._sink(payload)
        except Exception:  # noqa: BLE001 - a lost progress report must never fail the job
            log.warning("progress update %s could not be sent", payload, exc_info=True)


def runpod_sink(job: dict) -> Sink:
    """Send to RunPod's job status when running on RunPod; only log when local (no status URL there)."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return lambda payload: log.info("progress %s: %s", job.get("id"), payload)
    return lambda payload: progress_update(job, payload)
