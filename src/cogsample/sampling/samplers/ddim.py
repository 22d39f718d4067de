"""DDIM and DDPM steps: DDIM in sigma space with a noise fraction (float32 scalars), deterministic
DDIM and ancestral DDPM in alpha space (CogVideoX's video samplers). All three are the first-order
step x' = c_x x + c_d D (+ c_z z) from the level's (alpha, sigma) to the next one's."""

from __future__ import annotations

import torch

from ..noise import NoiseSource
from ..schedules import Grid
from .alpha_space import alpha_levels, noise_ratio, predict
from .common import Callback, Model, Tensor, emit, per_step, timestep
from .sigma_space import denoise, scale_init, sigma_levels, to_d

__all__ = ["sample_ddim", "sample_video_ddim", "sample_video_ddpm"]


@torch.no_grad()
def sample_ddim(
    model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, s_noise: float = 0.1, callback: Callback = None
) -> Tensor:
    """Generic DDIM in sigma space (reference ``DDIMSampler``):
    x' = x + (sigma' sqrt(1 - s_noise^2) - sigma) d + s_noise sigma' z, d = (x - D)/sigma."""
    if not 0 <= s_noise <= 1:
        raise ValueError(f"s_noise must be in [0, 1] for ddim, got {s_noise!r}")
    s, _ = sigma_levels(grid, x)
    dt = per_step(s[1:] * (1 - s_noise**2) ** 0.5 - s[:-1], x)
    nm = per_step(s_noise * s[1:], x)
    s_b = per_step(s, x)
    x = scale_init(x, s)
    for i in range(grid.num_steps):
        denoised = denoise(model, x, s, grid, i)
        x = x + dt[i] * to_d(x, denoised, s_b[i]) + nm[i] * noise.draw(x)
        emit(callback, i, x, denoised)
    return x


@torch.no_grad()
def sample_video_ddim(model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, callback: Callback = None) -> Tensor:
    """Deterministic DDIM in alpha space (reference ``VideoDDIMSampler``, ``Image2VideoDDIMSampler``):
    x' = sqrt((1 - a'^2)/(1 - a^2)) x + (a' - a sqrt((1 - a'^2)/(1 - a^2))) D."""
    a = alpha_levels(grid, x)
    a_t = noise_ratio(a[:-1], a[1:])
    b_t = a[1:] - a[:-1] * a_t
    a_t, b_t = per_step(a_t, x), per_step(b_t, x)
    for i in range(grid.num_steps):
        denoised = predict(model, x, a, i, timestep(grid, i))
        x = a_t[i] * x + b_t[i] * denoised
        emit(callback, i, x, denoised)
    return x


@torch.no_grad()
def sample_video_ddpm(model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, callback: Callback = None) -> Tensor:
    """Ancestral DDPM in alpha space (reference ``VideoDDPMSampler``), with r = a/a':
    x' = r(1 - a'^2)/(1 - a^2) x + a'(1 - r^2)/(1 - a^2) D + sqrt((1 - a'^2)(1 - r^2)/(1 - a^2)) z;
    the last step returns D. As in the reference, the network's timestep is idx*1000//S
    (idx = S - i: 1000, 900, ... for 10 steps), not the grid's DDPM index."""
    a = alpha_levels(grid, x)
    r = a[:-1] / a[1:]
    c_x = per_step(r * (1 - a[1:] ** 2) / (1 - a[:-1] ** 2), x)
    c_d = per_step(a[1:] * (1 - r**2) / (1 - a[:-1] ** 2), x)
    c_z = per_step(((1 - a[1:] ** 2) * (1 - r**2) / (1 - a[:-1] ** 2)) ** 0.5, x)
    n = grid.num_steps
    for i in range(n):
        denoised = predict(model, x, a, i, (n - i) * 1000 // n)
        if i == n - 1:
            x = denoised
        else:
            x = c_x[i] * x + c_d[i] * denoised + c_z[i] * noise.draw(x)
        emit(callback, i, x, denoised)
    return x
