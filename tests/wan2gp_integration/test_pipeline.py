"""ScailPipeline end to end on the tiny generator files (CPU, float32), instrumented where it matters."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from common import files as common_files
from common.errors import InputError, JobCancelled, VolumeFileError
from wan2gp_integration import pipeline as pipeline_module
from wan2gp_integration.files import CLIP_FILE, DIT_FILE, UMT5_FILE, VAE_FILE
from wan2gp_integration.pipeline import ScailPipeline
from wan2gp_integration.presets import WAN_NEGATIVE_PROMPT
from wan2gp_integration.sampler import make_sampler

HEIGHT, WIDTH, FRAMES = 32, 64, 5  # the smallest canvas with a 2:1 aspect (catches swapped H and W)
SETTINGS = dict(negative_prompt="blurry", seed=7, steps=3, guidance_scale=5.0, shift=7.0, sampler="unipc")


@pytest.fixture(scope="session")
def pipe(generator_root) -> ScailPipeline:
    return ScailPipeline.from_model_root(generator_root, torch.device("cpu"))


@pytest.fixture(scope="module")
def inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    pose = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    return reference, pose


def run(pipe: ScailPipeline, inputs, **overrides) -> np.ndarray:
    reference, pose = overrides.pop("reference", inputs[0]), overrides.pop("pose", inputs[1])
    return pipe.generate(reference, pose, overrides.pop("prompt", "a dancer spins"), **{**SETTINGS, **overrides})


class Recorder(torch.nn.Module):
    """Wraps a module, keeping each call's inputs and output (or only weak references to the inputs)."""

    def __init__(self, inner: torch.nn.Module, weak: bool = False):
        super().__init__()
        self.inner, self.weak, self.calls = inner, weak, []

    def forward(self, *args):
        out = self.inner(*args)
        self.calls.append([weakref.ref(a) for a in args] if self.weak else (args, out))
        return out


@pytest.fixture
def dit_calls(pipe, monkeypatch) -> list:
    recorder = Recorder(pipe.dit)
    monkeypatch.setattr(pipe, "dit", recorder)
    return recorder.calls


@pytest.fixture(scope="module")
def first_output(pipe, inputs) -> np.ndarray:
    return run(pipe, inputs)


def test_output_is_uint8_frames_at_the_input_size(first_output):
    assert first_output.shape == (FRAMES, HEIGHT, WIDTH, 3) and first_output.dtype == np.uint8


def test_output_is_not_constant(first_output):
    assert first_output.std() > 1


def test_the_same_seed_gives_identical_frames(pipe, inputs, first_output):
    np.testing.assert_array_equal(run(pipe, inputs), first_output)


def test_a_different_seed_gives_different_frames(pipe, inputs, first_output):
    assert not np.array_equal(run(pipe, inputs, seed=8), first_output)


def test_the_euler_sampler_generates_too(pipe, inputs, first_output):
    out = run(pipe, inputs, sampler="euler")
    assert out.shape == first_output.shape and not np.array_equal(out, first_output)


@pytest.mark.parametrize(("height", "width"), [(48, 64), (32, 80)])
def test_sizes_not_multiple_of_32_are_refused(pipe, inputs, height, width):
    reference = np.zeros((height, width, 3), np.uint8)
    with pytest.raises(InputError, match="multiples of 32"):
        run(pipe, inputs, reference=reference, pose=np.zeros((FRAMES, height, width, 3), np.uint8))


@pytest.mark.parametrize("frames", [4, 6, 8])
def test_frame_counts_other_than_4n_plus_1_are_refused(pipe, inputs, frames):
    with pytest.raises(InputError, match="4n\\+1"):
        run(pipe, inputs, pose=np.zeros((frames, HEIGHT, WIDTH, 3), np.uint8))


def test_a_reference_of_another_size_than_the_pose_frames_is_refused(pipe, inputs):
    with pytest.raises(InputError, match="reference is 32x64"):
        run(pipe, inputs, reference=np.zeros((64, 32, 3), np.uint8))


def test_float_frames_are_refused(pipe, inputs):
    with pytest.raises(InputError, match="uint8"):
        run(pipe, inputs, pose=inputs[1].astype(np.float32))


def test_an_unknown_sampler_is_refused(pipe, inputs):
    with pytest.raises(InputError, match="sampler"):
        run(pipe, inputs, sampler="ddim")


