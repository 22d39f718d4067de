"""Noise schedules ("discretizations"): the training table and the grid a sampler walks.

Two coordinate systems are used throughout cogsample:

* ``"alpha"`` (variance preserving): ``x = alpha * x0 + sqrt(1 - alpha**2) * eps``, alpha in [0, 1],
  where alpha is ``sqrt(alphas_cumprod)``. CogVideoX's video samplers work here.
* ``"sigma"`` (variance exploding): ``x = x0 + sigma * eps``. The k-diffusion style samplers
  work here. The two meet at ``sigma = sqrt(1 - alpha**2) / alpha``.

Every schedule reproduces the reference (SAT ``sgm`` discretizers) bit for bit: the DDPM tables
are built in float64 with NumPy and cast to float32 exactly where the reference casts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

Space = Literal["alpha", "sigma"]

__all__ = [
    "EDM",
    "Grid",
    "LegacyDDPM",
    "Schedule",
    "ZeroSNRDDPM",
    "alpha_to_sigma",
    "ddpm_substeps",
    "sigma_to_alpha",
]


def alpha_to_sigma(alpha: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt(1 - alpha^2) / alpha, evaluated in float64 and returned in alpha's dtype."""
    a = alpha.double()
    return ((1 - a * a).clamp_min(0).sqrt() / a).to(alpha.dtype)


def sigma_to_alpha(sigma: torch.Tensor) -> torch.Tensor:
    """alpha = 1 / sqrt(1 + sigma^2), evaluated in float64 and returned in sigma's dtype."""
    s = sigma.double()
    return (1 / (1 + s * s).sqrt()).to(sigma.dtype)


def ddpm_substeps(num_steps: int, num_timesteps: int = 1000) -> np.ndarray:
    """The reference's "roughly equally spaced" DDPM indices, ascending.

    ``linspace(T-1, 0, n, endpoint=False)`` truncated to int and reversed: for n=10, T=1000 this is
    99, 199, ..., 999 (the grid is "trailing": it starts at T-1 and never reaches 0).
    """
    return np.linspace(num_timesteps - 1, 0, num_steps, endpoint=False).astype(int)[::-1]


@dataclass(frozen=True)
class Grid:
    """The noise levels a sampler steps through, from high noise to low noise.

    ``values`` is a float32 CPU tensor of ``num_steps + 1`` entries in ``space``: step ``i`` goes
    from ``values[i]`` to ``values[i + 1]``; the last entry is the clean end (alpha 1, sigma 0).
    ``timesteps[i]`` is the DDPM index of step ``i`` (999 first) when the schedule has one.
    """

    space: Space
    values: torch.Tensor
    timesteps: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.values.numel() < 2:
            raise ValueError(
                f"Grid values must be a 1-D tensor of at least 2 levels, got shape {tuple(self.values.shape)}"
            )
        if self.timesteps is not None and len(self.timesteps) != self.num_steps:
            raise ValueError(
                f"Grid timesteps must have one entry per step ({self.num_steps}), got {len(self.timesteps)}"
            )

    @property
    def num_steps(self) -> int:
        return self.values.numel() - 1

    def alphas(self) -> torch.Tensor:
        """The grid as alpha (float32); exact when the grid is natively alpha."""
        return self.values if self.space == "alpha" else sigma_to_alpha(self.values)

    def sigmas(self) -> torch.Tensor:
        """The grid as sigma (float32); exact when the grid is natively sigma."""
        return self.values if self.space == "sigma" else alpha_to_sigma(self.values)


class Schedule:
    """A discretization: ``grid(n)`` is what a sampler asks for, ``table(n)`` the denoiser's table."""

    space: ClassVar[Space]

    def grid(self, num_steps: int) -> Grid:  # pragma: no cover - interface
        raise NotImplementedError

    def table(self, num_idx: int = 1000) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


def _check_steps(num_steps: int, limit: int | None = None) -> None:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {num_steps!r}")
    if limit is not None and num_steps > limit:
        raise ValueError(f"steps must be at most num_timesteps={limit} for a DDPM schedule, got {num_steps}")


def _linear_betas(linear_start: float, linear_end: float, num_timesteps: int) -> np.ndarray:
    """beta_t = linspace(sqrt(start), sqrt(end), T)^2 in float64 (the "scaled linear" schedule)."""
    return (torch.linspace(linear_start**0.5, linear_end**0.5, num_timesteps, dtype=torch.float64) ** 2).numpy()


def _check_ddpm(linear_start: float, linear_end: float, num_timesteps: int) -> None:
    if not 0 < linear_start < 1:
        raise ValueError(f"linear_start must be in (0, 1), got {linear_start!r}")
    if not 0 < linear_end < 1:
        raise ValueError(f"linear_end must be in (0, 1), got {linear_end!r}")
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, int) or num_timesteps < 2:
        raise ValueError(f"num_timesteps must be an integer >= 2, got {num_timesteps!r}")


