"""Higher-order multistep samplers in alpha space (not reference samplers): DPM-Solver++(3M), ODE and
SDE, and UniPC (bh2 predictor-corrector, order 1-3), from host float64 coefficients.

In log-SNR lambda = log(a/s), s = sqrt(1 - a^2), the probability-flow ODE has the exact solution
  x' = (s'/s) x + a' integral_0^h e^{-(h-u)} D(lambda + u) du,   h = lambda' - lambda,
and integral_0^h e^{-(h-u)} u^k/k! du = h^{k+1} phi_{k+1}(-h): a polynomial fit of D through past
predictions integrates in closed form. Every coefficient is a host float64 number computed before
the loop; the zero-SNR start (a = 0) has lambda = -inf and h = inf, and no past point there is used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..noise import NoiseSource
from ..schedules import Grid
from .alpha_space import alpha_levels, predict
from .common import Callback, Model, Tensor, emit, timestep, validate_eta

__all__ = ["sample_vp_unipc", "sample_vpode_dpmpp_3m", "sample_vpsde_dpmpp_3m"]


def _log_snr_host(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host float64 (a, s, lambda) of the grid's levels (as the float32 alphas the model sees)."""
    a = grid.alphas().double().numpy()
    s = np.sqrt(np.maximum(1.0 - a * a, 0.0))
    with np.errstate(divide="ignore"):
        lam = np.log(a) - np.log(s)  # -inf at a = 0, +inf at a = 1
    return a, s, lam


def _phi(k: int, z: float) -> float:
    """phi_k(z) = sum_j z^j / (j + k)!: phi_0 = e^z, phi_{k+1}(z) = (phi_k(z) - 1/k!)/z; at z = -inf
    the recursion gives phi_k = 0 (k >= 1) exactly, with no inf/inf."""
    if k == 0:
        return math.exp(z)
    if abs(z) < 1.0:
        # the recursion cancels catastrophically for small z; 30 terms leave < 1e-30 there
        return sum(z**j / math.factorial(j + k) for j in range(30))
    out = math.expm1(z) / z
    for j in range(1, k):
        out = (out - 1.0 / math.factorial(j)) / z
    return out


def _finite_history(lam: np.ndarray, i: int, most: int) -> int:
    """How many of the levels before ``i`` (newest first, at most ``most``) step ``i`` can extrapolate
    from: a prediction at a = 0 (lambda = -inf) is not a point to fit, and with an infinite step
    (from a = 0 or to a = 1) the ratios r = h_past/h degenerate, so such steps stay first order."""
    if not (math.isfinite(lam[i]) and math.isfinite(lam[i + 1])):
        return 0
    k = 0
    while k < most and i - 1 - k >= 0 and math.isfinite(lam[i - 1 - k]):
        k += 1
    return k


def _combine(x: Tensor, c_x: float, terms: Sequence[tuple[float, Tensor]]) -> Tensor:
    """c_x x + sum_j w_j D_j, skipping zero weights (x's dtype: Python scalars do not promote)."""
    out = x * c_x if c_x != 1.0 else x
    for w, d in terms:
        if w != 0.0:
            out = out + w * d
    return out


