"""Speed options of the DiT against the bf16 reference path, on one CFG batch at 896x512x81.

The reference is the volume's DiT with its int8 weights expanded to bf16 (so every variant holds the
same weights), eager PyTorch, cuDNN attention. Each option reports seconds per CFG forward (batch 2)
and its relative error against the reference's flow prediction; an option over 2% stays off by default.
"""

from __future__ import annotations

import logging

import torch

from bench.measure import rel_error, reset_vram_peak, time_cuda, vram_peak_gib

log = logging.getLogger(__name__)

LATENT_FRAMES, LATENT_H, LATENT_W = 21, 64, 112  # 81 frames at 512x896


def dit_inputs(cfg, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator("cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=generator)

    return {
        "x": randn(batch, 20, LATENT_FRAMES + 1, LATENT_H, LATENT_W),
        "pose": randn(batch, 20, LATENT_FRAMES, LATENT_H // 2, LATENT_W // 2),
        "t": torch.full((batch,), 700.0, device="cuda", dtype=torch.float64),
        "context": randn(batch, 512, cfg.text_dim),
        "clip_tokens": randn(batch, 257, cfg.clip_dim),
    }


def measure(name: str, model, inputs, reference: torch.Tensor | None, repeat: int = 2) -> dict:
    with torch.inference_mode():
        reset_vram_peak()
        timing = time_cuda(lambda: model(**inputs), warmup=1, repeat=repeat)
        out = model(**inputs)
    row = {"variant": name, "cfg_forward_s": timing.median, "spread_s": timing.spread, "vram_peak_gib": vram_peak_gib()}
    row["rel_err"] = 0.0 if reference is None else rel_error(out, reference)
    log.info("%s", row)
    return row, out


def run(args) -> dict:
    from bench.run import dense_dit_state
    from wan2gp_integration import attention
    from wan2gp_integration.dit import DiTConfig, ScailDiT
    from wan2gp_integration.files import DIT_FILE
    from wan2gp_integration.fp8 import convert_linears_to_fp8
    from wan2gp_integration.loading import load_dit

    rows = []
    attention.set_backend("sdpa")
    state = dense_dit_state(args.volume)
    cfg = DiTConfig.from_state_dict(state)
    with torch.device("meta"):
        dense = ScailDiT(cfg)
    dense.load_state_dict(state, assign=True)
    dense.to_dtype(torch.bfloat16).eval().requires_grad_(False)
    del state
    inputs = dit_inputs(cfg)
    row, reference = measure("bf16 eager (reference)", dense, inputs, None)
    rows.append(row)
    try:
        for block in dense.blocks:
            block.compile()
        row, _ = measure("bf16 + torch.compile(blocks)", dense, inputs, reference)
        rows.append(row)
    except Exception as exc:  # noqa: BLE001 - a lever that fails is recorded, not fatal
        rows.append({"variant": "bf16 + torch.compile(blocks)", "error": repr(exc)[:300]})
    del dense
    torch.cuda.empty_cache()

    model = load_dit(args.volume / DIT_FILE, torch.device("cuda"), torch.bfloat16).eval()
    row, _ = measure("int8 quanto, eager", model, inputs, reference)
    rows.append(row)
    for block in model.blocks:  # what mmgp's compile=["transformer"] does to each block
        block.compile()
    row, _ = measure("int8 quanto + torch.compile(blocks) (default)", model, inputs, reference)
    rows.append(row)
    model = load_dit(args.volume / DIT_FILE, torch.device("cuda"), torch.bfloat16).eval()
    convert_linears_to_fp8(model)
    torch.cuda.empty_cache()
    row, _ = measure("fp8 e4m3 linears (eager)", model, inputs, reference)
    rows.append(row)
    return {"rows": rows}
