"""The SCAIL DiT file of a volume: random weights, int8 through mmgp's own saver (as the real file).

mmgp quantizes every Linear inside `blocks.*` to optimum-quanto qint8 and keeps the rest bf16; the
excluded module names are passed explicitly because mmgp's size heuristic would quantize the
non-block Linears of a small model too.

The full size (16.4 B parameters) is generated, held (33 GB bf16 + 16.4 GB int8) and quantized on the
GPU when there is one (an 80 GB card fits it; quanto on 2 CPU cores needs ~5 s per 70 M weights, so
the CPU path takes many minutes); mmgp's saver copies tensor by tensor to the file. The tiny size is
always generated on the CPU so that its weights do not depend on the machine.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Literal

import torch
from mmgp import offload

from wan2gp_integration.dit import DiTConfig, ScailDiT
from wan2gp_integration.loading import DIT_FILE

log = logging.getLogger(__name__)

CPU = torch.device("cpu")
BF16_FILE = "wan2.1_scail_preview_14B_bf16.safetensors"
# Modules outside `blocks.*` stay bf16 in the real file.
NOT_QUANTIZED = [
    "patch_embedding",
    "pose_patch_embedding",
    "text_embedding*",
    "time_embedding*",
    "time_projection*",
    "img_emb*",
    "head*",
]
# Residual-branch outputs start small so that 40 random blocks keep activations in range.
_RESIDUAL_OUTPUTS = (".o.weight", ".ffn.2.weight")


def config_for(size: Literal["tiny", "full"]) -> DiTConfig:
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    return DiTConfig.tiny() if size == "tiny" else DiTConfig.full()


def random_tensor(name: str, shape: torch.Size, cfg: DiTConfig, generator: torch.Generator) -> torch.Tensor:
    """A float32 tensor for parameter `name` with a scale that keeps a random model's activations sane."""
    x = torch.randn(shape, generator=generator, device=generator.device)
    if name.endswith("modulation"):
        return x / math.sqrt(cfg.dim)
    if name.endswith(".bias"):
        return x * 0.02
    if len(shape) == 1:  # norm weights: around one, not exactly, so tests see them used
        return 1 + 0.1 * x
    std = 1 / math.sqrt(math.prod(shape[1:]))
    if name.endswith(_RESIDUAL_OUTPUTS):
        std /= math.sqrt(2 * cfg.num_layers)
    return x * std


def random_state_dict(
    cfg: DiTConfig, seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device = CPU
) -> dict[str, torch.Tensor]:
    """Random weights for every parameter of ScailDiT(cfg), in `dtype` on `device`, tensor by tensor."""
    with torch.device("meta"):
        shapes = {name: p.shape for name, p in ScailDiT(cfg).state_dict().items()}
    generator = torch.Generator(device).manual_seed(seed)
    return {name: random_tensor(name, shape, cfg, generator).to(dtype) for name, shape in shapes.items()}


def random_model(
    cfg: DiTConfig, seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device = CPU
) -> ScailDiT:
    """ScailDiT(cfg) with random weights; built on meta then materialised, so only one copy is held."""
    with torch.device("meta"):
        model = ScailDiT(cfg)
    model.load_state_dict(random_state_dict(cfg, seed, dtype, device), assign=True)
    return model.eval().requires_grad_(False)


def write_dit_file(root: Path, size: Literal["tiny", "full"], *, seed: int = 0, bf16_twin: bool = False) -> None:
    """Write the int8 DiT file (and, with bf16_twin, its bf16 twin with the same keys) under `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg = config_for(size)
    device = torch.device("cuda") if size == "full" and torch.cuda.is_available() else CPU
    log.info("building a random %s DiT on %s (%s)", size, device, cfg)
    start = time.perf_counter()
    model = random_model(cfg, seed, torch.bfloat16, device)
    model._config = cfg.as_wan_config()  # mmgp's saver stores it as the config metadata
    if bf16_twin:
        offload.save_model(model, str(root / BF16_FILE), verboseLevel=0)
        log.info("wrote %s", root / BF16_FILE)
    offload.save_model(model, str(root / DIT_FILE), do_quantize=True, quantize_exclude=NOT_QUANTIZED, verboseLevel=0)
    log.info("wrote %s in %.0f s", root / DIT_FILE, time.perf_counter() - start)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
