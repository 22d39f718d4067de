"""Ancestral samplers in sigma space: each step goes deterministically to sigma_down, then adds
s_noise * sigma_up fresh noise (Euler ancestral, DPM-Solver++(2S) ancestral); float32 scalars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..noise import NoiseSource
from ..schedules import Grid
from .common import EPS_ZERO, Callback, Model, Tensor, emit, per_step, validate_eta
from .sigma_space import denoise, scale_init, sigma_level, sigma_levels, to_d

__all__ = ["sample_dpmpp_2s_ancestral", "sample_euler_ancestral"]

#: ``step(i, x, denoised) -> x at sigma_down[i]``: the deterministic part of an ancestral step.
Step = Callable[[int, Tensor, Tensor], Tensor]


def _ancestral(s_cur: Tensor, s_next: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    """sigma_up = min(s', eta sqrt(s'^2 (s^2 - s'^2) / s^2)), sigma_down = sqrt(s'^2 - sigma_up^2)."""
    if not eta:
        return s_next, torch.zeros_like(s_next)
    sigma_up = torch.minimum(s_next, eta * (s_next**2 * (s_cur**2 - s_next**2) / s_cur**2) ** 0.5)
    sigma_down = (s_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


@dataclass(frozen=True)
class AncestralLevels:
    """A grid's float32 sigmas ``s`` (and ``s_host``), its (S,) ``sigma_down`` and the per-step vectors
    of the Euler step to sigma_down (``dt = sigma_down - sigma``, ``s_b = sigma``) and of ``up = sigma_up``."""

    s: Tensor
    s_host: np.ndarray
    sigma_down: Tensor
    dt: Tensor
    s_b: Tensor
    up: Tensor

    @classmethod
    def of(cls, grid: Grid, x: Tensor, eta: float, s_noise: float) -> AncestralLevels:
        """The grid's levels for ``eta`` (after checking eta and s_noise), shaped against x."""
        validate_eta(eta, s_noise)
        s, s_host = sigma_levels(grid, x)
        sigma_down, sigma_up = _ancestral(s[:-1], s[1:], eta)
        dt = per_step(sigma_down - s[:-1], x)
        return cls(s, s_host, sigma_down, dt, per_step(s, x), per_step(sigma_up, x))

    def euler(self, i: int, x: Tensor, denoised: Tensor) -> Tensor:
        """x + (sigma_down - sigma) (x - D)/sigma."""
        return x + self.dt[i] * to_d(x, denoised, self.s_b[i])


def _ancestral_loop(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    levels: AncestralLevels,
    s_noise: float,
    callback: Callback,
    step: Step,
) -> Tensor:
    """From x sqrt(1 + sigma_0^2): ``step`` to sigma_down, then x += z s_noise sigma_up; the draw on
    the step to sigma' = 0 is made and discarded, as the reference's."""
    x = scale_init(x, levels.s)
    for i in range(grid.num_steps):
        denoised = denoise(model, x, levels.s, grid, i)
        x = step(i, x, denoised)
        if levels.s_host[i + 1] > 0:
            x = x + noise.draw(x) * s_noise * levels.up[i]
        else:
            noise.discard(x)
        emit(callback, i, x, denoised)
    return x


@torch.no_grad()
def sample_euler_ancestral(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    callback: Callback = None,
) -> Tensor:
    """Ancestral Euler (reference ``EulerAncestralSampler``): Euler to sigma_down, then add
    s_noise * sigma_up noise; the draw on the step to 0 is made and discarded."""
    levels = AncestralLevels.of(grid, x, eta, s_noise)
    return _ancestral_loop(model, x, grid, noise, levels, s_noise, callback, levels.euler)


def _dpmpp_2s_step(model: Model, x: Tensor, levels: AncestralLevels) -> Step:
    """DPM-Solver++(2S) to sigma_down, t = -log sigma: one extra call at the midpoint t + h/2; Euler
    on a step whose sigma_down is 0."""
    s, sigma_down = levels.s, levels.sigma_down
    t, t_next = s[:-1].log().neg(), sigma_down.log().neg()
    h = t_next - t
    t_mid = t + 0.5 * h
    sigma_mid = t_mid.neg().exp()
    m1 = per_step(sigma_mid / t.neg().exp(), x)
    m2 = per_step((-0.5 * h).expm1(), x)
    m3 = per_step(t_next.neg().exp() / t.neg().exp(), x)
    m4 = per_step((-h).expm1(), x)
    down_host = sigma_down.cpu().numpy()

    def step(i: int, x: Tensor, denoised: Tensor) -> Tensor:
        if down_host[i] < EPS_ZERO:
            return levels.euler(i, x, denoised)
        x_mid = m1[i] * x - m2[i] * denoised
        denoised_2 = model(x_mid, sigma_level(sigma_mid, i, i, None))
        return m3[i] * x - m4[i] * denoised_2

    return step


@torch.no_grad()
def sample_dpmpp_2s_ancestral(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    callback: Callback = None,
) -> Tensor:
    """DPM-Solver++(2S) ancestral (reference ``DPMPP2SAncestralSampler``), t = -log sigma:
    x_mid = (sigma_mid/sigma) x - expm1(-h/2) D, x' = (sigma_down/sigma) x - expm1(-h) D(x_mid),
    midpoint t + h/2 of h = t(sigma_down) - t; Euler on the step whose sigma_down is 0."""
    levels = AncestralLevels.of(grid, x, eta, s_noise)
    step = _dpmpp_2s_step(model, x, levels)
    return _ancestral_loop(model, x, grid, noise, levels, s_noise, callback, step)
