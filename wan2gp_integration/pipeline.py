"""ScailPipeline: reference image + rendered pose frames + prompt -> video frames (SCAIL-Preview on Wan2.1).

One generation, in Wan's normalised latent space (16 channels, 4x8x8 compression):
  reference -> CLIP tokens, and (with a tiny seeded noise) VAE latent `ref` [16, 1, h, w];
  pose video -> bilinear x0.5 -> VAE latents [16, T_lat, h/2, w/2] + 4 ones channels;
  prompt and negative prompt -> umT5 states; both CFG branches run as one batch of 2;
  latents [ref ; noise] [16, 1 + T_lat, h, w] with a 4-channel mask (1 on the reference frame) are
  denoised with `ref` written back into frame 0 before every step and at the end;
  the reference frame is dropped and the rest decoded to (T, H, W, 3) uint8.
"""

from __future__ import annotations

import gc
import importlib
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import InputError
from common.read_order import ReadOrder
from wan2gp_integration.attention import resolve_backend, set_backend
from wan2gp_integration.clip import ClipVisionEncoder
from wan2gp_integration.dit import ScailDiT
from wan2gp_integration.files import CLIP_FILE, DIT_FILE, UMT5_DIR, UMT5_FILE, VAE_FILE, require_generator_files
from wan2gp_integration.gemm import resolve_gemm, use_gemm
from wan2gp_integration.loading import load_dit
from wan2gp_integration.offload import pins_transformer, resolve_profile, setup_offload
from wan2gp_integration.presets import WAN_NEGATIVE_PROMPT
from wan2gp_integration.sampler import FlowSampler, make_sampler
from wan2gp_integration.text_encoder import TextEncoder
from wan2gp_integration.vae import WanVAE

log = logging.getLogger(__name__)

SIZE_MULTIPLE = 32  # 8 (VAE) x 2 (patch) x 2 (pose tokens are pooled 2x2 further)
TEMPORAL_STRIDE = 4
MASK_CHANNELS = 4
# Wan2GP perturbs the reference before encoding it: noise of std exp(N(-5, 0.5)), about 0.007.
REF_NOISE_LOG_MEAN, REF_NOISE_LOG_STD = -5.0, 0.5


@dataclass
class _Conditions:
    """Everything the DiT sees besides the latents; the same at every step."""

    ref: torch.Tensor  # [1, 16, 1, h, w] float32, the clean reference latent
    mask: torch.Tensor  # [B, 4, 1 + T_lat, h, w] in the model dtype
    pose: torch.Tensor  # [B, 20, T_lat, h/2, w/2] in the model dtype
    context: torch.Tensor  # [B, 512, text_dim]: row 0 the prompt, row 1 the negative prompt
    clip_tokens: torch.Tensor  # [B, 257, clip_dim]