def _dpmpp_3m_coefficients(
    a: np.ndarray, s: np.ndarray, lam: np.ndarray, eta: float, s_noise: float
) -> list[tuple[float, tuple[float, float, float], float]]:
    """Per non-final step: (c_x, (w_0, w_1, w_2), c_z) with x' = c_x x + w_0 D + w_1 D_-1 + w_2 D_-2 + c_z z."""
    coef = []
    for i in range(len(a) - 2):
        h = lam[i + 1] - lam[i]
        h_eta = h * (1.0 + eta)
        a_n, s_n = float(a[i + 1]), float(s[i + 1])
        # (s'/s) e^{-eta h}; eta = 0 must not form 0 * inf on the zero-SNR step
        c_x = s_n / float(s[i]) * (math.exp(-eta * h) if eta > 0 else 1.0)
        w = [-a_n * math.expm1(-h_eta), 0.0, 0.0]
        c_z = s_n * math.sqrt(-math.expm1(-2.0 * eta * h)) * s_noise if eta > 0 else 0.0
        k = _finite_history(lam, i, 2)
        if k:
            phi_2 = h_eta * _phi(2, -h_eta)  # expm1(-h_eta)/h_eta + 1
            r0 = (lam[i] - lam[i - 1]) / h
            if k == 1:
                g = a_n * phi_2 / r0  # a' phi_2 (D - D_-1)/r0
                w[0], w[1] = w[0] + g, -g
            else:
                # phi_2/h_eta - 1/2; weight 1 on d2 as published (see sample_vpsde_dpmpp_3m)
                phi_3 = -h_eta * _phi(3, -h_eta)
                r1 = (lam[i - 1] - lam[i - 2]) / h
                # phi_2 d1 - phi_3 d2 = A d1_0 - B d1_1, d1_0 = (D - D_-1)/r0, d1_1 = (D_-1 - D_-2)/r1
                big_a = phi_2 * (1.0 + r0 / (r0 + r1)) - phi_3 / (r0 + r1)
                big_b = (phi_2 * r0 - phi_3) / (r0 + r1)
                w[0] += a_n * big_a / r0
                w[1] += -a_n * (big_a / r0 + big_b / r1)
                w[2] += a_n * big_b / r1
        coef.append((c_x, (w[0], w[1], w[2]), c_z))
    return coef


def _vp_dpmpp_3m(
    model: Model, x: Tensor, grid: Grid, noise: NoiseSource | None, eta: float, s_noise: float, callback: Callback
) -> Tensor:
    """DPM-Solver++(3M) in alpha space; see the public wrappers."""
    validate_eta(eta, s_noise)
    a_dev = alpha_levels(grid, x)
    coef = _dpmpp_3m_coefficients(*_log_snr_host(grid), eta, s_noise)
    stochastic = noise is not None and eta > 0
    n = grid.num_steps
    history: list[Tensor] = []  # past predictions, newest first
    for i in range(n):
        denoised = predict(model, x, a_dev, i, timestep(grid, i))
        if i == n - 1:
            x = denoised
        else:
            c_x, w, c_z = coef[i]
            x = _combine(x, c_x, list(zip(w, [denoised, *history], strict=False)))
            if stochastic:
                # drawn even at s_noise = 0, so that the stream does not depend on s_noise
                x = x + c_z * noise.draw(x)
        history = [denoised, *history][:2]
        emit(callback, i, x, denoised)
    return x


@torch.no_grad()
def sample_vpsde_dpmpp_3m(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
    callback: Callback = None,
) -> Tensor:
    """SDE DPM-Solver++(3M) in alpha space, h_eta = (1 + eta) h: x' = (s'/s) e^{-eta h} x
    - a' expm1(-h_eta) D + a' (phi_2 d1 - phi_3 d2) + s' sqrt(-expm1(-2 eta h)) s_noise z, with
    phi_2 = expm1(-h_eta)/h_eta + 1, phi_3 = phi_2/h_eta - 1/2 and d1, d2 the divided differences of
    the last three predictions (k-diffusion's ``dpmpp_3m_sde`` weights); lower order while fewer
    finite-lambda predictions exist; the last step returns D. One draw per non-final step if eta > 0.

    These published weights give the quadratic term half its Taylor weight (d2 ~ h^2 D''/2 needs
    2 phi_3), so the method is formally second order, with a smaller error than 2M; the exact
    third-order extrapolation is ``vp_unipc``'s order-3 predictor."""
    return _vp_dpmpp_3m(model, x, grid, noise, eta, s_noise, callback)


@torch.no_grad()
def sample_vpode_dpmpp_3m(
    model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, callback: Callback = None
) -> Tensor:
    """DPM-Solver++(3M) in alpha space, :func:`sample_vpsde_dpmpp_3m` at eta = 0 (no draws):
    x' = (s'/s) x - a' expm1(-h) D + a' (phi_2 d1 - phi_3 d2); the last step returns D."""
    return _vp_dpmpp_3m(model, x, grid, None, 0.0, 1.0, callback)


