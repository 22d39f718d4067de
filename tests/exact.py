"""Closed-form denoisers for tests: data x0 ~ N(mu, s^2) per element has an exact posterior mean."""

from __future__ import annotations

import torch

from cogsample.sampling.denoiser import Level, to_space
from cogsample.sampling.scalings import EDMScaling, VideoScaling, VScalingEDMNoise


def posterior_mean(x: torch.Tensor, level: Level, mu: float, s: float) -> torch.Tensor:
    """E[x0 | x] at ``level``: VE x = x0 + sigma eps, VP x = a x0 + sqrt(1 - a^2) eps."""
    v = level.value.double()
    if level.space == "sigma":
        return (mu + s**2 * (x.double() - mu) / (s**2 + v**2)).to(x.dtype)
    return (mu + v * s**2 * (x.double() - v * mu) / (v**2 * s**2 + 1 - v**2)).to(x.dtype)


class GaussianModel:
    """``model(x, level)`` for samplers: the exact x0 prediction."""

    def __init__(self, mu: float = 0.5, s: float = 1.0):
        self.mu, self.s, self.calls = mu, s, 0

    def __call__(self, x, level):
        self.calls += 1
        return posterior_mean(x, level, self.mu, self.s)


class GaussianNetwork:
    """``net(x_in, t, context)`` that predicts what ``scaling`` expects, so that the Denoiser built
    with that scaling returns the exact posterior mean at the level the network reads from ``t``."""

    def __init__(self, scaling, table: torch.Tensor | None = None, mu: float = 0.5, s: float = 1.0):
        self.scaling, self.table, self.mu, self.s = scaling, table, mu, s

    def level_from_t(self, t: torch.Tensor) -> torch.Tensor:
        t = t[:1].double()
        if isinstance(self.scaling, VideoScaling):
            return self.table.double()[t.long()]
        if isinstance(self.scaling, (EDMScaling, VScalingEDMNoise)):
            return (4 * t).exp()
        if self.table is not None and not t.is_floating_point():
            return self.table.double()[t.long()]
        return t

    def __call__(self, x_in, t, context, ofs=None):
        space = self.scaling.space
        value = self.level_from_t(t)
        c_skip, c_out, c_in = (c.view(1, 1, 1, 1, 1) for c in self.scaling(value))
        x = x_in.double() / c_in
        target = posterior_mean(x, Level(value, space, 0), self.mu, self.s)
        return ((target - c_skip * x) / c_out).to(x_in.dtype)


def to_alpha(level: Level) -> float:
    return float(to_space(level.value.double(), level.space, "alpha"))
