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

import functools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch

Space = Literal["alpha", "sigma"]

__all__ = [
    "EDM",
    "DDPMSteps",
    "DiffusersDDPM",
    "DiffusersGridWarning",
    "Grid",
    "LegacyDDPM",
    "Schedule",
    "SpacedDDPM",
    "TruncatedSchedule",
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
class DDPMSteps:
    """Per-step ``alphas_cumprod`` exactly as a DDPM scheduler reads them from its table.

    Step ``i`` goes from ``alphas_cumprod[i]`` to ``alphas_cumprod_next[i]`` (1-D tensors in the
    schedule's own dtype, float64 for diffusers' scaled-linear table); ``to_final[i]`` says the
    target is the scheduler's final value (diffusers' ``prev_timestep < 0``) rather than a table
    entry, where diffusers' DPM scheduler takes a first-order step.
    """

    alphas_cumprod: torch.Tensor
    alphas_cumprod_next: torch.Tensor
    to_final: tuple[bool, ...]

    def __post_init__(self) -> None:
        n = len(self.to_final)
        if self.alphas_cumprod.shape != (n,) or self.alphas_cumprod_next.shape != (n,):
            raise ValueError(
                f"DDPMSteps needs 1-D alphas_cumprod and alphas_cumprod_next of one entry per step ({n}), got "
                f"{tuple(self.alphas_cumprod.shape)} and {tuple(self.alphas_cumprod_next.shape)}"
            )


@dataclass(frozen=True)
class Grid:
    """The noise levels a sampler steps through, from high noise to low noise.

    ``values`` is a float32 CPU tensor of ``num_steps + 1`` entries in ``space``: step ``i`` goes
    from ``values[i]`` to ``values[i + 1]``; the last entry is the clean end (alpha 1, sigma 0), or
    where the schedule's last step really ends. ``timesteps[i]`` is the DDPM index of step ``i``
    (999 first) when the schedule has one. ``ddpm``: the schedule's own per-step scalars, for
    samplers that replicate a scheduler's arithmetic (:class:`DiffusersDDPM`); None derives them
    from ``values`` (see :meth:`ddpm_steps`). ``requested_steps``: the step count the schedule was
    asked for when it made a different number (diffusers' trailing spacing makes 62 steps for
    61); step-count formulas such as DynamicCFG's ``num_steps - timestep`` use it.
    """

    space: Space
    values: torch.Tensor
    timesteps: tuple[int, ...] | None = None
    ddpm: DDPMSteps | None = None
    requested_steps: int | None = None

    def __post_init__(self) -> None:
        if self.values.ndim != 1 or self.values.numel() < 2:
            raise ValueError(
                f"Grid values must be a 1-D tensor of at least 2 levels, got shape {tuple(self.values.shape)}"
            )
        if self.timesteps is not None and len(self.timesteps) != self.num_steps:
            raise ValueError(
                f"Grid timesteps must have one entry per step ({self.num_steps}), got {len(self.timesteps)}"
            )
        if self.ddpm is not None and len(self.ddpm.to_final) != self.num_steps:
            raise ValueError(
                f"Grid ddpm must have one entry per step ({self.num_steps}), got {len(self.ddpm.to_final)}"
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

    def ddpm_steps(self) -> DDPMSteps:
        """``ddpm`` if the schedule gave it, else ``alphas_cumprod = alpha^2`` (float64) of
        ``values``: step ``i`` from level ``i`` to level ``i + 1``, the last to the final level."""
        if self.ddpm is not None:
            return self.ddpm
        ac = self.alphas().double() ** 2
        n = self.num_steps
        return DDPMSteps(ac[:-1], ac[1:], tuple(i == n - 1 for i in range(n)))


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


Spacing = Literal["uniform", "power", "logsnr"]
_SPACED = ("uniform", "power", "logsnr")


@dataclass(frozen=True)
class SpacedDDPM(Schedule):
    """A DDPM table walked at chosen timesteps that end at ``t_min`` (0: the table's lowest noise).

    With ``u_i = i / (n - 1)``: ``"uniform"`` puts step ``i`` at ``t_max - u_i (t_max - t_min)``,
    ``"power"`` at ``t_min + (t_max - t_min) (1 - u_i)^rho`` (``rho > 1``: dense at low noise, with
    smoothly shrinking steps), ``"logsnr"`` at equal steps of ``lambda = log(alpha / sigma)`` from
    ``lambda(t_max)`` to ``lambda(t_min)`` (from ``t_max - 1`` after a first step at ``t_max`` when
    that is the zero-SNR level), each rounded to the nearest timestep; the timesteps are integers
    kept strictly decreasing. ``t_max`` defaults
    to the table's last timestep (alpha 0 for zero terminal SNR: sigma-space samplers need a lower
    one, e.g. ``T - 2``, to start from a finite sigma). The levels are the ``base`` table's own
    entries (``base.table()[t]``, exactly what a network trained on that table sees at ``t``), then
    the clean end. The reference's trailing grid instead stops at ``t = T/n - 1`` and renormalises
    the picked levels; this schedule is not a reference one and is meant for fewer, better steps.
    """

    base: ZeroSNRDDPM | LegacyDDPM = ZeroSNRDDPM(1.0)
    spacing: Spacing = "power"
    rho: float = 2.0
    t_min: int = 0
    t_max: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.base, (ZeroSNRDDPM, LegacyDDPM)):
            raise ValueError(f"base must be a ZeroSNRDDPM or LegacyDDPM table, got {self.base!r}")
        if self.spacing not in _SPACED:
            raise ValueError(f"spacing must be one of {list(_SPACED)}, got {self.spacing!r}")
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) or not 0 < self.rho < 100:
            raise ValueError(f"rho must be a number in (0, 100), got {self.rho!r}")
        last, t_max = self.base.num_timesteps - 1, self.t_max
        if t_max is not None and (isinstance(t_max, bool) or not isinstance(t_max, int) or not 0 < t_max <= last):
            raise ValueError(f"t_max must be an integer in (0, {last}] or None, got {t_max!r}")
        top = self.top
        if isinstance(self.t_min, bool) or not isinstance(self.t_min, int) or not 0 <= self.t_min < top:
            raise ValueError(f"t_min must be an integer in [0, t_max={top}), got {self.t_min!r}")

    @property
    def top(self) -> int:
        """The first step's timestep: ``t_max``, or the table's last."""
        return self.base.num_timesteps - 1 if self.t_max is None else self.t_max

    @property
    def space(self) -> Space:  # type: ignore[override]
        return self.base.space

    def timesteps(self, num_steps: int) -> list[int]:
        """The ``num_steps`` integer timesteps, high noise first, from ``t_max`` down to ``t_min``."""
        top = self.top
        _check_steps(num_steps, top - self.t_min + 1)
        if num_steps == 1:
            return [top]
        u = np.arange(num_steps, dtype=np.float64) / (num_steps - 1)
        span = top - self.t_min
        if self.spacing == "logsnr":
            ts = self._logsnr_timesteps(num_steps)
        else:
            pos = top - u * span if self.spacing == "uniform" else self.t_min + span * (1 - u) ** self.rho
            ts = [int(v) for v in np.rint(pos)]
        ts[0], ts[-1] = top, self.t_min
        # where rounding merges steps, move them apart: each into the window a strictly decreasing
        # integer sequence from top to t_min allows, then below its predecessor
        ts = [min(max(t, self.t_min + num_steps - 1 - i), top - i) for i, t in enumerate(ts)]
        for i in range(1, num_steps):
            ts[i] = min(ts[i], ts[i - 1] - 1)
        return ts

    def _logsnr_timesteps(self, num_steps: int) -> list[int]:
        table = self.base.table(self.base.num_timesteps).double()
        if self.space == "alpha":
            lam = (table / (1 - table**2).clamp_min(0).sqrt()).log()
        else:
            lam = -table.log()
        lam = lam.numpy()
        top, lo = self.top, self.t_min
        head = []
        if not np.isfinite(lam[top]):
            head, top, num_steps = [top], top - 1, num_steps - 1
        if num_steps == 1:
            return [*head, lo]
        targets = np.linspace(lam[top], lam[lo], num_steps)
        # lambda falls as t grows: the nearest table entry by binary search on the reversed table
        ordered = lam[lo : top + 1][::-1]
        idx = np.clip(np.searchsorted(ordered, targets), 1, len(ordered) - 1)
        nearer_left = targets - ordered[idx - 1] < ordered[idx] - targets
        idx = np.where(nearer_left, idx - 1, idx)
        return head + [int(top - i) for i in idx]

    def grid(self, num_steps: int) -> Grid:
        """The table's levels at :meth:`timesteps`, then the clean end (alpha 1 / sigma 0)."""
        ts = self.timesteps(num_steps)
        table = self.base.table(self.base.num_timesteps)
        levels = table[torch.tensor(ts)]
        values = torch.cat([levels, levels.new_full([1], self.base.terminal)])
        return Grid(self.space, values, tuple(ts))

    def table(self, num_idx: int = 1000) -> torch.Tensor:
        """The base schedule's table."""
        return self.base.table(num_idx)


