"""What every sampler family shares: the callables' types, per-step coefficient vectors, the step's
timestep, the callback and the eta/s_noise check. (The levels a model is called at are in
:mod:`.sigma_space` and :mod:`.alpha_space`.)

Every helper of the package evaluates the reference's expression operation for operation in the dtype
it is given; none re-associates arithmetic or moves a cast, so a sampler built from them stays bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..denoiser import Level
from ..schedules import Grid

Tensor = torch.Tensor
Model = Callable[[Tensor, Level], Tensor]
Callback = Callable[[int, Tensor, Tensor], None] | None

EPS_ZERO = 1e-14  # the reference's "all noise levels are 0" test


def per_step(v: Tensor, x: Tensor) -> Tensor:
    """(S,) -> (S, 1, ..., 1) so that ``v[i]`` broadcasts against ``x`` and keeps its dtype in promotion."""
    return v.reshape(-1, *([1] * x.ndim))


def timestep(grid: Grid, i: int) -> int | None:
    """The DDPM index of step ``i``, None for a grid without one."""
    return None if grid.timesteps is None else grid.timesteps[i]


def emit(callback: Callback, i: int, x: Tensor, denoised: Tensor) -> None:
    """``callback(i, x, denoised)`` after step ``i``, when there is one."""
    if callback is not None:
        callback(i, x, denoised)


def validate_eta(eta: float, s_noise: float) -> None:
    """eta >= 0 and s_noise >= 0 (NaN fails both)."""
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    if not s_noise >= 0:
        raise ValueError(f"s_noise must be >= 0, got {s_noise!r}")