def _unipc_rhos(r: Sequence[float], h: float) -> np.ndarray:
    """Solve sum_k rho_k r_k^(m-1) = b_m, m = 1..len(r), b_m = m! (-h) phi_{m+1}(-h) / expm1(-h): the
    weights that make -expm1(-h) sum_k rho_k (D_k - D)/r_k integrate the Taylor terms of D exactly
    (B(h) = expm1(-h), "bh2"). At h = inf every b_m = 1."""
    if math.isinf(h):  # the limit: -h phi_{m+1}(-h) = phi_m(-h) - 1/m! -> -1/m!, expm1(-h) -> -1
        b = np.ones(len(r))
    else:
        b = np.array([math.factorial(m) * -h * _phi(m + 1, -h) / math.expm1(-h) for m in range(1, len(r) + 1)])
    vander = np.vander(np.asarray(r, dtype=np.float64), len(r), increasing=True).T
    return np.linalg.solve(vander, b)


def _unipc_weights(base: float, scale: float, rho: Sequence[float], r: Sequence[float]) -> list[float]:
    """[w_D, w_D-1, ...] of base D + sum_j g_j (D_j - D), g_j = scale rho_j / r_j, over the len(r) past D_j."""
    w = [base] + [0.0] * len(r)
    for j in range(len(r)):
        g = scale * rho[j] / r[j]
        w[0] -= g
        w[1 + j] += g
    return w


def _unipc_coefficients(
    a: np.ndarray, s: np.ndarray, lam: np.ndarray, order: int
) -> tuple[list[tuple[float, list[float]]], list[tuple[float, list[float], float]]]:
    """Per non-final step i: the predictor (c_x, [w_D, w_D-1, ...]) and the corrector
    (c_x, [w_D, w_D-1, ...], w_new), both from the corrected x at level i."""
    pred, corr = [], []
    for i in range(len(a) - 2):
        h = lam[i + 1] - lam[i]
        a_n = float(a[i + 1])
        c_x = float(s[i + 1] / s[i])
        base = -a_n * math.expm1(-h)
        b_h = math.expm1(-h)
        k = _finite_history(lam, i, order - 1)
        r = [(lam[i - 1 - j] - lam[i]) / h for j in range(k)]
        # x' = c_x x - a' expm1(-h) D - a' B(h) sum_j rho_j (D_j - D)/r_j
        w_p = _unipc_weights(base, -a_n * b_h, _unipc_rhos(r, h) if k else (), r)
        pred.append((c_x, w_p))
        # the corrector adds the new point at r = 1: one order more from the same history
        rho_c = _unipc_rhos([*r, 1.0], h)
        w_c = _unipc_weights(base, -a_n * b_h, rho_c, r)
        w_new = -a_n * b_h * rho_c[k]
        w_c[0] -= w_new
        corr.append((c_x, w_c, w_new))
    return pred, corr


@torch.no_grad()
def sample_vp_unipc(
    model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, order: int = 2, callback: Callback = None
) -> Tensor:
    """UniPC (Zhao et al. 2023), B(h) = expm1(-h), data prediction, in alpha space: UniP-p predictor
    x' = (s'/s) x - a' expm1(-h) D - a' B(h) sum_k rho_k (D_k - D)/r_k, r_k = (lambda_k - lambda)/h,
    over the last p = min(order, 1 + finite-lambda history) predictions, then UniC with the
    prediction at the new point (the next step's model call, r = 1) for one order more; the last
    step returns D (so its state is not corrected)."""
    if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= 3:
        raise ValueError(f"order must be an integer in [1, 3], got {order!r}")
    a_dev = alpha_levels(grid, x)
    pred, corr = _unipc_coefficients(*_log_snr_host(grid), order)
    n = grid.num_steps
    history: list[Tensor] = []  # past predictions, newest first, at predicted (uncorrected) states
    x_base = x  # the corrected state the last predictor started from
    for i in range(n):
        denoised = predict(model, x, a_dev, i, timestep(grid, i))
        if i == n - 1:
            x = denoised
        else:
            if i > 0:
                c_x, w_c, w_new = corr[i - 1]
                x = _combine(x_base, c_x, [(w_new, denoised), *zip(w_c, history, strict=False)])
            history = [denoised, *history][:order]
            x_base = x
            c_x, w_p = pred[i]
            x = _combine(x_base, c_x, list(zip(w_p, history, strict=False)))
        emit(callback, i, x, denoised)
    return x
