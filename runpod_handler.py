"""RunPod serverless entry point of scail-worker.

    python runpod_handler.py                      # run ./test_input.json once (exit 1 on error)
    python runpod_handler.py --rp_serve_api       # local FastAPI: POST /runsync, /run, /status/{id}
    SCAIL_SELF_TEST=1 python runpod_handler.py    # the same on a tiny volume built at start

The engine is loaded once per process, before the first job; see worker/ for everything else.
"""

from __future__ import annotations

import logging
import os
import sys

import runpod

from worker.settings import get_settings
from worker.startup import build_handler


def log_level(name: str) -> str:
    """`name` as a logging level name; SystemExit naming SCAIL_LOG_LEVEL when it is none."""
    level = name.strip().upper()
    if not isinstance(logging.getLevelName(level), int):
        raise SystemExit(f"environment variable SCAIL_LOG_LEVEL={name!r} must be DEBUG, INFO, WARNING or ERROR")
    return level


def main() -> None:
    logging.basicConfig(
        level=log_level(os.environ.get("SCAIL_LOG_LEVEL", "INFO")),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler = build_handler(get_settings())
    # One job at a time per worker: a job uses the whole GPU.
    runpod.serverless.start({"handler": handler, "concurrency_modifier": lambda current: 1})


if __name__ == "__main__":
    main()
