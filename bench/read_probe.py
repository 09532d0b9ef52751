"""Where a cold start's reads lose time: each way of reading the four generator files, page cache dropped before each.

`python -m bench.read_probe --volume build/volume-full` (root, for dropping the page cache).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.measure import report
from bench.run import drop_page_cache, generator_files, sequential_read_seconds
from common.files import load_pth, read_sequential

log = logging.getLogger(__name__)


def pread_threads(path: Path, threads: int) -> np.ndarray:
    """The file in one fresh buffer, `threads` contiguous ranges read side by side."""
    size = path.stat().st_size
    buffer = np.empty(size, dtype=np.uint8)
    bounds = np.linspace(0, size, threads + 1, dtype=np.int64)

    def read_range(start: int, end: int) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            view = memoryview(buffer)
            while start < end:
                n = os.preadv(fd, [view[start : min(end, start + (64 << 20))]], start)
                start += n
        finally:
            os.close(fd)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read_range, bounds[:-1], bounds[1:]))
    return buffer


def page_in(path: Path) -> None:
    """Read the file through the page cache into a reused buffer (what the sequential baseline does)."""
    sequential_read_seconds([path])


def touch_all(state: dict[str, torch.Tensor]) -> float:
    return float(sum(t.float().sum() for t in state.values() if t.numel()))


def timed(name: str, fn, rows: list[dict]) -> None:
    drop_page_cache()
    started = time.perf_counter()
    fn()
    rows.append({"variant": name, "s": time.perf_counter() - started})
    log.info("%s", rows[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volume", type=Path, default=Path("build/volume-full"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dit, umt5, clip, vae = generator_files(args.volume)
    rows: list[dict] = []
    timed("sequential baseline, 4 files, one reused 64 MiB buffer", lambda: sequential_read_seconds([dit, umt5, clip, vae]), rows)
    timed("DiT alone, reused buffer", lambda: page_in(dit), rows)
    timed("DiT alone, fresh buffer (read_sequential)", lambda: read_sequential(dit), rows)
    timed("DiT alone, fresh buffer, 4 ranges in 4 threads", lambda: pread_threads(dit, 4), rows)
    timed("umT5 alone, reused buffer", lambda: page_in(umt5), rows)
    timed("umT5 alone, torch.load", lambda: torch.load(umt5, map_location="cpu", weights_only=True), rows)
    timed("umT5 alone, load_pth (one read, tensors as views of it)", lambda: load_pth(umt5), rows)
    timed("umT5 alone, page in then torch.load(mmap) and touch", lambda: (page_in(umt5), touch_all(
        torch.load(umt5, map_location="cpu", weights_only=True, mmap=True))), rows)  # fmt: skip

    def pipeline_like():
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(read_sequential, dit)] + [pool.submit(load_pth, p) for p in (umt5, clip, vae)]
            for f in futures:
                f.result()

    timed("4 files side by side: DiT read_sequential, .pth load_pth (as the pipeline)", pipeline_like, rows)

    def one_after_another():
        read_sequential(dit)
        for p in (umt5, clip, vae):
            load_pth(p)

    timed("DiT read_sequential then each .pth load_pth, one thread", one_after_another, rows)
    report({"rows": rows, "thp": Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()}, args.out)


if __name__ == "__main__":
    main()
