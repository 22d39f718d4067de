"""diffusers' CogVideoX schedulers' loops (v prediction in, alpha space), bit-exact: ``CogVideoXDPMScheduler``
(SDE DPM-Solver++(2M)) and ``CogVideoXDDIMScheduler`` (deterministic DDIM).

Each step's scalars are 0-d CPU tensors in the schedule's dtype (float64), computed one step at a
time with the scheduler's own expressions before the loop: the same operands as diffusers'
``alphas_cumprod[t]`` arithmetic, so they round identically (a vectorized evaluation may not), and
the loop never syncs. 0-d tensors do not promote the latents, which keep x's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..noise import NoiseSource
from ..schedules import DDPMSteps, Grid
from .alpha_space import alpha_level, alpha_levels, log_snr
from .common import Callback, Model, Tensor, emit, timestep
from .dpmpp import dpmpp_2m_update

__all__ = ["sample_diffusers_ddim", "sample_diffusers_dpm"]

#: ``update(i, x, denoised, previous denoised or None) -> x'``, before the cast to the latents' dtype.
Update = Callable[[int, Tensor, Tensor, Tensor | None], Tensor]


def _x0_from_v(steps: DDPMSteps) -> list[tuple[Tensor, Tensor]]:
    """x0 = sqrt(ac) x - sqrt(1 - ac) v, per step."""
    ac = steps.alphas_cumprod
    return [(ac[i] ** 0.5, (1 - ac[i]) ** 0.5) for i in range(len(steps.to_final))]


def _pipeline_loop(model: Model, x: Tensor, grid: Grid, steps: DDPMSteps, update: Update, callback: Callback) -> Tensor:
    """The pipeline's loop: latents * init_noise_sigma (1), then per step v = model(x), D from v,
    x' = update(...) cast back to the latents' dtype."""
    a = alpha_levels(grid, x)
    to_x0 = _x0_from_v(steps)
    dtype = x.dtype
    x = x * 1.0  # the pipeline's latents * init_noise_sigma
    old = None
    for i in range(grid.num_steps):
        v = model(x, alpha_level(a, i, timestep(grid, i)))
        c_x, c_v = to_x0[i]
        denoised = c_x * x - c_v * v
        x = update(i, x, denoised, old).to(dtype)
        old = denoised
        emit(callback, i, x, denoised)
    return x


def _dpm_coefficients(steps: DDPMSteps) -> list[tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]]:
    """Per step (m1, m2, mn, m3, m4), (m3, m4) None on a first-order step (see :func:`sample_diffusers_dpm`)."""
    ac, ac_next = steps.alphas_cumprod, steps.alphas_cumprod_next
    coef = []
    for i in range(len(steps.to_final)):
        lam, lam_next = log_snr(ac[i]), log_snr(ac_next[i])
        h = lam_next - lam
        m1 = ((1 - ac_next[i]) / (1 - ac[i])) ** 0.5 * (-h).exp()
        m2 = (-2 * h).expm1() * ac_next[i] ** 0.5
        mn = (1 - ac_next[i]) ** 0.5 * (1 - (-2 * h).exp()) ** 0.5
        if i == 0 or steps.to_final[i]:
            m3 = m4 = None
        else:
            r = (lam - log_snr(ac[i - 1])) / h
            m3, m4 = 1 + 1 / (2 * r), 1 / (2 * r)
        coef.append((m1, m2, mn, m3, m4))
    return coef


@torch.no_grad()
def sample_diffusers_dpm(
    model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, callback: Callback = None
) -> Tensor:
    """diffusers' ``CogVideoXDPMScheduler`` loop (SDE DPM-Solver++(2M), v prediction):
    x' = sqrt((1-ac')/(1-ac)) e^-h x - expm1(-2h) sqrt(ac') D_i + sqrt(1-ac') sqrt(1-e^-2h) z,
    D = sqrt(ac) x - sqrt(1-ac) v; D_i = (1 + 1/2r) D - (1/2r) D_prev except on the first step and
    on steps to the final level (first order). Every step draws z first; a second-order step
    discards it and draws again. ``model`` returns the guided v; latents keep x's dtype."""
    steps = grid.ddpm_steps()
    coef = _dpm_coefficients(steps)

    def update(i: int, x: Tensor, denoised: Tensor, old: Tensor | None) -> Tensor:
        m1, m2, mn, m3, m4 = coef[i]
        x_next = dpmpp_2m_update(x, denoised, None if m3 is None else old, (m1, m2, m3, m4), noise)
        return x_next + mn * noise.draw(x)

    return _pipeline_loop(model, x, grid, steps, update, callback)


@torch.no_grad()
def sample_diffusers_ddim(
    model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, callback: Callback = None
) -> Tensor:
    """diffusers' ``CogVideoXDDIMScheduler`` loop (deterministic DDIM, v prediction):
    x' = sqrt((1-ac')/(1-ac)) x + (sqrt(ac') - sqrt(ac) sqrt((1-ac')/(1-ac))) D,
    D = sqrt(ac) x - sqrt(1-ac) v. ``model`` returns the guided v; latents keep x's dtype."""
    steps = grid.ddpm_steps()
    ac, ac_next = steps.alphas_cumprod, steps.alphas_cumprod_next
    coef = []
    for i in range(grid.num_steps):
        a_t = ((1 - ac_next[i]) / (1 - ac[i])) ** 0.5
        coef.append((a_t, ac_next[i] ** 0.5 - ac[i] ** 0.5 * a_t))

    def update(i: int, x: Tensor, denoised: Tensor, old: Tensor | None) -> Tensor:
        a_t, b_t = coef[i]
        return a_t * x + b_t * denoised

    return _pipeline_loop(model, x, grid, steps, update, callback)
