"""Flow-matching samplers: shifted sigma schedules, Euler, and UniPC (B(h)=expm1, order 2, x0 form).

Convention (Wan / rectified flow): x_sigma = (1 - sigma) * x0 + sigma * noise, and the DiT predicts the
flow v = noise - x0, so x0 = x - sigma * v. Sampling runs sigma from ~1 down to 0; the model sees
t = sigma * 1000.

Every coefficient is a Python float computed from the schedule, so a step is a handful of tensor
multiply-adds with no host/device synchronisation.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
import torch

from common.errors import InputError

NUM_TRAIN_TIMESTEPS = 1000
SAMPLERS = ("unipc", "euler")


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """sigma' = s * sigma / (1 + (s - 1) * sigma): s > 1 spends more steps at high noise."""
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def euler_sigmas(steps: int, shift: float) -> list[float]:
    """steps + 1 sigmas: linspace(1, 1/1000, steps) shifted, then 0 (Wan2GP's Euler: t from 1000 down to 1)."""
    base = np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps)
    return [*shift_sigmas(base, shift).tolist(), 0.0]


def unipc_sigmas(steps: int, shift: float) -> list[float]:
    """steps + 1 sigmas: linspace(0.999, 0, steps + 1)[:-1] shifted, then 0 (Wan's FlowUniPCMultistepScheduler)."""
    sigma_max = 1.0 - 1.0 / NUM_TRAIN_TIMESTEPS
    base = np.linspace(sigma_max, 0.0, steps + 1)[:-1]
    return [*shift_sigmas(base, shift).tolist(), 0.0]


class FlowSampler(Protocol):
    sigmas: list[float]

    @property
    def steps(self) -> int: ...

    @property
    def timesteps(self) -> list[float]: ...

    def step(self, i: int, flow: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x at sigmas[i] and the model's flow there -> x at sigmas[i + 1]."""
        ...


class _Schedule:
    def __init__(self, sigmas: list[float]):
        self.sigmas = sigmas

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def timesteps(self) -> list[float]:
        """The model's time input per step, t = sigma * 1000."""
        return [s * NUM_TRAIN_TIMESTEPS for s in self.sigmas[:-1]]


class EulerSampler(_Schedule):
    """First-order: x <- x + (sigma_next - sigma) * v."""

    def step(self, i: int, flow: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x + (self.sigmas[i + 1] - self.sigmas[i]) * flow


def _lambda(sigma: float) -> float:
    """Half log-SNR, log(alpha / sigma) with alpha = 1 - sigma; +inf at sigma = 0."""
    return math.inf if sigma == 0.0 else math.log1p(-sigma) - math.log(sigma)


class UniPCSampler(_Schedule):
    """UniPC multistep (predictor UniP-2 + corrector UniC, bh2) on x0 predictions.

    Matches diffusers' UniPCMultistepScheduler(use_flow_sigmas, prediction_type="flow_prediction",
    solver_order=2, solver_type="bh2", lower_order_final=True): order 1 on the first and the last step.
    Keeps the last two x0 predictions and the last pre-corrector sample; create one per generation.
    """

    def __init__(self, sigmas: list[float]):
        super().__init__(sigmas)
        self._lambdas = [_lambda(s) for s in sigmas]
        self._x0: list[torch.Tensor] = []  # x0 predictions at steps i-2, i-1
        self._last_sample: torch.Tensor | None = None
        self._last_order = 0

    def step(self, i: int, flow: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x0 = x - self.sigmas[i] * flow
        if i > 0:
            x = self._correct(i, x0, x)
        self._x0 = [*self._x0[-1:], x0]
        order = min(2, i + 1, self.steps - i)
        self._last_sample, self._last_order = x, order
        return self._predict(i, order, x)

    def _predict(self, i: int, order: int, x: torch.Tensor) -> torch.Tensor:
        """UniP from sigmas[i] to sigmas[i + 1]; the order-2 term uses rho = 1/2 as in the reference."""
        s0, t = self.sigmas[i], self.sigmas[i + 1]
        h = self._lambdas[i + 1] - self._lambdas[i]
        phi1 = math.expm1(-h)  # also B(h) for bh2; -1 when t = 0
        m0 = self._x0[-1]
        x_t = (t / s0) * x - (1.0 - t) * phi1 * m0
        if order == 2:
            rk = (self._lambdas[i - 1] - self._lambdas[i]) / h
            d1 = (self._x0[-2] - m0) / rk
            x_t = x_t - (1.0 - t) * phi1 * 0.5 * d1
        return x_t

    def _correct(self, i: int, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """UniC: refine x at sigmas[i] with the new x0 prediction there, at the last predictor's order."""
        s0, t = self.sigmas[i - 1], self.sigmas[i]
        h = self._lambdas[i] - self._lambdas[i - 1]
        hh = -h
        phi1 = math.expm1(hh)
        m0 = self._x0[-1]
        base = (t / s0) * self._last_sample - (1.0 - t) * phi1 * m0
        if self._last_order == 1:
            return base - (1.0 - t) * phi1 * 0.5 * (x0 - m0)
        # Order 2: solve [[1, 1], [rk, 1]] @ rho = b in closed form.
        rk = (self._lambdas[i - 2] - self._lambdas[i - 1]) / h
        g1 = phi1 / hh - 1.0
        g2 = g1 / hh - 0.5
        b1, b2 = g1 / phi1, 2.0 * g2 / phi1
        rho0 = (b1 - b2) / (1.0 - rk)
        rho1 = b1 - rho0
        d1 = (self._x0[-2] - m0) / rk
        return base - (1.0 - t) * phi1 * (rho0 * d1 + rho1 * (x0 - m0))


def make_sampler(name: str, steps: int, shift: float) -> FlowSampler:
    """A fresh sampler for one generation; InputError for an unknown name or bad numbers."""
    if steps < 1:
        raise InputError(f"steps must be at least 1, got {steps}")
    if not shift > 0:
        raise InputError(f"shift must be positive, got {shift}")
    if name == "unipc":
        return UniPCSampler(unipc_sigmas(steps, shift))
    if name == "euler":
        return EulerSampler(euler_sigmas(steps, shift))
    raise InputError(f"sampler must be one of {', '.join(SAMPLERS)}, got {name!r}")
