"""EDM samplers in sigma space (Karras et al. 2022, Alg. 2): Euler and Heun with stochastic churn,
and SDEdit's Euler from a noised image.

Step i churns sigma_i up to sigma_hat = sigma_i (1 + gamma_i) with fresh noise of std
s_noise sqrt(sigma_hat^2 - sigma_i^2), then integrates dx/dsigma = (x - D)/sigma to sigma_{i+1};
every scalar is float32, as in the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..noise import NoiseSource
from ..schedules import Grid
from .common import EPS_ZERO, Callback, Model, Tensor, emit, per_step, timestep
from .sigma_space import scale_init, sigma_level, sigma_levels, to_d

__all__ = ["sample_euler", "sample_heun", "sample_sdedit_euler"]


@dataclass(frozen=True)
class Churn:
    """EDM's churn options: gamma = min(s_churn / S, sqrt2 - 1) on levels in [s_tmin, s_tmax], noise x s_noise."""

    s_churn: float
    s_tmin: float
    s_tmax: float
    s_noise: float

    def gammas(self, s_host: np.ndarray) -> list[float]:
        """gamma_i per step, the window compared in float32 as the reference does."""
        num = len(s_host) - 1
        lo, hi = np.float32(self.s_tmin), np.float32(self.s_tmax)
        return [min(self.s_churn / num, 2**0.5 - 1) if lo <= s_host[i] <= hi else 0.0 for i in range(num)]


def _edm_loop(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    churn: Churn,
    callback: Callback,
    *,
    heun: bool,
    steps: Sequence[int] | None = None,
    image: Tensor | None = None,
) -> Tensor:
    """Karras et al. (2022) Alg. 2: churn to sigma_hat = sigma (1 + gamma), Euler (or Heun) to sigma'.

    ``x`` is unit noise. It starts at ``x sqrt(1 + sigma_0^2)``, or, with ``image`` (SDEdit), at
    ``image + x sigma_i`` on the first of ``steps``, the loop indices to run.
    """
    s, s_host = sigma_levels(grid, x)
    gammas = churn.gammas(s_host)
    sigma_hat = s[:-1] * torch.tensor([g + 1.0 for g in gammas], dtype=s.dtype, device=s.device)
    churn_std = per_step((sigma_hat**2 - s[:-1] ** 2) ** 0.5, x)
    dt = per_step(s[1:] - sigma_hat, x)
    s_b, sh_b = per_step(s, x), per_step(sigma_hat, x)
    steps = range(grid.num_steps) if steps is None else steps
    x = scale_init(x, s) if image is None else image + x * s_b[steps[0]]
    for i in steps:
        if gammas[i] > 0:
            x = x + noise.draw(x) * churn.s_noise * churn_std[i]
        denoised = model(x, sigma_level(sigma_hat, i, i, timestep(grid, i)))
        d = to_d(x, denoised, sh_b[i])
        x_next = x + dt[i] * d
        if heun and not s_host[i + 1] < EPS_ZERO:
            nt = timestep(grid, i + 1) if i + 1 < grid.num_steps else None
            denoised_2 = model(x_next, sigma_level(s, i + 1, i, nt))
            d_prime = (d + to_d(x_next, denoised_2, s_b[i + 1])) / 2.0
            x_next = x + d_prime * dt[i]
        x = x_next
        emit(callback, i, x, denoised)
    return x


@torch.no_grad()
def sample_euler(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    callback: Callback = None,
) -> Tensor:
    """Euler with EDM churn (reference ``EulerEDMSampler``): x += (sigma' - sigma_hat) (x - D)/sigma_hat."""
    return _edm_loop(model, x, grid, noise, Churn(s_churn, s_tmin, s_tmax, s_noise), callback, heun=False)


@torch.no_grad()
def sample_heun(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    callback: Callback = None,
) -> Tensor:
    """Heun's 2nd order method with EDM churn (reference ``HeunEDMSampler``): the Euler step's
    derivative averaged with the one at its end, d' = (d + (x_E - D(x_E; sigma'))/sigma')/2; Euler
    on the step to 0."""
    return _edm_loop(model, x, grid, noise, Churn(s_churn, s_tmin, s_tmax, s_noise), callback, heun=True)


@torch.no_grad()
def sample_sdedit_euler(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    *,
    image: Tensor,
    edit_ratio: float = 0.5,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    callback: Callback = None,
) -> Tensor:
    """SDEdit (reference ``SdeditEDMSampler``): skip steps with i/S < edit_ratio, start from
    ``image + x * sigma_i`` (x the unit noise) and run Euler-EDM steps; churn keeps gamma's 1/S."""
    if not 0 <= edit_ratio < 1:
        raise ValueError(f"edit_ratio must be in [0, 1), got {edit_ratio!r}")
    if tuple(image.shape) != tuple(x.shape):
        raise ValueError(f"image must have the latent's shape {tuple(x.shape)}, got {tuple(image.shape)}")
    steps = [i for i in range(grid.num_steps) if not i / grid.num_steps < edit_ratio]
    churn = Churn(s_churn, s_tmin, s_tmax, s_noise)
    return _edm_loop(model, x, grid, noise, churn, callback, heun=False, steps=steps, image=image)
