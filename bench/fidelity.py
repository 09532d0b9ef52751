"""Speed options of the DiT against the bf16 reference path, on one CFG batch at 896x512x81.

The reference is the volume's DiT with its int8 weights expanded to bf16 (so every variant holds the
same weights), eager PyTorch, cuDNN attention. Each option reports seconds per CFG forward (batch 2)
and its relative error against the reference's flow prediction; an option over 2% stays off by default.
"""

from __future__ import annotations

import logging

import torch
import torch._inductor.config

from bench.measure import rel_error, reset_vram_peak, time_cuda, vram_peak_gib

log = logging.getLogger(__name__)

LATENT_FRAMES, LATENT_H, LATENT_W = 21, 64, 112  # 81 frames at 512x896


def dit_inputs(cfg, batch: int = 2, seed: int = 0, timestep: float = 700.0) -> dict[str, torch.Tensor]:
    generator = torch.Generator("cuda").manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=generator)

    return {
        "x": randn(batch, 20, LATENT_FRAMES + 1, LATENT_H, LATENT_W),
        "pose": randn(batch, 20, LATENT_FRAMES, LATENT_H // 2, LATENT_W // 2),
        "t": torch.full((batch,), timestep, device="cuda", dtype=torch.float64),
        "context": randn(batch, 512, cfg.text_dim),
        "clip_tokens": randn(batch, 257, cfg.clip_dim),
    }


def measure(name: str, model, inputs, reference: torch.Tensor | None, repeat: int = 1) -> tuple[dict, torch.Tensor]:
    """One warm-up (compilation) then `repeat` timed CFG forwards; the error is that of the last output."""
    outputs = []
    with torch.inference_mode():
        reset_vram_peak()
        timing = time_cuda(lambda: outputs.append(model(**inputs)), warmup=1, repeat=repeat)
    out = outputs[-1]
    del outputs[:-1]
    row = {"variant": name, "cfg_forward_s": timing.median, "spread_s": timing.spread, "vram_peak_gib": vram_peak_gib()}
    row["rel_err"] = 0.0 if reference is None else rel_error(out, reference)
    log.info("%s", row)
    return row, out


# name -> (label, GEMM mode of the int8 Linears, attention backend, inductor rounds to bf16 where eager
# does) of the compiled int8 variants
COMPILED_VARIANTS = {
    "int8-compile": ("int8 quanto + torch.compile(blocks)", "bf16", "sdpa", False),
    "fp8-linear": ("fp8 e4m3 linears + compile", "fp8", "sdpa", False),
    "fp8-attention": ("int8 + cuDNN fp8 attention + compile", "bf16", "fp8", False),
    "fast": ("fp8 linears + cuDNN fp8 attention + compile", "fp8", "fp8", False),
    "int8-compile-emulate": ("int8 + compile, eager's bf16 roundings", "bf16", "sdpa", True),
    "fp8-attention-emulate": ("int8 + cuDNN fp8 attention + compile, eager's bf16 roundings", "bf16", "fp8", True),
    "fast-emulate": ("fp8 GEMMs + fp8 attention, eager's bf16 roundings", "fp8", "fp8", True),
    "int8-gemm-emulate": ("int8 GEMMs + compile, eager's bf16 roundings", "int8", "sdpa", True),
    "int8-gemm-fp8-attention-emulate": ("int8 GEMMs + cuDNN fp8 attention, eager's bf16 roundings", "int8", "fp8", True),
}
VARIANTS = ("bf16-compile", "int8-eager", *COMPILED_VARIANTS)


def run(args) -> dict:
    from bench.run import dense_dit_state
    from wan2gp_integration import attention
    from wan2gp_integration.dit import DiTConfig, ScailDiT
    from wan2gp_integration.files import DIT_FILE
    from wan2gp_integration.gemm import use_gemm
    from wan2gp_integration.loading import load_dit

    chosen = args.variants.split(",") if args.variants else list(VARIANTS)
    rows = []
    attention.set_backend("sdpa")
    state = dense_dit_state(args.volume)
    cfg = DiTConfig.from_state_dict(state)
    with torch.device("meta"):
        dense = ScailDiT(cfg)
    dense.load_state_dict(state, assign=True)
    dense.to_dtype(torch.bfloat16).eval().requires_grad_(False)
    del state
    inputs = dit_inputs(cfg, seed=args.seed, timestep=args.timestep)
    row, reference = measure("bf16 eager (reference)", dense, inputs, None, repeat=2)
    rows.append(row)
    if "bf16-compile" in chosen:
        for block in dense.blocks:
            block.compile()
        rows.append(measure("bf16 + torch.compile(blocks)", dense, inputs, reference)[0])
    del dense
    torch.cuda.empty_cache()

    model = load_dit(args.volume / DIT_FILE, torch.device("cuda"), torch.bfloat16).eval()
    if "int8-eager" in chosen:
        rows.append(measure("int8 quanto, eager", model, inputs, reference)[0])
    for block in model.blocks:  # what mmgp's compile=["transformer"] does to each block
        block.compile()
    for key in (key for key in COMPILED_VARIANTS if key in chosen):
        name, gemm, backend, emulate = COMPILED_VARIANTS[key]
        torch._dynamo.reset()  # each variant compiles afresh
        torch._inductor.config.emulate_precision_casts = emulate
        use_gemm(model, gemm)
        attention.set_backend(backend, torch.device("cuda"))
        try:
            rows.append(measure(name, model, inputs, reference)[0])
        except Exception as exc:  # noqa: BLE001 - a lever that fails is recorded, not fatal
            rows.append({"variant": name, "error": repr(exc)[:300]})
            log.warning("%s failed: %r", name, exc)
    attention.set_backend("sdpa")
    return {"seed": args.seed, "timestep": args.timestep, "rows": rows}
