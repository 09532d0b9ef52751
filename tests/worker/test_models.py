"""Engine.load (worker.models): the pose models and the generator load side by side, and a failure is never lost."""

from __future__ import annotations

import logging
import threading

import pytest

from pose.solution import PoseVideoMaker
from wan2gp_integration.pipeline import ScailPipeline
from worker.engine import Engine


def _loader(result, barrier: threading.Barrier | None = None):
    """A stand-in `from_model_root`: meets the other loader at `barrier` (so both must run at once), then
    returns `result` or raises it."""

    def load(root, device, **options):
        if barrier is not None:
            barrier.wait()
        if isinstance(result, Exception):
            raise result
        return result

    return load


def test_the_pose_models_load_beside_the_generator(make_settings, monkeypatch):
    both_running = threading.Barrier(2, timeout=10)  # one after the other, the first loader waits in vain
    monkeypatch.setattr(PoseVideoMaker, "from_model_root", _loader("pose maker", both_running))
    monkeypatch.setattr(ScailPipeline, "from_model_root", _loader("pipeline", both_running))
    engine = Engine.load(make_settings())
    assert (engine.pose_maker, engine.pipeline) == ("pose maker", "pipeline")


def test_a_generator_failure_is_raised_after_the_pose_models_load(make_settings, monkeypatch):
    monkeypatch.setattr(PoseVideoMaker, "from_model_root", _loader("pose maker"))
    monkeypatch.setattr(ScailPipeline, "from_model_root", _loader(OSError("DiT unreadable")))
    with pytest.raises(OSError, match="DiT unreadable"):
        Engine.load(make_settings())


def test_when_both_fail_the_pose_error_is_raised_and_the_generators_logged(make_settings, monkeypatch, caplog):
    monkeypatch.setattr(PoseVideoMaker, "from_model_root", _loader(ValueError("NLF truncated")))
    monkeypatch.setattr(ScailPipeline, "from_model_root", _loader(OSError("DiT unreadable")))
    with caplog.at_level(logging.ERROR, logger="worker.models"), pytest.raises(ValueError, match="NLF truncated"):
        Engine.load(make_settings())
    assert "OSError: DiT unreadable" in caplog.text
