"""Timing and memory probes for the GPU benchmarks."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

GIB = 1 << 30


def host_peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def reset_vram_peak() -> None:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()


def vram_peak_gib() -> float:
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / GIB


@dataclass
class Timing:
    """Wall-clock samples of one repeated operation, in seconds."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        return max(self.samples) - min(self.samples) if self.samples else 0.0


def time_cuda(fn: Callable[[], object], *, warmup: int = 1, repeat: int = 3) -> Timing:
    """Median-able timings of `fn` measured with CUDA events after `warmup` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    timing = Timing()
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        timing.samples.append(start.elapsed_time(end) / 1000)
    return timing


@contextmanager
def wall_clock(results: dict, key: str):
    """Store the seconds spent in the block under results[key] (device synchronised)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    yield
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    results[key] = time.perf_counter() - start


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.double(), ref.double()
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


def report(result: dict, out: Path | None) -> None:
    """Write a benchmark's result as JSON to stdout (the command's output) and to `out` when given."""
    text = json.dumps(result, indent=1)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if out:
        out.write_text(text)


def run_child(command: list[str], env: dict[str, str] | None = None) -> tuple[dict, str]:
    """(the JSON object on the last line of `command`'s stdout, or {"error": its stderr's tail}; its stderr),
    for probes that need a fresh process per row."""
    done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr
