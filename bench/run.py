"""The SCAIL benchmark on a CUDA host, at 896x512x81 (48,832 tokens per forward).

    python -m bench.run build    --volume build/volume-full
    python -m bench.run engine   --volume build/volume-full --profile 1 --steps 3
    python -m bench.run worker   --volume build/volume-full --profile 4
    python -m bench.run peer     --volume build/volume-full
    python -m bench.run fidelity --volume build/volume-full

Each subcommand prints one JSON object (and writes it under --out when given). `bench/h100.sh` runs
them in separate processes, so that peak host RAM is per variant. Results: docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from bench.measure import host_peak_rss_gib, report, reset_vram_peak, vram_peak_gib

log = logging.getLogger("bench")
T = TypeVar("T")

WIDTH, HEIGHT, FRAMES = 896, 512, 81
GIB = 1 << 30


def drop_page_cache() -> bool:
    """Empty the OS page cache so that reads come from the disk (root only); False when not allowed."""
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def evict_from_page_cache(paths: list[Path]) -> bool:
    """Drop `paths` alone from the OS page cache (no root needed): libraries stay cached, as on a host
    whose volume is a device of its own."""
    subprocess.run(["sync"], check=True)
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def make_cold(paths: list[Path], evict: str) -> bool:
    """Empty the page cache of everything ("all") or of `paths` ("weights"); False when not allowed."""
    return drop_page_cache() if evict == "all" else evict_from_page_cache(paths)


def generator_files(volume: Path) -> list[Path]:
    from wan2gp_integration.files import CLIP_FILE, DIT_FILE, UMT5_FILE, VAE_FILE

    return [volume / name for name in (DIT_FILE, UMT5_FILE, CLIP_FILE, VAE_FILE)]


def sequential_read_seconds(paths: list[Path]) -> tuple[float, int]:
    """(seconds, bytes) to read `paths` front to back once, in 64 MiB chunks."""
    buffer = bytearray(64 << 20)
    total, started = 0, time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buffer):
                total += n
    return time.perf_counter() - started, total


def synthetic_job(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random reference image and 81 random pose frames at 896x512 (speed does not depend on pixels)."""
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    pose = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    return reference, pose


def cmd_build(args) -> dict:
    from tools.make_volume import build_volume

    started = time.perf_counter()
    build_volume(args.volume, "full", multi_person=False)
    return {"build_s": time.perf_counter() - started}


def timed_cold_load(files: list[Path], evict: str, load: Callable[[], T], result: dict) -> T:
    """load() from cold `files`, timed into `result` against one sequential read of them before and one
    after (the ratio is to their mean: the same disk read the same files in 16.5-23.4 s within minutes)."""
    cold = make_cold(files, evict)
    if cold:
        result["sequential_read_s"], read_bytes = sequential_read_seconds(files)
        result["weights_gib"] = read_bytes / GIB
        result["cold_cache"] = make_cold(files, evict)
    started = time.perf_counter()
    loaded = load()
    result["cold_start_s"] = time.perf_counter() - started
    result["rss_after_load_gib"] = host_peak_rss_gib()
    if cold and make_cold(files, evict):
        result["sequential_read_after_s"], _ = sequential_read_seconds(files)
        read_s = (result["sequential_read_s"] + result["sequential_read_after_s"]) / 2
        result["cold_start_over_read"] = result["cold_start_s"] / read_s
    return loaded


def cmd_engine(args) -> dict:
    """Cold start, encoders, seconds per CFG step, VAE decode, peaks: one offload profile."""
    from wan2gp_integration.pipeline import ScailPipeline

    result: dict = {"profile": args.profile, "attention": args.attention, "compile": args.compile,
                    "pin_memory": args.pin_memory, "gemm": args.gemm, "evict": args.evict}  # fmt: skip
    if args.profile_setup:
        result["setup_profile"] = profile_offload_setup()

    def load() -> ScailPipeline:
        return ScailPipeline.from_model_root(args.volume, torch.device("cuda"), profile=args.profile,
                                             attention=args.attention, compile=args.compile,
                                             pin_memory=args.pin_memory, gemm=args.gemm)  # fmt: skip

    pipeline = timed_cold_load(generator_files(args.volume), args.evict, load, result)
    if args.steps:
        result.update(generation_stats(pipeline, args.steps))
    return result


def cmd_worker(args) -> dict:
    """The worker's cold start: worker.models.load_models (pose models beside the generator, as
    Engine.load) from cold files, against one sequential read of every file it reads."""
    from pose.files import DWPOSE_FILE, NLF_META_FILE, NLF_WEIGHTS_FILE, YOLOX_FILE
    from tools.volume.pose_files import write_pose_files
    from worker.models import load_models
    from worker.settings import Settings

    if not (args.volume / NLF_WEIGHTS_FILE).is_file():
        write_pose_files(args.volume, "full", multi_person=False)
    pose_files = [args.volume / name for name in (YOLOX_FILE, DWPOSE_FILE, NLF_WEIGHTS_FILE, NLF_META_FILE)]
    env = {"SCAIL_MODEL_ROOT": str(args.volume), "SCAIL_DEVICE": "cuda", "SCAIL_OFFLOAD_PROFILE": str(args.profile or "auto")}
    settings = Settings.from_env(env)
    result: dict = {"profile": args.profile, "evict": args.evict}
    timed_cold_load(generator_files(args.volume) + pose_files, args.evict, lambda: load_models(settings), result)
    return result


def generation_stats(pipeline, steps: int) -> dict:
    """Seconds per CFG step, stage times and peak memory of one synthetic job of `steps` steps."""
    result: dict = {}
    reference, pose = synthetic_job()
    step_ends: list[float] = []

    def on_step(step: int, total: int) -> None:
        torch.cuda.synchronize()
        step_ends.append(time.perf_counter())

    reset_vram_peak()
    started = time.perf_counter()
    frames = pipeline.generate(reference, pose, "a dancer on a stage", negative_prompt=None, seed=0,
                               steps=steps, guidance_scale=5.0, shift=7.0, sampler="unipc", callback=on_step)  # fmt: skip
    result["generate_s"] = time.perf_counter() - started
    result["output_shape"] = list(frames.shape)
    result["vram_peak_gib"] = vram_peak_gib()
    result["vram_reserved_peak_gib"] = torch.cuda.max_memory_reserved() / GIB
    result["rss_peak_gib"] = host_peak_rss_gib()
    result["stage_s"] = dict(pipeline.last_timings)
    # The first step carries one-time work (kernel selection, mmgp's first transfers): reported apart.
    result["first_step_s"] = pipeline.last_timings["denoise"] - (step_ends[-1] - step_ends[0])
    result["step_s"] = [float(s) for s in np.diff(step_ends)]
    result["cfg_step_s"] = float(np.median(result["step_s"]))
    return result


def profile_offload_setup(top: int = 30) -> list[str]:
    """Wrap the pipeline's mmgp setup in cProfile; the returned list fills with its costliest calls."""
    import cProfile
    import io
    import pstats

    from wan2gp_integration import pipeline

    lines: list[str] = []
    original = pipeline.setup_offload

    def profiled(*args, **kwargs):
        profiler = cProfile.Profile()
        try:
            return profiler.runcall(original, *args, **kwargs)
        finally:
            text = io.StringIO()
            stats = pstats.Stats(profiler, stream=text)
            stats.sort_stats("cumulative").print_stats(top)
            stats.sort_stats("tottime").print_stats(top)
            lines.extend(line for line in text.getvalue().splitlines() if line.strip())

    pipeline.setup_offload = profiled
    return lines


def dense_dit_state(volume: Path, device: str = "cuda") -> dict[str, torch.Tensor]:
    """The DiT file's weights with int8 layers dequantised to bf16 on `device`: the same weights for every variant."""
    from common.files import load_safetensors_sequential
    from wan2gp_integration.files import DIT_FILE

    tensors, _ = load_safetensors_sequential(volume / DIT_FILE)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith(".weight._data"):
            base = name[: -len("._data")]
            weight = tensor.cuda().to(torch.bfloat16) * tensors[base + "._scale"].cuda()
            state[base] = weight.to(device, torch.bfloat16)
        elif name.endswith(("._scale", ".input_scale", ".output_scale")):
            continue
        else:
            state[name] = tensor.to(device, torch.bfloat16)
    return state


def cmd_peer(args) -> dict:
    """diffusers WanTransformer3DModel with the volume's weights, bf16 and quanto int8, both CFG branches."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    from bench import peer

    state = dense_dit_state(args.volume, device="cpu")  # the peer holds its own copy on the GPU
    state = {k: v for k, v in state.items() if not k.startswith("pose_patch_embedding")}
    converted = convert_wan_transformer_to_diffusers(state)
    model = peer.build_peer()
    missing, unexpected = model.load_state_dict(converted, strict=False)
    result: dict = {"missing_keys": len(missing), "unexpected_keys": len(unexpected)}
    del state, converted
    torch.cuda.empty_cache()
    result["bf16"] = peer.bench_peer(model, batch=2)
    peer.quantize_int8(model)
    torch.cuda.empty_cache()
    result["quanto_int8"] = peer.bench_peer(model, batch=2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["build", "engine", "worker", "peer", "fidelity"])
    parser.add_argument("--volume", type=Path, default=Path("build/volume-full"))
    parser.add_argument("--profile", type=int, default=None)
    parser.add_argument("--attention", default="auto")
    parser.add_argument("--steps", type=int, default=3, help="engine: denoising steps; 0 measures the cold start alone")
    tri_state = {"auto": None, "on": True, "off": False}
    parser.add_argument("--compile", choices=tri_state, default="auto")
    parser.add_argument("--pin-memory", choices=tri_state, default="auto")
    parser.add_argument("--gemm", default="auto", help="how the blocks' int8 Linears compute: auto, bf16, int8, fp8")
    parser.add_argument("--evict", choices=["all", "weights"], default="all",
                        help="engine: before the cold start, empty the page cache of everything (root) or of the weight files")
    parser.add_argument("--profile-setup", action="store_true", help="cProfile mmgp's setup (inflates cold start)")
    parser.add_argument("--variants", help="fidelity: comma-separated subset of bench.fidelity.VARIANTS")
    parser.add_argument("--seed", type=int, default=0, help="fidelity: seed of the random DiT inputs")
    parser.add_argument("--timestep", type=float, default=700.0, help="fidelity: the DiT's timestep t")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.compile, args.pin_memory = tri_state[args.compile], tri_state[args.pin_memory]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    commands = {"build": cmd_build, "engine": cmd_engine, "worker": cmd_worker, "peer": cmd_peer}
    from bench import fidelity

    commands["fidelity"] = fidelity.run
    result = commands[args.command](args)
    result["device"] = torch.cuda.get_device_name()
    report(result, args.out)


if __name__ == "__main__":
    main()