class DiffusersGridWarning(UserWarning):
    """diffusers' timestep grid for the requested step count is broken, and is reproduced as is:
    it does not end at the clean sample, or it has a different number of steps than asked."""


BetaSchedule = Literal["linear", "scaled_linear", "squaredcos_cap_v2"]
TimestepSpacing = Literal["linspace", "leading", "trailing"]
_BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_SPACINGS = ("linspace", "leading", "trailing")


def _cosine_betas(num_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Glide's cosine schedule: beta_i = min(1 - f((i+1)/T) / f(i/T), max_beta),
    f(t) = cos((t + 0.008) / 1.008 * pi / 2)^2, in Python floats, stored as float32."""

    def f(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - f((i + 1) / num_timesteps) / f(i / num_timesteps), max_beta) for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float32)


@functools.lru_cache(maxsize=16)
def _diffusers_alphas_cumprod(s: DiffusersDDPM) -> torch.Tensor:
    """The scheduler's ``alphas_cumprod`` (shared: callers must not modify it)."""
    n = s.num_train_timesteps
    if s.beta_schedule == "linear":
        betas = torch.linspace(s.beta_start, s.beta_end, n, dtype=torch.float32)
    elif s.beta_schedule == "scaled_linear":
        betas = torch.linspace(s.beta_start**0.5, s.beta_end**0.5, n, dtype=torch.float64) ** 2
    else:
        betas = _cosine_betas(n)
    ac = torch.cumprod(1.0 - betas, dim=0)
    ac = ac / (s.shift_scale + (1 - s.shift_scale) * ac)
    if s.rescale_betas_zero_snr:
        a = ac.sqrt()
        a0, a_t = a[0].clone(), a[-1].clone()
        a = (a - a_t) * (a0 / (a0 - a_t))
        ac = a**2
    return ac


@dataclass(frozen=True)
class DiffusersDDPM(Schedule):
    """diffusers' CogVideoX schedulers (``CogVideoXDDIMScheduler``, ``CogVideoXDPMScheduler``):
    their table and ``set_timesteps`` grid, with their float64 scalars, in alpha space.

    Table: ``ac = cumprod(1 - beta)`` (float64 for ``scaled_linear``, float32 otherwise), SNR
    shift ``ac / (shift + (1 - shift) ac)``, then, with ``rescale_betas_zero_snr``, the whole
    ``num_train_timesteps`` table renormalised ``sqrt(ac) -> (sqrt(ac) - a_T) a_0 / (a_0 - a_T)``
    (so ``ac[T-1] = 0``) before any timestep is picked, and no snapping. Step ``i`` runs the
    network at timestep ``t_i`` (level ``ac[t_i]``) and moves to ``ac[t_i - T // n]``, or to the
    final value (1 with ``set_alpha_to_one``, else ``ac[0]``) once that index is negative.

    As in diffusers, the move target is often not the next step's level (trailing spacing, any
    ``n`` not dividing 1000), and some step counts are broken outright: the grid ends at
    timestep 0 instead of the clean end (7, 11, ...), or has ``n + 1`` steps, the last at
    timestep -1, read as ``ac[-1] = 0`` (61, 103, ...). Those are reproduced with a
    :class:`DiffusersGridWarning`. The defaults are CogVideoX-5B's ``scheduler_config.json``;
    :meth:`from_diffusers_config` reads any such file.
    """

    shift_scale: float = 1.0
    rescale_betas_zero_snr: bool = True
    timestep_spacing: TimestepSpacing = "trailing"
    beta_start: float = 0.00085
    beta_end: float = 0.0120
    beta_schedule: BetaSchedule = "scaled_linear"
    steps_offset: int = 0
    set_alpha_to_one: bool = True
    num_train_timesteps: int = 1000
    space: ClassVar[Space] = "alpha"

    def __post_init__(self) -> None:
        shift = self.shift_scale
        if isinstance(shift, bool) or not (isinstance(shift, (int, float)) and math.isfinite(shift)) or shift <= 0:
            raise ValueError(f"shift_scale must be a finite number > 0, got {self.shift_scale!r}")
        if self.beta_schedule not in _BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {list(_BETA_SCHEDULES)}, got {self.beta_schedule!r}")
        if self.timestep_spacing not in _SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {list(_SPACINGS)}, got {self.timestep_spacing!r}")
        _check_ddpm(self.beta_start, self.beta_end, self.num_train_timesteps)
        if isinstance(self.steps_offset, bool) or not isinstance(self.steps_offset, int) or self.steps_offset < 0:
            raise ValueError(f"steps_offset must be an integer >= 0, got {self.steps_offset!r}")
        for name in ("rescale_betas_zero_snr", "set_alpha_to_one"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @classmethod
    def from_diffusers_config(cls, config: Mapping[str, Any]) -> DiffusersDDPM:
        """The schedule of a diffusers ``scheduler_config.json`` (a dict). Missing keys take the
        diffusers classes' own defaults (shift 3, no rescale, leading spacing); keys that do not
        change the schedule (``prediction_type``, ``clip_sample``, ...) are ignored here."""
        if config.get("trained_betas") is not None:
            raise ValueError("trained_betas is not supported: give beta_start, beta_end and beta_schedule")
        return cls(
            shift_scale=float(config.get("snr_shift_scale", 3.0)),
            rescale_betas_zero_snr=bool(config.get("rescale_betas_zero_snr", False)),
            timestep_spacing=config.get("timestep_spacing", "leading"),
            beta_start=float(config.get("beta_start", 0.00085)),
            beta_end=float(config.get("beta_end", 0.0120)),
            beta_schedule=config.get("beta_schedule", "scaled_linear"),
            steps_offset=int(config.get("steps_offset", 0)),
            set_alpha_to_one=bool(config.get("set_alpha_to_one", True)),
            num_train_timesteps=int(config.get("num_train_timesteps", 1000)),
        )

    def alphas_cumprod(self) -> torch.Tensor:
        """The scheduler's ``alphas_cumprod`` table, in its own dtype."""
        return _diffusers_alphas_cumprod(self).clone()

    def timesteps(self, num_steps: int) -> np.ndarray:
        """``set_timesteps(num_steps)``'s int64 timesteps, high noise first (may hold -1, and
        ``num_steps + 1`` entries, for trailing spacing)."""
        _check_steps(num_steps, self.num_train_timesteps)
        total = self.num_train_timesteps
        if self.timestep_spacing == "linspace":
            return np.linspace(0, total - 1, num_steps).round()[::-1].copy().astype(np.int64)
        if self.timestep_spacing == "leading":
            ratio = total // num_steps
            return (np.arange(0, num_steps) * ratio).round()[::-1].copy().astype(np.int64) + self.steps_offset
        ratio = total / num_steps
        return np.round(np.arange(total, 0, -ratio)).astype(np.int64) - 1

    def grid(self, num_steps: int) -> Grid:
        """diffusers' steps for ``num_steps``: ``values`` the float32 alphas at the timesteps then
        the last step's target, ``ddpm`` the exact per-step ``alphas_cumprod``. Warns
        (:class:`DiffusersGridWarning`) when diffusers' grid is broken for this step count."""
        ts = [int(t) for t in self.timesteps(num_steps)]
        total = self.num_train_timesteps
        if max(ts) >= total:
            raise ValueError(
                f"{self.timestep_spacing} spacing with steps_offset={self.steps_offset} reaches timestep {max(ts)}, "
                f"beyond the table's {total} entries (diffusers fails there too)"
            )
        ac = _diffusers_alphas_cumprod(self)
        final = torch.tensor(1.0) if self.set_alpha_to_one else ac[0]
        jump = total // num_steps
        prev = [t - jump for t in ts]
        ac_t = torch.stack([ac[t] for t in ts])  # negative t wraps, as diffusers' indexing does
        ac_next = torch.stack([ac[p] if p >= 0 else final.to(ac.dtype) for p in prev])
        steps = DDPMSteps(ac_t, ac_next, tuple(p < 0 for p in prev))
        values = torch.cat([ac_t, ac_next[-1:]]).sqrt().to(torch.float32)
        self._warn_if_broken(num_steps, ts, prev, ac_next)
        return Grid(
            "alpha",
            values,
            tuple(ts),
            ddpm=steps,
            requested_steps=num_steps if len(ts) != num_steps else None,
        )

    def _warn_if_broken(self, num_steps: int, ts: list[int], prev: list[int], ac_next: torch.Tensor) -> None:
        problems = []
        if len(ts) != num_steps:
            problems.append(f"it makes {len(ts)} steps, not the {num_steps} asked for")
        early = [i for i in range(len(ts) - 1) if prev[i] < 0]
        if early:
            problems.append(
                f"step {early[0] + 1} already goes to the clean end, yet {len(ts) - early[0] - 1} more step(s) follow"
            )
        ac = _diffusers_alphas_cumprod(self)
        for i, t in enumerate(ts):
            if t < 0:
                problems.append(
                    f"step {i + 1} runs the network at timestep {t} and reads alphas_cumprod[{t}] = "
                    f"{float(ac[t]):.6g} (timestep {t % self.num_train_timesteps}'s level)"
                )
        if prev[-1] >= 0:
            problems.append(
                f"it does not end clean: the last step goes to timestep {prev[-1]} "
                f"(alphas_cumprod {float(ac_next[-1]):.6g}), not to the clean end, and the DPM scheduler "
                "adds noise on that step"
            )
        if problems:
            warnings.warn(
                f"diffusers' {self.timestep_spacing} timesteps for {num_steps} steps are broken and are reproduced "
                f"as diffusers runs them: {'; '.join(problems)}",
                DiffusersGridWarning,
                stacklevel=3,
            )

    def table(self, num_idx: int = 1000) -> torch.Tensor:
        """``sqrt(alphas_cumprod)`` as float32, entry ``t`` the level at timestep ``t``."""
        if num_idx != self.num_train_timesteps:
            raise ValueError(
                f"num_idx must equal num_train_timesteps={self.num_train_timesteps} for a DiffusersDDPM table, "
                f"got {num_idx!r}"
            )
        return _diffusers_alphas_cumprod(self).sqrt().to(torch.float32)


@dataclass(frozen=True)
class TruncatedSchedule(Schedule):
    """Video to video (SDEdit): ``base``'s grid for ``n`` steps, only its last steps, so that
    sampling starts from the clean latent noised to the level where ``strength`` in ``(0, 1]``
    puts it (``strength`` 1: the whole grid). The kept steps are the base grid's own (levels,
    timesteps, scheduler scalars); the denoiser's table is the base's.

    * ``rule="ceil"`` (the ``sat`` profile): keep ``K = ceil(strength * S)`` of the grid's ``S``
      steps (``strength * S`` rounded to 1e-9 first, at least 1); step-count formulas (DynamicCFG's
      ``S - timestep``) see ``S``, so a kept step has the guidance scale it has in the whole run;
    * ``rule="diffusers"`` (``CogVideoXVideoToVideoPipeline.get_timesteps``, ``n`` the requested
      steps): ``init = min(int(n * strength), n)``, ``t_start = n - init``, the timesteps from
      ``t_start`` on; step-count formulas see ``init`` (the pipeline's ``num_inference_steps``).
      ``init = 0`` (``strength < 1 / n``) keeps no step: ``ValueError``.
    """

    base: Schedule = ZeroSNRDDPM(1.0)
    strength: float = 1.0
    rule: Literal["ceil", "diffusers"] = "ceil"

    def __post_init__(self) -> None:
        if not isinstance(self.base, Schedule):
            raise ValueError(f"base must be a Schedule, got {type(self.base).__name__}")
        s = self.strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s <= 1:
            raise ValueError(f"strength must be a number in (0, 1], got {s!r}")
        if self.rule not in ("ceil", "diffusers"):
            raise ValueError(f"rule must be 'ceil' or 'diffusers', got {self.rule!r}")

    @property
    def space(self) -> Space:  # type: ignore[override]
        return self.base.space

    def kept(self, num_steps: int, base_grid: Grid | None = None) -> tuple[int, int | None]:
        """``(t_start, count)``: the first kept step of the base grid for ``num_steps`` steps
        (``base_grid``, when already made), and the step count the formulas see (None: the kept grid's own)."""
        g = self.base.grid(num_steps) if base_grid is None else base_grid
        full = g.requested_steps or g.num_steps
        if self.rule == "diffusers":
            init = min(int(num_steps * self.strength), num_steps)
            if init == 0:
                raise ValueError(
                    f"strength {self.strength} keeps no step of {num_steps} (diffusers keeps int(steps x strength)): "
                    f"give strength >= {1 / num_steps:.4g} or more steps"
                )
            start = num_steps - init
            return start, (init if g.num_steps - start != init else None)
        keep = max(1, math.ceil(round(self.strength * g.num_steps, 9)))
        start = g.num_steps - keep
        return start, (full if start > 0 or full != g.num_steps else None)

    def grid(self, num_steps: int) -> Grid:
        g = self.base.grid(num_steps)
        start, count = self.kept(num_steps, g)
        if start == 0 and count == g.requested_steps:
            return g
        ddpm = g.ddpm
        if ddpm is not None:
            ddpm = DDPMSteps(ddpm.alphas_cumprod[start:], ddpm.alphas_cumprod_next[start:], ddpm.to_final[start:])
        ts = None if g.timesteps is None else tuple(g.timesteps[start:])
        return Grid(g.space, g.values[start:].clone(), ts, ddpm, count)

    def table(self, num_idx: int = 1000) -> torch.Tensor:
        return self.base.table(num_idx)
