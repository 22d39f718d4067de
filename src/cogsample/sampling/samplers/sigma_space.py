"""Sigma space (variance exploding, x = x0 + sigma eps): the k-diffusion / sgm samplers' levels,
start and derivative, every scalar in float32 whatever x's dtype."""

from __future__ import annotations

import numpy as np
import torch

from ..denoiser import Level
from ..schedules import Grid
from .common import Model, Tensor, timestep

__all__ = ["denoise", "scale_init", "sigma_level", "sigma_levels", "to_d"]


def sigma_levels(grid: Grid, x: Tensor) -> tuple[Tensor, np.ndarray]:
    """The grid as float32 sigmas on x's device, and the same values on the host."""
    s = grid.sigmas()
    if not torch.isfinite(s[0]):
        raise ValueError(
            "this sampler works in sigma space and cannot start from alpha=0 (infinite sigma), "
            "the first level of a zero-terminal-SNR schedule: use an alpha-space sampler "
            "(vpsde_dpmpp_2m, vpode_dpmpp_2m, video_ddim, video_ddpm)"
        )
    return s.to(x.device), s.numpy()


def scale_init(x: Tensor, s: Tensor) -> Tensor:
    """x * sqrt(1 + sigma_0^2): unit noise to the variance-exploding start (float32 factor)."""
    return x * torch.sqrt(1.0 + s[0] ** 2.0)


def sigma_level(v: Tensor, i: int, step: int, timestep: int | None) -> Level:
    """The model's level ``v[i]`` in sigma space, called on behalf of ``step``."""
    return Level(v[i].reshape(1), "sigma", step, timestep)


def denoise(model: Model, x: Tensor, s: Tensor, grid: Grid, i: int) -> Tensor:
    """D(x; sigma_i): the model at step i's own level and timestep."""
    return model(x, sigma_level(s, i, i, timestep(grid, i)))


def to_d(x: Tensor, denoised: Tensor, sigma: Tensor) -> Tensor:
    """The probability-flow derivative dx/dsigma = (x - D) / sigma (k-diffusion's ``to_d``)."""
    return (x - denoised) / sigma
