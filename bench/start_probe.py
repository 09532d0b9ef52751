"""Does getting the GPU ready (CUDA context, compiler imports, attention probe) slow the DiT's read?

Each row runs in a fresh process (a device starts once per process): the device start alone, the
DiT's read alone, and both at once as the pipeline runs them; with the whole page cache emptied
(libraries read from the same disk as the weights) or with only the weight file evicted; reading in
chunks of 64 MiB or 1 GiB (the reading thread takes the GIL back after each).

`python -m bench.start_probe --volume build/volume-full --out bench-start-probe.json` (root)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import common.files as common_files
from bench.measure import report, run_child
from bench.run import generator_files, make_cold
from common.files import read_sequential
from wan2gp_integration.pipeline import _start_device

log = logging.getLogger(__name__)

ROWS = [("start", "all", 1024), ("read", "all", 1024), ("both", "all", 64), ("both", "all", 1024),
        ("both", "weights", 64), ("both", "weights", 1024)]  # fmt: skip


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def child(what: str, evict: str, chunk_mib: int, volume: Path) -> dict:
    common_files._READ_CHUNK = chunk_mib << 20
    dit = generator_files(volume)[0]
    make_cold([dit], evict)
    start = lambda: _start_device(torch.device("cuda"), "auto", compiled=True)  # noqa: E731
    read = lambda: read_sequential(dit)  # noqa: E731
    if what == "start":
        return {"start_s": timed(start)}
    if what == "read":
        return {"read_s": timed(read)}
    with ThreadPoolExecutor(1) as pool:
        started = time.perf_counter()
        device = pool.submit(timed, start)
        read_s = timed(read)
        return {"read_s": read_s, "start_s": device.result(), "both_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volume", type=Path, default=Path("build/volume-full"))
    parser.add_argument("--child", nargs=3, metavar=("WHAT", "EVICT", "CHUNK_MIB"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.child:
        what, evict, chunk_mib = args.child
        sys.stdout.write(json.dumps(child(what, evict, int(chunk_mib), args.volume)) + "\n")
        return
    rows = []
    for what, evict, chunk_mib in ROWS:
        command = [sys.executable, "-m", "bench.start_probe", "--volume", str(args.volume), "--child", what, evict,
                   str(chunk_mib)]  # fmt: skip
        row, stderr = run_child(command)
        rows.append({"what": what, "evict": evict, "chunk_mib": chunk_mib, **row, "log": stderr[-1500:]})
        log.info("%s %s: %s", what, evict, {k: v for k, v in rows[-1].items() if k != "log"})
    report({"rows": rows}, args.out)


if __name__ == "__main__":
    main()
