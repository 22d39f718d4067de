"""Alpha space (variance preserving, x = a x0 + sqrt(1 - a^2) eps, a = sqrt(alphas_cumprod)): the
video samplers' levels and log-SNR, in float32, or float64 for a float64 x; predictions cast to float32."""

from __future__ import annotations

import torch

from ..denoiser import Level
from ..schedules import Grid
from .common import Model, Tensor

__all__ = ["alpha_level", "alpha_levels", "log_snr", "noise_ratio", "predict"]


def alpha_levels(grid: Grid, x: Tensor) -> Tensor:
    """The grid as alphas on x's device: float64 for a float64 x, else float32 (the reference's s_in)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return grid.alphas().to(device=x.device, dtype=dtype)


def alpha_level(a: Tensor, i: int, timestep: int | None) -> Level:
    """The model's level ``a[i]`` in alpha space at step i."""
    return Level(a[i].reshape(1), "alpha", i, timestep)


def predict(model: Model, x: Tensor, a: Tensor, i: int, timestep: int | None) -> Tensor:
    """D(x; a_i) cast to float32, as the reference's video samplers cast the network's prediction."""
    return model(x, alpha_level(a, i, timestep)).to(torch.float32)


def log_snr(ac: Tensor) -> Tensor:
    """lambda = log sqrt(ac / (1 - ac)) of alphas_cumprod ac = a^2, as the reference and diffusers write it."""
    return ((ac / (1 - ac)) ** 0.5).log()


def noise_ratio(a: Tensor, a_next: Tensor) -> Tensor:
    """s'/s = sqrt((1 - a'^2) / (1 - a^2)): the ratio of the VP noise scales of two levels."""
    return ((1 - a_next**2) / (1 - a**2)) ** 0.5
