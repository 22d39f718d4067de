"""Linear multistep (Adams-Bashforth) in sigma space: x' = x + sum_j c_ij d_{i-j} over the latest
``order`` derivatives d = (x - D)/sigma, the weights integrating their Lagrange interpolant exactly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..noise import NoiseSource
from ..schedules import Grid
from .common import Callback, Model, Tensor, emit, per_step
from .sigma_space import denoise, scale_init, sigma_levels, to_d

__all__ = ["lms_coefficients", "sample_lms"]


def lms_coefficients(sigmas: Sequence[float], order: int) -> list[list[float]]:
    """Linear multistep weights: ``c[i][j] = integral_{s_i}^{s_{i+1}} prod_{m != j} (tau - s_{i-m}) /
    (s_{i-j} - s_{i-m}) dtau`` over the ``min(i+1, order)`` latest points, exact by Gauss-Legendre.

    (The reference integrates numerically with scipy's quad at epsrel 1e-4; its values differ from
    these by up to ~1e-7 relative.)
    """
    s = [float(v) for v in sigmas]
    nodes, weights = np.polynomial.legendre.leggauss(max(order, 1))
    out = []
    for i in range(len(s) - 1):
        k = min(i + 1, order)
        a, b = s[i], s[i + 1]
        tau = (b - a) / 2 * nodes + (a + b) / 2
        row = []
        for j in range(k):
            basis = np.ones_like(tau)
            for m in range(k):
                if m != j:
                    basis *= (tau - s[i - m]) / (s[i - j] - s[i - m])
            row.append(float((b - a) / 2 * np.sum(weights * basis)))
        out.append(row)
    return out


@torch.no_grad()
def sample_lms(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    *,
    order: int = 4,
    coefficients: Sequence[Sequence[float]] | None = None,
    callback: Callback = None,
) -> Tensor:
    """Linear multistep (reference ``LinearMultistepSampler``): x += sum_j c[i][j] d_{i-j}, the
    Adams-Bashforth weights of :func:`lms_coefficients` (or given ``coefficients``)."""
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    s, s_host = sigma_levels(grid, x)
    coeffs = lms_coefficients(s_host, order) if coefficients is None else [list(c) for c in coefficients]
    if len(coeffs) != grid.num_steps or any(len(coeffs[i]) < min(i + 1, order) for i in range(grid.num_steps)):
        raise ValueError(f"coefficients must have {grid.num_steps} rows of min(i+1, order) entries")
    s_b = per_step(s, x)
    x = scale_init(x, s)
    ds: list[Tensor] = []
    for i in range(grid.num_steps):
        denoised = denoise(model, x, s, grid, i)
        ds.append(to_d(x, denoised, s_b[i]))
        if len(ds) > order:
            ds.pop(0)
        k = min(i + 1, order)
        x = x + sum(c * d for c, d in zip(coeffs[i][:k], reversed(ds), strict=True))
        emit(callback, i, x, denoised)
    return x
