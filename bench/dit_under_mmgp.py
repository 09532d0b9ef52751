"""The DiT alone, set up by mmgp as the pipeline does it, timed over a few forwards with grad mode on
and off: how a GEMM mode behaves inside the engine rather than in the fidelity bench.

    python -m bench.dit_under_mmgp --volume build/volume-full --gemm int8 --profile 1
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from bench.fidelity import dit_inputs
from bench.measure import report, time_cuda

log = logging.getLogger(__name__)


def main() -> None:
    from wan2gp_integration import attention
    from wan2gp_integration.files import DIT_FILE
    from wan2gp_integration.gemm import use_gemm
    from wan2gp_integration.loading import load_dit
    from wan2gp_integration.offload import setup_offload

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", type=Path, default=Path("build/volume-full"))
    parser.add_argument("--gemm", default="int8")
    parser.add_argument("--profile", type=int, default=1)
    parser.add_argument("--own-compile", action="store_true",
                        help="compile each block ourselves after mmgp's setup (mmgp's compile off)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dit = load_dit(args.volume / DIT_FILE, torch.device("cpu"), torch.bfloat16)
    use_gemm(dit, args.gemm)
    handle = setup_offload({"transformer": dit}, args.profile, compile=not args.own_compile)
    if args.own_compile:
        for block in dit.blocks:
            block.compile()
    attention.set_backend("auto", torch.device("cuda"))
    inputs = dit_inputs(dit.cfg)
    steps = iter([950.0, 900.0, 850.0, 800.0, 750.0, 700.0, 650.0, 600.0])

    def forward():
        t = torch.full((2,), next(steps), device="cuda", dtype=torch.float64)
        return dit(inputs["x"], inputs["pose"], t, inputs["context"], inputs["clip_tokens"])

    result = {"gemm": args.gemm, "profile": args.profile, "own_compile": args.own_compile}

    def note(key: str, value) -> None:  # logged as measured: a stage cut off by its time limit keeps what it saw
        result[key] = value
        log.info("%s: %s (dynamo so far: %s)", key, value, dynamo_counts())

    note("first_s", time_cuda(forward, warmup=0, repeat=1).median)
    note("grad_mode_s", time_cuda(forward, warmup=0, repeat=2).samples)
    with torch.inference_mode():
        note("inference_mode_s", time_cuda(forward, warmup=1, repeat=2).samples)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            forward()
            torch.cuda.synchronize()
    result["top_kernels"] = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12).splitlines()
    result["dynamo"] = dynamo_counts()
    del handle
    report(result, args.out)


def dynamo_counts() -> dict:
    """How many frames dynamo compiled, graphs it made and breaks it met: many more than blocks means the
    compiled blocks were cut into pieces (each piece beyond the recompile limits runs eager)."""
    from torch._dynamo.utils import counters

    return {"frames": dict(counters["frames"]), "stats": dict(counters["stats"]),
            "graph_breaks": sum(counters["graph_break"].values()), "recompiles": sum(counters["recompiles"].values())}


if __name__ == "__main__":
    main()