@dataclass
class Trace:
    """What one instrumented generation handed to the text encoder, the VAE, the DiT and the sampler."""

    texts: list = field(default_factory=list)
    vae_inputs: list = field(default_factory=list)
    vae_latents: list = field(default_factory=list)
    dit_calls: list = field(default_factory=list)
    flows: list = field(default_factory=list)
    callbacks: list = field(default_factory=list)


TRACE_STEPS, TRACE_GUIDANCE = 4, 3.5


@pytest.fixture(scope="module")
def trace(pipe, inputs) -> Trace:
    """One generation (UniPC, 4 steps, CFG 3.5) with every stage recorded."""
    trace = Trace()
    encode_text, encode_video = pipe.text_encoder.encode, pipe.vae.encode
    real_make = pipeline_module.make_sampler

    def recording_encode(video):
        trace.vae_inputs.append(video)
        trace.vae_latents.append(encode_video(video))
        return trace.vae_latents[-1]

    def recording_make(*args):
        sampler = real_make(*args)
        step = sampler.step
        sampler.step = lambda i, flow, x: trace.flows.append(flow) or step(i, flow, x)
        return sampler

    recorder = Recorder(pipe.dit)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipe.text_encoder, "encode", lambda texts: trace.texts.append(texts) or encode_text(texts))
        patch.setattr(pipe.vae, "encode", recording_encode)
        patch.setattr(pipeline_module, "make_sampler", recording_make)
        patch.setattr(pipe, "dit", recorder)
        run(pipe, inputs, steps=TRACE_STEPS, guidance_scale=TRACE_GUIDANCE,
            callback=lambda step, total: trace.callbacks.append((step, total)))  # fmt: skip
    trace.dit_calls = recorder.calls
    return trace


