"""Brownian noise: one Brownian path per sample, so that an SDE sampler's draws at any grid follow it.

In alpha space (``a`` the signal level, ``s = sqrt(1 - a^2)``, SNR ``u = a^2 / s^2``) the SDE
DPM-Solver++ step from ``a`` to ``a'`` adds ``s' sqrt(1 - exp(-2h)) z`` (``h`` the log-SNR step).
In the coordinate ``y = x a / s^2`` that noise is ``sqrt(u' - u) z``: a Brownian increment in SNR
time. So with ``z = (W(u') - W(u)) / sqrt(u' - u)`` for one fixed path ``W`` per sample, a coarse
grid's draws are exactly the sums of a finer grid's, and two step counts from the same initial noise
sample the same SDE solution: their per-sample distance is the solver's strong error, and it tends
to 0 as both refine. Without this coupling the draws of different grids are unrelated and only
distributions can be compared.

``W`` is a Brownian bridge tree over ``r = a^2`` in ``[0, R]`` (``R = 1 - 2^-20``, SNR up to about
1e6) with ``2^DEPTH`` leaves: a level is rounded to its leaf (a shift of at most ``2^-DEPTH`` in
``a^2``), and each node's normal comes from a generator seeded by the sample's seed and the node, so
``W`` is the same whatever grid asks and in whatever order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from .noise import NoiseSource, SeededNoise

Tensor = torch.Tensor

__all__ = ["BrownianNoise"]

DEPTH = 28
R_MAX = 1.0 - 2.0**-20


def _snr(leaf: int) -> float:
    r = R_MAX * leaf / 2**DEPTH
    return r / (1.0 - r)


def _node_seed(seed: int, lo: int, hi: int) -> int:
    digest = hashlib.blake2b(f"{seed}:{lo}:{hi}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class BrownianNoise(NoiseSource):
    """``initial`` as :class:`SeededNoise` (``seeds``); draw ``j`` is step ``j``'s Brownian increment
    between ``alphas[j]`` and ``alphas[j + 1]`` (the grid's signal levels, one draw per step: the
    SDE DPM-Solver++ samplers' pattern; :attr:`draws` counts them so a caller can check)."""

    def __init__(self, seeds: Sequence[int], alphas: Sequence[float] | Tensor):
        self.initial_noise = SeededNoise(seeds)
        self.seeds = self.initial_noise.seeds
        a = torch.as_tensor(alphas, dtype=torch.float64)
        self.leaves = [min(2**DEPTH, round(float(v) ** 2 / R_MAX * 2**DEPTH)) for v in a]
        self.draws = 0
        self._path: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}
        self._top: Tensor | None = None

    def initial(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        return self.initial_noise.initial(shape, dtype, device)

    def draw(self, like: Tensor) -> Tensor:
        j = self.draws
        if j + 1 >= len(self.leaves):
            raise ValueError(f"draw {j} asked of a Brownian path over {len(self.leaves) - 1} steps")
        self.draws += 1
        lo, hi = self.leaves[j], self.leaves[j + 1]
        if hi == lo:  # two levels closer than a leaf: an increment of its own, independent
            gen = torch.Generator().manual_seed(_node_seed(-1, j, lo))
            return torch.randn(like.shape, generator=gen, dtype=like.dtype).to(like.device)
        shape = tuple(like.shape[1:])
        w_lo, w_hi = self.at(lo, shape), self.at(hi, shape)
        z = (w_hi - w_lo) / (abs(_snr(hi) - _snr(lo)) ** 0.5)
        return (z if hi > lo else -z).to(device=like.device, dtype=like.dtype)

    def at(self, leaf: int, shape: tuple[int, ...]) -> Tensor:
        """``W`` at a leaf for every sample, ``(B, *shape)`` float64, by bisection from the root."""
        lo, hi = 0, 2**DEPTH
        w_lo, w_hi = self._root(shape)
        while leaf not in (lo, hi):
            mid = (lo + hi) // 2
            w_mid = self._bridge(lo, mid, hi, w_lo, w_hi, shape)
            lo, hi, w_lo, w_hi = (lo, mid, w_lo, w_mid) if leaf < mid else (mid, hi, w_mid, w_hi)
        return w_lo if leaf == lo else w_hi

    def _root(self, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        if self._top is None or tuple(self._top.shape[1:]) != shape:
            self._top = self._normals(-1, 0, shape) * _snr(2**DEPTH) ** 0.5
        return torch.zeros_like(self._top), self._top

    def _bridge(self, lo: int, mid: int, hi: int, w_lo: Tensor, w_hi: Tensor, shape: tuple[int, ...]) -> Tensor:
        """W(mid) given W(lo) and W(hi): linear in SNR time plus the bridge's own spread."""
        key = (lo, hi)
        hit = self._path.get(key)
        if hit is not None:
            return hit[1]
        u_lo, u_mid, u_hi = _snr(lo), _snr(mid), _snr(hi)
        frac = (u_mid - u_lo) / (u_hi - u_lo)
        spread = ((u_mid - u_lo) * (u_hi - u_mid) / (u_hi - u_lo)) ** 0.5
        w_mid = w_lo + frac * (w_hi - w_lo) + spread * self._normals(lo, hi, shape)
        if len(self._path) > 4 * DEPTH:  # keep the recent paths only: queries come in grid order
            self._path.clear()
        self._path[key] = (w_lo, w_mid)
        return w_mid

    def _normals(self, lo: int, hi: int, shape: tuple[int, ...]) -> Tensor:
        rows = [
            torch.randn(shape, generator=torch.Generator().manual_seed(_node_seed(s, lo, hi)), dtype=torch.float64)
            for s in self.seeds
        ]
        return torch.stack(rows)
