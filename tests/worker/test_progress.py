"""Progress reports are throttled; a cancelled job stops at its next check."""

from __future__ import annotations

import threading

import pytest

from common.errors import JobCancelled
from worker.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_progress(interval=2.0):
    sent, clock, cancel = [], Clock(), threading.Event()
    return Progress(sent.append, cancel, interval, clock=clock), sent, clock, cancel


def test_stage_changes_are_always_sent():
    progress, sent, _, _ = make_progress()
    progress.stage("fetch")
    progress.stage("decode")
    assert sent == [{"stage": "fetch"}, {"stage": "decode"}]


def test_steps_within_the_interval_are_dropped_but_the_last_is_sent():
    progress, sent, clock, _ = make_progress(interval=2.0)
    progress.stage("generate")
    for step in range(1, 11):
        clock.now += 0.5
        progress.step(step, 10)
    steps = [payload["step"] for payload in sent if "step" in payload]
    assert steps == [1, 5, 9, 10]
    assert sent[-1] == {"stage": "generate", "step": 10, "total": 10}


def test_the_first_step_after_a_stage_change_is_sent():
    progress, sent, clock, _ = make_progress(interval=2.0)
    progress.stage("pose")
    progress.step(1, 30)
    clock.now += 0.1
    progress.stage("generate")
    progress.step(1, 20)
    assert sent[-2:] == [{"stage": "generate"}, {"stage": "generate", "step": 1, "total": 20}]


def test_step_raises_once_cancelled():
    progress, _, _, cancel = make_progress()
    progress.stage("generate")
    progress.step(1, 10)
    cancel.set()
    with pytest.raises(JobCancelled, match="cancelled during generate"):
        progress.step(2, 10)


def test_a_failing_sink_does_not_fail_the_job():
    def broken(payload):
        raise ConnectionError("status endpoint down")

    progress = Progress(broken, threading.Event(), 0.0)
    progress.stage("fetch")
    progress.step(1, 1)