class _DDPMTable(Schedule):
    """DDPM schedules: a level per training timestep; a sampler gets the trailing sub-steps."""

    num_timesteps: int
    #: the level appended after the last step (the clean end)
    terminal: ClassVar[float]

    def _alphas_cumprod(self) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _levels(self, ac: np.ndarray) -> torch.Tensor:  # pragma: no cover - interface
        """Levels (float32) for the given alphas_cumprod, in ascending timestep order."""
        raise NotImplementedError

    def grid(self, num_steps: int) -> Grid:
        """The levels at the trailing DDPM sub-steps, high noise first, then the clean end."""
        _check_steps(num_steps, self.num_timesteps)
        ac = self._alphas_cumprod()
        if num_steps < self.num_timesteps:
            ts = ddpm_substeps(num_steps, self.num_timesteps)
            ac = ac[ts]
        else:
            ts = np.arange(self.num_timesteps)
        levels = torch.flip(self._levels(ac), (0,))
        values = torch.cat([levels, levels.new_full([1], self.terminal)])
        return Grid(self.space, values, tuple(int(t) for t in ts[::-1]))

    def table(self, num_idx: int = 1000) -> torch.Tensor:
        """The denoiser's table: entry ``t`` is the level at DDPM timestep ``t``."""
        if num_idx != self.num_timesteps:
            raise ValueError(
                f"num_idx must equal num_timesteps={self.num_timesteps} for a {type(self).__name__} table, "
                f"got {num_idx!r}"
            )
        return self._levels(self._alphas_cumprod())


@dataclass(frozen=True)
class ZeroSNRDDPM(_DDPMTable):
    """DDPM with an SNR shift and zero terminal SNR (CogVideoX), in alpha space.

    alphas_cumprod from scaled-linear betas, shifted ``ac / (shift + (1 - shift) * ac)``
    (logSNR - log(shift)); the picked sqrt values are renormalised with their own endpoints,
    ``a = (a - a_T) * a_0 / (a_0 - a_T)``, so the last training step has alpha exactly 0.
    ``keep_start`` rescales linear_start first; ``post_shift`` applies the shift after the
    renormalisation instead, ``a = sqrt(a^2 / (shift + (1 - shift) a^2))`` (float32).
    """

    shift_scale: float = 1.0
    keep_start: bool = False
    post_shift: bool = False
    linear_start: float = 0.00085
    linear_end: float = 0.0120
    num_timesteps: int = 1000
    space: ClassVar[Space] = "alpha"
    terminal: ClassVar[float] = 1.0

    def __post_init__(self) -> None:
        shift = self.shift_scale
        if not (isinstance(shift, (int, float)) and math.isfinite(shift)) or shift <= 0:
            raise ValueError(f"shift_scale must be a finite number > 0, got {self.shift_scale!r}")
        _check_ddpm(self.linear_start, self.linear_end, self.num_timesteps)

    def _alphas_cumprod(self) -> np.ndarray:
        shift, start = self.shift_scale, self.linear_start
        if self.keep_start and not self.post_shift:
            start = start / (shift + (1 - shift) * start)
        ac = np.cumprod(1.0 - _linear_betas(start, self.linear_end, self.num_timesteps), axis=0)
        if not self.post_shift:
            ac = ac / (shift + (1 - shift) * ac)
        return ac

    def _levels(self, ac: np.ndarray) -> torch.Tensor:
        """sqrt(ac) of the picked entries, zero-terminal renormalised with their own ends (float32)."""
        a = torch.tensor(ac, dtype=torch.float32).sqrt()
        a0, a_t = a[0].clone(), a[-1].clone()
        a = (a - a_t) * (a0 / (a0 - a_t))
        if self.post_shift:
            shift = self.shift_scale
            a = (a**2 / (shift + (1 - shift) * a**2)) ** 0.5
        return a


@dataclass(frozen=True)
class LegacyDDPM(_DDPMTable):
    """Stable Diffusion's DDPM schedule in sigma space: ``sigma_t = sqrt((1 - ac_t) / ac_t)``."""

    linear_start: float = 0.00085
    linear_end: float = 0.0120
    num_timesteps: int = 1000
    space: ClassVar[Space] = "sigma"
    terminal: ClassVar[float] = 0.0

    def __post_init__(self) -> None:
        _check_ddpm(self.linear_start, self.linear_end, self.num_timesteps)

    def _levels(self, ac: np.ndarray) -> torch.Tensor:
        """sigma = sqrt((1 - ac) / ac): the ratio in float64, the root in float32."""
        return torch.tensor((1 - ac) / ac, dtype=torch.float32) ** 0.5

    def _alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - _linear_betas(self.linear_start, self.linear_end, self.num_timesteps), axis=0)


@dataclass(frozen=True)
class EDM(Schedule):
    """Karras et al. (2022): ``sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho``."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    space: ClassVar[Space] = "sigma"

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max or not math.isfinite(self.sigma_max):
            raise ValueError(
                f"sigma_min and sigma_max must satisfy 0 < sigma_min < sigma_max < inf, "
                f"got sigma_min={self.sigma_min!r}, sigma_max={self.sigma_max!r}"
            )
        if not self.rho > 0:
            raise ValueError(f"rho must be > 0, got {self.rho!r}")

    def _sigmas(self, n: int) -> torch.Tensor:
        ramp = torch.linspace(0, 1, n)
        min_inv_rho = self.sigma_min ** (1 / self.rho)
        max_inv_rho = self.sigma_max ** (1 / self.rho)
        return (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** self.rho

    def grid(self, num_steps: int) -> Grid:
        """num_steps Karras sigmas from sigma_max down to sigma_min, then a final 0."""
        _check_steps(num_steps)
        s = self._sigmas(num_steps)
        return Grid("sigma", torch.cat([s, s.new_zeros([1])]), None)

    def table(self, num_idx: int = 1000) -> torch.Tensor:
        """num_idx Karras sigmas, ascending."""
        _check_steps(num_idx)
        return torch.flip(self._sigmas(num_idx), (0,))
