"""Write a complete model volume in the real file formats with random weights.

    python tools/make_volume.py --out DIR --size tiny|full

`tiny` is what the tests and the demo use; `full` has SCAIL-Preview 14B's real dimensions and is
built on a GPU host for benchmarks (speed and memory do not depend on weight values).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Literal

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.volume.generator_files import write_generator_files  # noqa: E402
from tools.volume.pose_files import write_pose_files  # noqa: E402

log = logging.getLogger("make_volume")


def build_volume(out: Path, size: Literal["tiny", "full"], *, multi_person: bool = True, seed: int = 0) -> None:
    """Write every file the worker reads under `out` (created if needed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_generator_files(out, size, seed=seed)
    write_pose_files(out, size, multi_person=multi_person, seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="model root to write")
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--no-multi-person", action="store_true", help="skip SAM and MatAnyone")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    build_volume(args.out, args.size, multi_person=not args.no_multi_person, seed=args.seed)
    log.info("volume written to %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