class ScailPipeline:
    """Loads the generator once; `generate` runs one job on it."""

    def __init__(
        self,
        dit: ScailDiT,
        text_encoder: TextEncoder,
        clip: ClipVisionEncoder,
        vae: WanVAE,
        device: torch.device,
        dtype: torch.dtype,
        offload_handle: object | None = None,
        gemm: str = "bf16",
    ):
        self.dit = dit
        self.text_encoder = text_encoder
        self.clip = clip
        self.vae = vae
        self.device = device
        self.dtype = dtype
        self._offload_handle = offload_handle  # mmgp's hooks live as long as this reference
        self.gemm = gemm  # how the DiT blocks' int8 Linears compute (wan2gp_integration.gemm.GEMM_MODES)
        self.last_timings: dict[str, float] = {}

    @classmethod
    def from_model_root(
        cls,
        root: Path,
        device: torch.device,
        *,
        profile: int | None = None,
        attention: str = "auto",
        compile: bool | None = None,
        pin_memory: bool | None = None,
        gemm: str = "auto",
    ) -> ScailPipeline:
        """Check every generator file under `root` and load them. CUDA: bfloat16 under mmgp `profile`
        (chosen from VRAM and RAM when None), the DiT's blocks compiled unless `compile` is False;
        `pin_memory` overrides the profile's pinning; `gemm` says how the blocks' int8 Linears compute
        (wan2gp_integration.gemm: auto, bf16, int8, fp8). CPU: float32, resident, eager, bf16-mode GEMMs."""
        root, device = Path(root), torch.device(device)
        started = time.perf_counter()
        resolve_backend(attention)  # an unknown backend fails now, not after the loads
        offloaded = device.type == "cuda"
        compiled = offloaded and compile is not False
        gemm_mode = resolve_gemm(gemm, device)
        dtype = torch.bfloat16 if offloaded else torch.float32
        # Under mmgp the weights start in RAM and mmgp moves them; the wrappers still send inputs to `device`.
        load_device = torch.device("cpu") if offloaded else device
        profile_no = resolve_profile(profile, device) if offloaded else None
        # Page-lock the DiT's buffer in place when mmgp would pin the DiT: its own pinning cost 16 s.
        pinned = offloaded and pins_transformer(profile_no, pin_memory)
        dit_file, umt5_file, clip_file, vae_file = (root / name for name in (DIT_FILE, UMT5_FILE, CLIP_FILE, VAE_FILE))
        # A cold start is mostly these reads. They take turns, one stream at the disk's rate, while the
        # threads whose files are in build their models. The DiT goes first, so that its build (the
        # longest) overlaps the encoders' reads and the small VAE's build is all that follows the last byte.
        reads = ReadOrder([dit_file, umt5_file, clip_file, vae_file])
        pool = ThreadPoolExecutor(max_workers=5, thread_name_prefix="load")
        try:
            # CUDA's context, library handles and the attention backend's probe get ready meanwhile.
            backend = pool.submit(_start_device, device, attention, compiled)
            dit = pool.submit(reads.run, dit_file, load_dit, dit_file, load_device, dtype, pinned=pinned, reads=reads)
            text_encoder = pool.submit(
                reads.run, umt5_file, TextEncoder.from_files, umt5_file, root / UMT5_DIR, load_device, dtype, reads
            )
            clip = pool.submit(reads.run, clip_file, ClipVisionEncoder.from_file, clip_file, load_device, dtype, reads)
            vae = pool.submit(reads.run, vae_file, WanVAE.from_file, vae_file, load_device, dtype, reads)
            # Every file's check (about a second) runs while the DiT is read, and names a bad file long
            # before the 28 GB are in.
            require_generator_files(root)
            log.info("generator files checked in %.1f s", time.perf_counter() - started)
            dit, text_encoder, clip, vae = dit.result(), text_encoder.result(), clip.result(), vae.result()
            backend.result()
        except BaseException:
            # Fail now: the loads stop at their next chunk or turn; the device start ends on its own.
            reads.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        if gemm_mode != "bf16":
            use_gemm(dit, gemm_mode)
        handle = None
        if offloaded:
            text_encoder = TextEncoder(text_encoder.model, text_encoder.tokenizer, device)
            clip = ClipVisionEncoder(clip.model, clip.image_size, device, dtype)
            vae = WanVAE(vae.model, device, dtype)
            vae.model._offload_hooks = ["encode", "decode"]  # mmgp loads the VAE on these, not on forward
            modules = {"transformer": dit, "text_encoder": text_encoder.model, "clip": clip.model, "vae": vae.model}
            handle = setup_offload(modules, profile_no, compile=compiled, pin_memory=pin_memory)
        log.info("generator loaded from %s on %s (%s) in %.1f s", root, device, dtype, time.perf_counter() - started)
        return cls(dit, text_encoder, clip, vae, device, dtype, handle, gemm_mode)

    def generate(
        self,
        reference: np.ndarray,
        pose_frames: np.ndarray,
        prompt: str,
        *,
        negative_prompt: str | None,
        seed: int,
        steps: int,
        guidance_scale: float,
        shift: float,
        sampler: str,
        callback: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """reference (H,W,3) and pose_frames (T,H,W,3) uint8 RGB at the output size (H, W multiples of 32,
        T = 4n+1) -> (T,H,W,3) uint8. negative_prompt None means Wan's default. guidance_scale <= 1 runs
        the prompt branch only. callback(step, total) runs after every step and may raise JobCancelled."""
        check_inputs(reference, pose_frames, guidance_scale)
        flow_sampler = make_sampler(sampler, steps, shift)
        texts = [prompt, WAN_NEGATIVE_PROMPT if negative_prompt is None else negative_prompt]
        texts = texts if guidance_scale > 1 else texts[:1]
        self.last_timings = {}
        try:
            return self._generate(reference, pose_frames, texts, seed, flow_sampler, guidance_scale, callback)
        except BaseException as exc:
            # The traceback keeps the frames of _generate and its helpers alive, and with them every
            # latent and activation of this job: drop their locals before the error travels up.
            traceback.clear_frames(exc.__traceback__)
            self.release_job_memory()
            raise

    def release_job_memory(self) -> None:
        """Return cached allocator blocks after a job (and after a failed one)."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _generate(
        self,
        reference: np.ndarray,
        pose_frames: np.ndarray,
        texts: list[str],
        seed: int,
        flow_sampler: FlowSampler,
        guidance_scale: float,
        callback: Callable[[int, int], None] | None,
    ) -> np.ndarray:
        # Seeded on the CPU so that a seed gives the same noise on every device.
        generator = torch.Generator("cpu").manual_seed(seed)
        frames, height, width = pose_frames.shape[:3]
        latent_shape = (1, 16, (frames - 1) // TEMPORAL_STRIDE + 1, height // 8, width // 8)
        noise = torch.randn(latent_shape, generator=generator)
        ref_sigma = torch.exp(REF_NOISE_LOG_MEAN + REF_NOISE_LOG_STD * torch.randn((), generator=generator))
        ref_noise = ref_sigma * torch.randn((1, 3, 1, height, width), generator=generator)

        cond = self._conditions(reference, pose_frames, texts, ref_noise)
        latents = torch.cat([cond.ref, noise.to(self.device)], dim=2)
        with self._stage("denoise"):
            latents = self._denoise(latents, cond, flow_sampler, guidance_scale, callback)
        with self._stage("vae_decode"):
            video = self.vae.decode(latents[:, :, 1:].to(self.dtype))
            frames_out = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            return frames_out.permute(1, 2, 3, 0).cpu().numpy()

    def _conditions(
        self, reference: np.ndarray, pose_frames: np.ndarray, texts: list[str], ref_noise: torch.Tensor
    ) -> _Conditions:
        """The conditions for `texts` (prompt, and negative prompt when CFG runs); ref_noise [1,3,1,H,W] on the CPU."""
        batch = len(texts)
        with self._stage("text_encode"):
            context = self.text_encoder.encode(texts).to(self.dtype)
        ref_image = _to_unit_range(torch.from_numpy(reference).to(self.device)).permute(2, 0, 1)[None]  # [1,3,H,W]
        with self._stage("clip_encode"):
            clip_tokens = self.clip.encode(ref_image.to(self.dtype)).to(self.dtype)
        with self._stage("vae_encode"):
            ref_video = ref_image[:, :, None] + ref_noise.to(self.device)  # [1,3,1,H,W]
            ref = self.vae.encode(ref_video.to(self.dtype)).float()
            pose = _to_unit_range(torch.from_numpy(pose_frames).to(self.device)).permute(0, 3, 1, 2)  # [T,3,H,W]
            pose = F.interpolate(pose, scale_factor=0.5, mode="bilinear", align_corners=False)
            pose = self.vae.encode(pose.permute(1, 0, 2, 3)[None].to(self.dtype))  # [1,16,T_lat,H/16,W/16]
        ones = torch.ones_like(pose[:, :MASK_CHANNELS])
        pose = torch.cat([pose, ones], dim=1).to(self.dtype)
        mask = torch.zeros((1, MASK_CHANNELS, 1 + pose.shape[2], *ref.shape[3:]), device=self.device, dtype=self.dtype)
        mask[:, :, 0] = 1
        return _Conditions(
            ref=ref,
            mask=mask.expand(batch, -1, -1, -1, -1),
            pose=pose.expand(batch, -1, -1, -1, -1),
            context=context,
            clip_tokens=clip_tokens.expand(batch, -1, -1),
        )

    @torch.no_grad()  # the encoders run under inference_mode; the DiT's loop records no autograd graph either
    def _denoise(
        self,
        latents: torch.Tensor,
        cond: _Conditions,
        flow_sampler: FlowSampler,
        guidance_scale: float,
        callback: Callable[[int, int], None] | None,
    ) -> torch.Tensor:
        """latents [1,16,1+T_lat,h,w] float32 from pure noise to clean; no host sync inside the loop."""
        batch = cond.context.shape[0]
        # float64 t: mmgp casts float32 inputs of the model to its dtype, which would round t in bf16.
        timesteps = torch.tensor(flow_sampler.timesteps, dtype=torch.float64, device=self.device)
        for i in range(flow_sampler.steps):
            latents[:, :, :1] = cond.ref
            x = torch.cat([latents.to(self.dtype).expand(batch, -1, -1, -1, -1), cond.mask], dim=1)
            flow = self.dit(x, cond.pose, timesteps[i].expand(batch), cond.context, cond.clip_tokens).float()
            if batch == 2:
                flow = flow[1:] + guidance_scale * (flow[:1] - flow[1:])
            latents = flow_sampler.step(i, flow, latents)
            if callback is not None:
                callback(i + 1, flow_sampler.steps)
        latents[:, :, :1] = cond.ref
        return latents

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Time a stage (synchronising CUDA at its end, never inside the step loop) into last_timings."""
        started = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - started
        self.last_timings[name] = self.last_timings.get(name, 0.0) + elapsed
        log.info("%s: %.2f s", name, elapsed)


def _to_unit_range(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


def _start_device(device: torch.device, attention: str, compiled: bool) -> str:
    """Create the CUDA context and cuBLAS handle (seconds on a cold GPU), import the compiler when the
    blocks will be compiled, then choose the attention backend."""
    started = time.perf_counter()
    if device.type == "cuda":
        probe = torch.ones(16, 16, device=device)
        (probe @ probe).sum().item()
    context_ready = time.perf_counter()
    if compiled:
        # mmgp's setup would otherwise import dynamo and inductor after the reads: ~4 s of a cold start
        # on the H100 host (docs/PERFORMANCE.md), here hidden behind the reads.
        importlib.import_module("torch._dynamo")
        importlib.import_module("torch._inductor.compile_fx")
    compiler_ready = time.perf_counter()
    backend = set_backend(attention, device)
    log.info("device ready: context %.1f s, compiler imports %.1f s, attention backend %.1f s",
             context_ready - started, compiler_ready - context_ready, time.perf_counter() - compiler_ready)  # fmt: skip
    return backend


def check_inputs(reference: np.ndarray, pose_frames: np.ndarray, guidance_scale: float) -> None:
    """InputError naming what is wrong with the sizes, frame count or types."""
    if not isinstance(reference, np.ndarray) or reference.dtype != np.uint8 or reference.ndim != 3 or reference.shape[2] != 3:
        raise InputError(f"reference must be an (H, W, 3) uint8 image, got {_describe(reference)}")
    if not isinstance(pose_frames, np.ndarray) or pose_frames.dtype != np.uint8 or pose_frames.ndim != 4 or pose_frames.shape[3] != 3:
        raise InputError(f"pose frames must be a (T, H, W, 3) uint8 video, got {_describe(pose_frames)}")
    frames, height, width = pose_frames.shape[:3]
    if reference.shape[:2] != (height, width):
        raise InputError(f"reference is {reference.shape[1]}x{reference.shape[0]} but the pose frames are {width}x{height}")
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or not height or not width:
        raise InputError(f"width and height must be positive multiples of {SIZE_MULTIPLE}, got {width}x{height}")
    if frames % TEMPORAL_STRIDE != 1:
        raise InputError(f"num_frames must be 4n+1 (5, 9, ..., 81), got {frames}")
    if not guidance_scale >= 0:
        raise InputError(f"guidance_scale must be at least 0, got {guidance_scale}")


def _describe(array: object) -> str:
    if isinstance(array, np.ndarray):
        return f"shape {array.shape} {array.dtype}"
    return type(array).__name__
