"""How fast host memory for the DiT can be page-locked: 16 GiB in 1 GiB pieces, each way in a fresh process.

Profile 4's cold start was bound by page-locking (docs/PERFORMANCE.md); this compares cudaHostAlloc
(torch's default pinned allocator), torch's cudaHostRegister allocator with page-touching threads, and
registering memory that a read has already written (alone, and piece by piece behind the writes).

`python -m bench.pin_probe --out bench-pin-probe.json`
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from bench.measure import report, run_child

log = logging.getLogger(__name__)

PIECE = 1 << 30
_HOST_REGISTER = "pinned_use_cuda_host_register:True,pinned_num_register_threads:16"
VARIANTS = {
    "cudaHostAlloc (torch pin_memory)": ("alloc", {}),
    "cudaHostRegister, 16 page-touching threads (torch allocator setting)": ("alloc", {"PYTORCH_CUDA_ALLOC_CONF": _HOST_REGISTER}),
    "write each piece, then cudaHostRegister it": ("register", {}),
    "cudaHostRegister of piece i while piece i+1 is written": ("register-behind", {}),
}


def _register(buffer: np.ndarray) -> None:
    code = torch.cuda.cudart().cudaHostRegister(buffer.ctypes.data, buffer.nbytes, 0)
    if int(code) != 0:
        raise RuntimeError(f"cudaHostRegister failed: {code}")


def _h2d_gib_s(host: torch.Tensor) -> float:
    """Host-to-device copy rate of one piece (pinned memory copies at ~25 GiB/s, pageable far slower)."""
    device = torch.empty(host.shape, dtype=host.dtype, device="cuda")
    device.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    started = time.perf_counter()
    device.copy_(host, non_blocking=True)
    torch.cuda.synchronize()
    return host.numel() / (1 << 30) / (time.perf_counter() - started)


def child(mode: str, gib: int) -> dict:
    torch.cuda.init()
    torch.ones(1, device="cuda").sum().item()
    result: dict = {"mode": mode}
    started = time.perf_counter()
    if mode == "alloc":
        pieces = [torch.empty(PIECE, dtype=torch.uint8, pin_memory=True) for _ in range(gib)]
        result["pin_s"] = time.perf_counter() - started
        write_started = time.perf_counter()
        for piece in pieces:
            piece.numpy().fill(1)
        result["write_s"] = time.perf_counter() - write_started
    elif mode == "register":
        arrays, write_s, register_s = [], 0.0, 0.0
        for _ in range(gib):
            array = np.empty(PIECE, dtype=np.uint8)
            t0 = time.perf_counter()
            array.fill(1)
            t1 = time.perf_counter()
            _register(array)
            register_s += time.perf_counter() - t1
            write_s += t1 - t0
            arrays.append(array)
        result.update(write_s=write_s, pin_s=register_s)
        pieces = [torch.from_numpy(a) for a in arrays]
    else:  # register-behind
        arrays = [np.empty(PIECE, dtype=np.uint8) for _ in range(gib)]
        with ThreadPoolExecutor(max_workers=1) as registrar:
            pending = []
            for array in arrays:
                array.fill(1)
                pending.append(registrar.submit(_register, array))
            written = time.perf_counter()
            for future in pending:
                future.result()
        result["after_last_write_s"] = time.perf_counter() - written
        pieces = [torch.from_numpy(a) for a in arrays]
    result["total_s"] = time.perf_counter() - started
    result["gib_per_s"] = gib / result["total_s"]
    result["pinned"] = all(p.is_pinned() for p in pieces)
    result["h2d_gib_s"] = _h2d_gib_s(pieces[0])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gib", type=int, default=16)
    parser.add_argument("--child", choices=["alloc", "register", "register-behind"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.child:
        sys.stdout.write(json.dumps(child(args.child, args.gib)) + "\n")
        return
    rows = []
    for name, (mode, env) in VARIANTS.items():
        command = [sys.executable, "-m", "bench.pin_probe", "--child", mode, "--gib", str(args.gib)]
        row, _ = run_child(command, env)
        rows.append({"variant": name, **row})
        log.info("%s", rows[-1])
    report({"gib": args.gib, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
