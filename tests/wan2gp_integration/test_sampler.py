"""Flow-matching schedules and samplers, checked against diffusers and against an ODE with a known solution."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

from common.errors import InputError
from wan2gp_integration.sampler import (
    EulerSampler,
    UniPCSampler,
    euler_sigmas,
    make_sampler,
    shift_sigmas,
    unipc_sigmas,
)


def _diffusers_unipc(steps: int, shift: float) -> UniPCMultistepScheduler:
    """diffusers' UniPC configured as Wan's FlowUniPCMultistepScheduler (Wan's unshifted sigmas passed in)."""
    scheduler = UniPCMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(sigmas=np.linspace(0.999, 0.0, steps + 1)[:-1])
    return scheduler


def _toy_flow(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A nonlinear, sigma-dependent stand-in for the DiT (the same for both samplers under comparison)."""
    mix = torch.tensor([[0.2, -0.1, 0.05], [0.1, 0.3, 0.0], [-0.2, 0.1, 0.25]], dtype=x.dtype)
    return torch.einsum("ij,bj...->bi...", mix, x) * (1.0 + sigma) + torch.sin(x)


def test_shift_maps_the_ends_to_themselves_and_pushes_the_middle_up():
    sigmas = np.array([0.0, 0.5, 1.0])
    shifted = shift_sigmas(sigmas, 7.0)
    assert shifted[0] == 0.0 and shifted[2] == pytest.approx(1.0)
    assert shifted[1] == pytest.approx(7 * 0.5 / (1 + 6 * 0.5))


def test_unipc_schedule_is_wans_shifted_linspace_ending_at_zero():
    sigmas = unipc_sigmas(30, 7.0)
    assert len(sigmas) == 31 and sigmas[-1] == 0.0
    assert sigmas[0] == pytest.approx(7 * 0.999 / (1 + 6 * 0.999))
    assert all(a > b for a, b in zip(sigmas, sigmas[1:], strict=False))


@pytest.mark.parametrize("steps", [1, 2, 5, 30])
def test_unipc_schedule_equals_diffusers_flow_sigmas(steps):
    reference = _diffusers_unipc(steps, 7.0).sigmas.numpy()
    np.testing.assert_allclose(unipc_sigmas(steps, 7.0), reference, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 4, 50])
def test_euler_schedule_equals_diffusers_flow_match_euler_with_wan2gp_base(steps):
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1e-3, steps))
    np.testing.assert_allclose(euler_sigmas(steps, 5.0), scheduler.sigmas.numpy(), atol=1e-6)


def test_timesteps_are_sigma_times_1000_without_the_final_zero():
    sampler = make_sampler("unipc", 10, 7.0)
    assert sampler.timesteps == pytest.approx([1000 * s for s in sampler.sigmas[:-1]])
    assert len(sampler.timesteps) == sampler.steps == 10


def test_euler_step_moves_along_the_flow_by_the_sigma_difference():
    sampler = EulerSampler([1.0, 0.6, 0.0])
    x, flow = torch.full((2,), 3.0), torch.tensor([1.0, -2.0])
    torch.testing.assert_close(sampler.step(0, flow, x), torch.tensor([3.0 - 0.4, 3.0 + 0.8]))


def test_euler_last_step_returns_the_x0_prediction():
    sampler = make_sampler("euler", 3, 5.0)
    x, flow = torch.randn(4), torch.randn(4)
    torch.testing.assert_close(sampler.step(2, flow, x), x - sampler.sigmas[2] * flow)


@pytest.mark.parametrize("steps", [1, 2, 3, 30])
def test_unipc_trajectory_equals_diffusers(steps):
    reference = _diffusers_unipc(steps, 7.0)
    ours = make_sampler("unipc", steps, 7.0)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = x.clone()
    for i in range(steps):
        x = ours.step(i, _toy_flow(x, ours.sigmas[i]), x)
        y = reference.step(_toy_flow(y, float(reference.sigmas[i])), reference.timesteps[i], y).prev_sample
    torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


def _gaussian_flow(mean: float, std: float):
    """Exact flow of data N(mean, std^2): v = (x - E[x0 | x_sigma]) / sigma."""

    def flow(x: torch.Tensor, sigma: float) -> torch.Tensor:
        var = (1 - sigma) ** 2 * std**2 + sigma**2
        x0 = mean + (1 - sigma) * std**2 / var * (x - (1 - sigma) * mean)
        return (x - x0) / sigma

    return flow


def _gaussian_solution(x_start: torch.Tensor, sigma_start: float, sigma_end: float, mean: float, std: float):
    """Where the probability-flow ODE takes x_start from sigma_start to sigma_end."""

    def spread(sigma: float) -> float:
        return math.sqrt((1 - sigma) ** 2 * std**2 + sigma**2)

    z = (x_start - (1 - sigma_start) * mean) / spread(sigma_start)
    return (1 - sigma_end) * mean + spread(sigma_end) * z


def _solve(name: str, steps: int, mean: float, std: float) -> float:
    """Max error at the last nonzero sigma: the final jump to 0 is first order by design (lower_order_final)."""
    sampler = make_sampler(name, steps, 3.0)
    flow = _gaussian_flow(mean, std)
    x_start = torch.linspace(-3, 3, 64, dtype=torch.float64)
    x = x_start.clone()
    for i in range(steps - 1):
        x = sampler.step(i, flow(x, sampler.sigmas[i]), x)
    exact = _gaussian_solution(x_start, sampler.sigmas[0], sampler.sigmas[steps - 1], mean, std)
    return (x - exact).abs().max().item()


@pytest.mark.parametrize("steps", [8, 16, 30])
def test_unipc_is_several_times_more_accurate_than_euler_on_the_gaussian_ode(steps):
    assert _solve("unipc", steps, mean=0.7, std=0.4) < 0.25 * _solve("euler", steps, mean=0.7, std=0.4)


@pytest.mark.parametrize("name", ["unipc", "euler"])
def test_every_step_is_exact_when_the_data_is_a_single_point(name):
    """With x0 known exactly, x_sigma = (1 - sigma) * x0 + sigma * z is on the path at every sigma."""
    sampler = make_sampler(name, 7, 7.0)
    x0, z = torch.tensor([0.3, -1.2], dtype=torch.float64), torch.tensor([1.5, 0.4], dtype=torch.float64)
    x = (1 - sampler.sigmas[0]) * x0 + sampler.sigmas[0] * z
    for i in range(sampler.steps):
        x = sampler.step(i, (x - x0) / sampler.sigmas[i], x)
        sigma = sampler.sigmas[i + 1]
        torch.testing.assert_close(x, (1 - sigma) * x0 + sigma * z)


def test_make_sampler_returns_a_fresh_unipc_each_time():
    first, second = make_sampler("unipc", 5, 7.0), make_sampler("unipc", 5, 7.0)
    assert isinstance(first, UniPCSampler) and first is not second


@pytest.mark.parametrize(
    ("name", "steps", "shift", "field"),
    [("ddim", 30, 7.0, "sampler"), ("unipc", 0, 7.0, "steps"), ("euler", 10, 0.0, "shift")],
)
def test_make_sampler_rejects_bad_settings_naming_the_field(name, steps, shift, field):
    with pytest.raises(InputError, match=field):
        make_sampler(name, steps, shift)
