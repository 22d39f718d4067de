"""Denoiser parameterizations: ``D(x, s) = c_skip(s) * x + c_out(s) * F(c_in(s) * x, c_noise(s))``.

``F`` is the network. Each scaling is written in its own coordinate system (see
:mod:`cogsample.sampling.schedules`): ``"sigma"`` scalings take sigma and a variance-exploding ``x``,
``VideoScaling`` takes alpha and a variance-preserving ``x``. The arithmetic is written exactly as
the reference writes it (Python scalars on the left of tensors, the same association), because a
different but equal formula rounds differently in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .schedules import Space

Tensor = torch.Tensor

__all__ = ["EDMScaling", "EpsScaling", "Scaling", "VScaling", "VScalingEDMNoise", "VideoScaling"]


class Scaling:
    """Maps a noise level to ``(c_skip, c_out, c_in)`` and to the network's noise input."""

    space: ClassVar[Space]
    #: True when ``c_noise`` is the DDPM timestep rather than a function of the level.
    uses_timestep: ClassVar[bool] = False

    def __call__(self, level: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def c_noise(self, level: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class EDMScaling(Scaling):
    """EDM preconditioning: c_skip = sd^2/(s^2+sd^2), c_out = s*sd/sqrt(s^2+sd^2),
    c_in = 1/sqrt(s^2+sd^2), c_noise = log(s)/4."""

    sigma_data: float = 0.5
    space: ClassVar[Space] = "sigma"

    def __post_init__(self) -> None:
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data!r}")

    def __call__(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        sd = self.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2) ** 0.5
        c_in = 1 / (sigma**2 + sd**2) ** 0.5
        return c_skip, c_out, c_in

    def c_noise(self, sigma: Tensor) -> Tensor:
        return 0.25 * sigma.log()


@dataclass(frozen=True)
class EpsScaling(Scaling):
    """Epsilon prediction: D = x - s * F(x / sqrt(s^2+1), s)."""

    space: ClassVar[Space] = "sigma"

    def __call__(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c_skip = torch.ones_like(sigma)
        c_out = -sigma
        c_in = 1 / (sigma**2 + 1.0) ** 0.5
        return c_skip, c_out, c_in

    def c_noise(self, sigma: Tensor) -> Tensor:
        return sigma.clone()


@dataclass(frozen=True)
class VScaling(Scaling):
    """v prediction in sigma space: c_skip = 1/(s^2+1), c_out = -s/sqrt(s^2+1), c_in = 1/sqrt(s^2+1),
    c_noise = s."""

    space: ClassVar[Space] = "sigma"

    def __call__(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c_skip = 1.0 / (sigma**2 + 1.0)
        c_out = -sigma / (sigma**2 + 1.0) ** 0.5
        c_in = 1.0 / (sigma**2 + 1.0) ** 0.5
        return c_skip, c_out, c_in

    def c_noise(self, sigma: Tensor) -> Tensor:
        return sigma.clone()


@dataclass(frozen=True)
class VScalingEDMNoise(VScaling):
    """v prediction with EDM's noise input: as :class:`VScaling`, c_noise = log(s)/4."""

    def c_noise(self, sigma: Tensor) -> Tensor:
        return 0.25 * sigma.log()


@dataclass(frozen=True)
class VideoScaling(Scaling):
    """CogVideoX's v prediction in alpha space: D = a * x - sqrt(1 - a^2) * F(x, t).

    c_skip = a, c_out = -sqrt(1 - a^2), c_in = 1; the network's noise input is the DDPM
    timestep ``t`` (an integer index, 999 = pure noise), not a function of ``a``.
    """

    space: ClassVar[Space] = "alpha"
    uses_timestep: ClassVar[bool] = True

    def __call__(self, alpha: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c_skip = alpha
        c_out = -((1 - alpha**2) ** 0.5)
        c_in = torch.ones_like(alpha)
        return c_skip, c_out, c_in

    def c_noise(self, alpha: Tensor) -> Tensor:
        raise TypeError("VideoScaling takes the DDPM timestep as its noise input, not a function of alpha")