def test_the_reference_is_encoded_first_as_one_frame(trace):
    assert trace.vae_inputs[0].shape == (1, 3, 1, HEIGHT, WIDTH)
    assert trace.vae_latents[0].shape == (1, 16, 1, HEIGHT // 8, WIDTH // 8)


def test_the_reference_gets_a_tiny_noise_before_encoding(trace, inputs):
    clean = torch.from_numpy(inputs[0]).permute(2, 0, 1).float() / 127.5 - 1
    difference = (trace.vae_inputs[0][0, :, 0] - clean).abs().max().item()
    assert 0 < difference < 0.1


def test_the_pose_video_is_encoded_at_half_resolution(trace):
    assert [tuple(v.shape) for v in trace.vae_inputs[1:]] == [(1, 3, FRAMES, HEIGHT // 2, WIDTH // 2)]


def test_the_reference_latent_is_in_slot_0_at_every_step(trace):
    assert len(trace.dit_calls) == TRACE_STEPS
    for (x, *_), _ in trace.dit_calls:
        torch.testing.assert_close(x[:, :16, :1], trace.vae_latents[0].expand(x.shape[0], -1, -1, -1, -1))


def test_the_mask_marks_only_the_reference_frame(trace):
    for (x, *_), _ in trace.dit_calls:
        mask = x[:, 16:]
        assert mask.shape[1] == 4 and torch.all(mask[:, :, 0] == 1) and torch.all(mask[:, :, 1:] == 0)


def test_dit_inputs_have_the_scail_layout(trace):
    (x, pose, t, context, clip_tokens), out = trace.dit_calls[0]
    latent_frames = (FRAMES - 1) // 4 + 1
    assert x.shape == (2, 20, 1 + latent_frames, HEIGHT // 8, WIDTH // 8)
    assert pose.shape == (2, 20, latent_frames, HEIGHT // 16, WIDTH // 16)
    assert t.shape == (2,) and context.shape[:2] == (2, 512) and clip_tokens.shape[:2] == (2, 257)
    assert out.shape == x[:, :16].shape


def test_pose_conditioning_is_the_pose_latents_plus_4_ones_channels(trace):
    (_, pose, *_), _ = trace.dit_calls[0]
    torch.testing.assert_close(pose[:1, :16], trace.vae_latents[1])
    assert torch.all(pose[:, 16:] == 1)


def test_timesteps_follow_the_sampler_schedule(trace):
    expected = make_sampler("unipc", TRACE_STEPS, SETTINGS["shift"]).timesteps
    assert [call[0][2][0].item() for call in trace.dit_calls] == pytest.approx(expected)


def test_the_texts_are_the_prompt_then_the_negative_prompt(trace):
    assert trace.texts == [["a dancer spins", "blurry"]]


def test_cfg_branches_differ_only_in_the_text_context(trace):
    (x, pose, t, context, clip_tokens), _ = trace.dit_calls[0]
    for both in (x, pose, t, clip_tokens):
        torch.testing.assert_close(both[0], both[1])
    assert not torch.equal(context[0], context[1])


def test_the_batch_of_2_forward_equals_two_batch_1_forwards(pipe, trace):
    args, batched = trace.dit_calls[1]
    with torch.inference_mode():
        singles = torch.cat([pipe.dit(*(a[i : i + 1] for a in args)) for i in range(2)])
    # The int8 Linears compute in bfloat16 even on the CPU: rounding differs with the GEMM shapes.
    tolerance = 3e-3 * singles.abs().max().item()
    torch.testing.assert_close(batched, singles, rtol=0, atol=tolerance)
    assert (singles[0] - singles[1]).abs().max() > 10 * tolerance  # the branches really differ


def test_guidance_combines_the_branches_as_uncond_plus_scale_times_difference(trace):
    for (_, out), flow in zip(trace.dit_calls, trace.flows, strict=True):
        torch.testing.assert_close(flow, out[1:] + TRACE_GUIDANCE * (out[:1] - out[1:]))


def test_the_callback_sees_every_step(trace):
    assert trace.callbacks == [(step, TRACE_STEPS) for step in range(1, TRACE_STEPS + 1)]


@pytest.mark.parametrize("scale", [1.0, 0.0])
def test_guidance_up_to_1_runs_the_prompt_branch_alone(pipe, inputs, dit_calls, scale):
    run(pipe, inputs, steps=2, guidance_scale=scale)
    assert [call[0][0].shape[0] for call in dit_calls] == [1, 1]


def test_a_missing_negative_prompt_means_wans_and_no_cfg_means_no_negative(pipe, inputs, monkeypatch):
    texts = []
    real_encode = pipe.text_encoder.encode
    monkeypatch.setattr(pipe.text_encoder, "encode", lambda prompts: texts.append(prompts) or real_encode(prompts))
    run(pipe, inputs, steps=1, prompt="p", negative_prompt=None)
    run(pipe, inputs, steps=1, prompt="p", negative_prompt="")
    run(pipe, inputs, steps=1, prompt="p", guidance_scale=1.0)
    assert texts == [["p", WAN_NEGATIVE_PROMPT], ["p", ""], ["p"]]


def test_cancelling_from_the_callback_stops_and_propagates(pipe, inputs, dit_calls):
    def cancel_at_2(step, total):
        if step == 2:
            raise JobCancelled()

    with pytest.raises(JobCancelled):
        run(pipe, inputs, steps=5, callback=cancel_at_2)
    assert len(dit_calls) == 2


def test_a_cancelled_job_frees_its_tensors(pipe, inputs, monkeypatch):
    recorder = Recorder(pipe.dit, weak=True)
    monkeypatch.setattr(pipe, "dit", recorder)

    def cancel(step, total):
        raise JobCancelled()

    with pytest.raises(JobCancelled) as info:
        run(pipe, inputs, steps=3, callback=cancel)
    gc.collect()
    assert info.value.__traceback__ is not None  # the error still carries its traceback...
    assert all(ref() is None for ref in recorder.calls[0])  # ...but no longer the job's latents and conditions


def test_the_pipeline_works_again_after_a_cancelled_job(pipe, inputs, first_output):
    with pytest.raises(JobCancelled):
        run(pipe, inputs, callback=lambda step, total: (_ for _ in ()).throw(JobCancelled()))
    np.testing.assert_array_equal(run(pipe, inputs), first_output)


def test_stage_timings_are_recorded(pipe, inputs):
    run(pipe, inputs, steps=1)
    assert set(pipe.last_timings) == {"text_encode", "clip_encode", "vae_encode", "denoise", "vae_decode"}


def test_a_missing_file_fails_before_any_weights_load(broken_root, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("weights were loaded before the files were checked")

    monkeypatch.setattr(pipeline_module, "load_dit", no_loading)
    (broken_root / VAE_FILE).unlink()
    with pytest.raises(VolumeFileError, match="Wan2.1_VAE.pth: missing"):
        ScailPipeline.from_model_root(broken_root, torch.device("cpu"))


def test_a_cpu_pipeline_is_float32_and_resident_without_mmgp(pipe):
    assert pipe.dtype == torch.float32 and pipe.device == torch.device("cpu")
    assert pipe._offload_handle is None
    assert all(p.device.type == "cpu" for p in pipe.vae.model.parameters())


def test_a_tiny_generation_takes_about_a_second_on_cpu(pipe, inputs):
    started = time.perf_counter()
    run(pipe, inputs, steps=4)
    assert time.perf_counter() - started < 5  # ~0.3 s on one idle core


@pytest.mark.gpu
@pytest.mark.parametrize("profile", [1, 4])
def test_cuda_generation_under_mmgp_is_reproducible_and_keeps_the_default_device(generator_root, inputs, profile):
    cuda = ScailPipeline.from_model_root(generator_root, torch.device("cuda"), profile=profile)
    assert torch.get_default_device() == torch.device("cpu")
    first = run(cuda, inputs)
    assert first.shape == (FRAMES, HEIGHT, WIDTH, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(run(cuda, inputs), first)
    cuda.release_job_memory()


def test_the_denoising_loop_records_no_autograd_graph(generator_root, monkeypatch):
    pipe = ScailPipeline.from_model_root(generator_root, torch.device("cpu"))
    grad_modes = []
    forward = pipe.dit.forward

    def spy(*args, **kwargs):
        grad_modes.append(torch.is_grad_enabled())
        return forward(*args, **kwargs)

    monkeypatch.setattr(pipe, "dit", spy)
    reference = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pose = np.random.default_rng(1).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    pipe.generate(reference, pose, "a dancer", negative_prompt=None, seed=0, steps=2, guidance_scale=5.0, shift=7.0,
                  sampler="unipc")  # fmt: skip
    assert grad_modes == [False, False]


# Runs in a fresh interpreter: whether the compiler is imported depends on what ran before in this one.
_IMPORTS_COMPILER = """
import sys, torch
from wan2gp_integration.pipeline import _start_device
_start_device(torch.device("cpu"), "sdpa", compiled=sys.argv[1] == "1")
print("torch._inductor.compile_fx" in sys.modules)
"""


@pytest.mark.parametrize(("compiled", "imported"), [(True, "True"), (False, "False")])
def test_the_device_thread_imports_the_compiler_only_when_the_blocks_will_be_compiled(compiled, imported):
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _IMPORTS_COMPILER, "1" if compiled else "0"], cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == imported


def test_the_generator_files_are_read_one_at_a_time_dit_first(generator_root, monkeypatch):
    reads, busy, lock = [], [0, 0], threading.Lock()  # busy: reads now, most at once
    read_into = common_files._read_into

    def recording_read_into(f, path, buffer, read_order):
        with lock:
            reads.append(Path(path).name)
            busy[0] += 1
            busy[1] = max(busy)
        try:
            time.sleep(0.05)  # long enough for side-by-side reads to overlap
            return read_into(f, path, buffer, read_order)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(common_files, "_read_into", recording_read_into)
    ScailPipeline.from_model_root(generator_root, torch.device("cpu"))
    assert reads == [Path(name).name for name in (DIT_FILE, UMT5_FILE, CLIP_FILE, VAE_FILE)]
    assert busy[1] == 1


@pytest.mark.timeout(60)  # a turn never passed on would hang the other loads
@pytest.mark.parametrize("damaged", [DIT_FILE, UMT5_FILE])
def test_a_corrupt_file_fails_the_load_without_holding_up_the_files_after_it(broken_root, damaged):
    (broken_root / damaged).write_bytes(b"not a weight file")
    with pytest.raises(VolumeFileError, match=damaged):
        ScailPipeline.from_model_root(broken_root, torch.device("cpu"))


@pytest.mark.timeout(60)
def test_the_checks_run_while_the_dit_is_read_and_a_bad_file_stops_that_read(broken_root, monkeypatch):
    (broken_root / VAE_FILE).unlink()
    dit_reading, dit_stopped = threading.Event(), threading.Event()
    read_into, check = common_files._read_into, pipeline_module.require_generator_files

    def endless_dit_read(f, path, buffer, read_order):
        if Path(path).name != Path(DIT_FILE).name:
            return read_into(f, path, buffer, read_order)
        dit_reading.set()
        try:
            while True:  # chunk after chunk, far slower than the checks
                read_order.raise_if_cancelled()
                time.sleep(0.01)
        finally:
            dit_stopped.set()

    def checks_once_the_dit_is_being_read(root):
        assert dit_reading.wait(10), "the checks ran before the DiT's read began"
        return check(root)

    monkeypatch.setattr(common_files, "_read_into", endless_dit_read)
    monkeypatch.setattr(pipeline_module, "require_generator_files", checks_once_the_dit_is_being_read)
    with pytest.raises(VolumeFileError, match=VAE_FILE):
        ScailPipeline.from_model_root(broken_root, torch.device("cpu"))
    assert dit_stopped.wait(10)
