"""DPM-Solver++(2M), ODE and SDE, in sigma space (t = -log sigma, float32 scalars) and in alpha space
(lambda = log(a / sqrt(1 - a^2)), CogVideoX's default sampler): x' = m1 x - m2 D_i (+ mn z) with the
multistep prediction D_i = (1 + 1/2r) D - (1/2r) D_prev, r = h_prev/h, after the first step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..noise import NoiseSource
from ..schedules import Grid
from .alpha_space import alpha_levels, log_snr, noise_ratio, predict
from .common import EPS_ZERO, Callback, Model, Tensor, emit, per_step, timestep
from .sigma_space import denoise, scale_init, sigma_levels

__all__ = ["sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_vpode_dpmpp_2m", "sample_vpsde_dpmpp_2m"]


def multistep_ratios(h: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """2M correction weights: r = h_{i-1}/h_i, (1 + 1/(2r), 1/(2r)); entry 0 unused."""
    h_last = torch.cat([h.new_full([1], float("nan")), t[1:] - t[:-1]])
    r = h_last / h
    return 1 + 1 / (2 * r), 1 / (2 * r)


def dpmpp_2m_update(
    x: Tensor,
    denoised: Tensor,
    old: Tensor | None,
    m: tuple[Tensor, Tensor, Tensor, Tensor],
    noise: NoiseSource | None,
) -> Tensor:
    """x' = m1 x - m2 D_i without the SDE's noise term: D_i = D on a first-order step (``old`` None),
    else m3 D - m4 D_old, before which an SDE (``noise`` given) makes and throws away one draw like x,
    as the reference does."""
    m1, m2, m3, m4 = m
    if old is None:
        d = denoised
    else:
        if noise is not None:
            noise.discard(x)
        d = m3 * denoised - m4 * old
    return m1 * x - m2 * d


@dataclass(frozen=True)
class TwoM:
    """A grid's 2M steps: per-step vectors (S, 1, ...) ``m`` = (m1, m2, m3, m4) and ``mn`` (SDE only)
    in the levels' dtype, and the host levels ``host`` whose zero entries end in a first-order step."""

    m: tuple[Tensor, Tensor, Tensor, Tensor]
    mn: Tensor | None
    host: np.ndarray

    @classmethod
    def of(
        cls,
        ratio: Tensor,
        h: Tensor,
        t: Tensor,
        x: Tensor,
        host: np.ndarray,
        *,
        sigma_next: Tensor | None,
        alpha_next: Tensor | None,
    ) -> TwoM:
        """h = t' - t; ODE (``sigma_next`` None): m1 = ratio, m2 = expm1(-h) [a']; SDE: m1 = ratio e^-h,
        m2 = expm1(-2h) [a'], mn = sigma' sqrt(1 - e^-2h); the factor [a'] in alpha space only
        (``alpha_next``); (m3, m4) of :func:`multistep_ratios`."""
        if sigma_next is None:
            m1, m2, mn = ratio, (-h).expm1(), None
        else:
            m1, m2 = ratio * (-h).exp(), (-2 * h).expm1()
            mn = per_step(sigma_next * (1 - (-2 * h).exp()) ** 0.5, x)
        if alpha_next is not None:
            m2 = m2 * alpha_next
        m3, m4 = multistep_ratios(h, t)
        return cls(tuple(per_step(c, x) for c in (m1, m2, m3, m4)), mn, host)

    def step(self, i: int, x: Tensor, denoised: Tensor, old: Tensor | None, noise: NoiseSource | None) -> Tensor:
        """Step i; first order on the first step and onto a level below 1e-14; then the SDE's + mn z."""
        first_order = old is None or self.host[i + 1] < EPS_ZERO
        x = dpmpp_2m_update(x, denoised, None if first_order else old, tuple(c[i] for c in self.m), noise)
        return x if noise is None else x + self.mn[i] * noise.draw(x)


def _dpmpp_2m_sigma(model: Model, x: Tensor, grid: Grid, noise: NoiseSource | None, callback: Callback) -> Tensor:
    """DPM-Solver++(2M) in sigma space, the SDE when ``noise`` is given; see the public wrappers."""
    s, s_host = sigma_levels(grid, x)
    t, t_next = s[:-1].log().neg(), s[1:].log().neg()
    h = t_next - t
    ratio = t_next.neg().exp() / t.neg().exp()
    two_m = TwoM.of(ratio, h, t, x, s_host, sigma_next=None if noise is None else s[1:], alpha_next=None)
    x = scale_init(x, s)
    old = None
    for i in range(grid.num_steps):
        denoised = denoise(model, x, s, grid, i)
        x = two_m.step(i, x, denoised, old, noise)
        old = denoised
        emit(callback, i, x, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, callback: Callback = None) -> Tensor:
    """DPM-Solver++(2M) in sigma space (reference ``DPMPP2MSampler``), t = -log sigma:
    x' = (sigma'/sigma) x - expm1(-h) D_i, D_i = (1 + 1/2r) D - (1/2r) D_prev after the first step."""
    return _dpmpp_2m_sigma(model, x, grid, None, callback)


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, callback: Callback = None
) -> Tensor:
    """SDE DPM-Solver++(2M) in sigma space (reference ``SDEDPMPP2MSampler``):
    x' = (sigma'/sigma) e^-h x - expm1(-2h) D_i + sigma' sqrt(1 - e^-2h) z."""
    return _dpmpp_2m_sigma(model, x, grid, noise, callback)


class _FixedFrames:
    """The first ``count`` frames of the input, put back before every step (re-noised to the step's
    level with a fresh draw when ``sdedit``) and, clean, at the end."""

    def __init__(self, x: Tensor, count: int, sdedit: bool, grid: Grid, dtype: torch.dtype) -> None:
        self.count, self.sdedit = count, sdedit
        self.prefix = x[:, :count]
        if sdedit:
            # the reference noises the fixed frames with the float32 schedule value
            a32 = grid.alphas().to(x.device)
            self.keep, self.spread = a32, per_step(((1 - a32**2) ** 0.5).to(dtype), x)

    def reset(self, x: Tensor, i: int, noise: NoiseSource | None) -> Tensor:
        head = self.keep[i] * self.prefix + noise.draw(self.prefix) * self.spread[i] if self.sdedit else self.prefix
        return torch.cat([head, x[:, self.count :]], dim=1)

    def restore(self, x: Tensor) -> Tensor:
        return torch.cat([self.prefix, x[:, self.count :]], dim=1)


def _vp_dpmpp_2m(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource | None,
    callback: Callback,
    fixed_frames: int = 0,
    sdedit: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) in alpha space with lambda = log(a / sqrt(1 - a^2)); see the public wrappers."""
    a = alpha_levels(grid, x)
    a_cur, a_next = a[:-1], a[1:]
    lam, lam_next = log_snr(a_cur**2), log_snr(a_next**2)
    h = lam_next - lam
    sigma_next = None if noise is None else (1 - a_next**2) ** 0.5
    ratio = noise_ratio(a_cur, a_next)
    two_m = TwoM.of(ratio, h, lam, x, a.cpu().numpy(), sigma_next=sigma_next, alpha_next=a_next)
    fixed = _FixedFrames(x, fixed_frames, sdedit, grid, a.dtype) if fixed_frames > 0 else None
    n = grid.num_steps
    old = None
    for i in range(n):
        if fixed is not None:
            x = fixed.reset(x, i, noise)
        denoised = predict(model, x, a, i, timestep(grid, i))
        if i == n - 1:
            x = denoised
        else:
            x = two_m.step(i, x, denoised, old, noise)
        old = denoised
        emit(callback, i, x, denoised)
    return x if fixed is None else fixed.restore(x)


def _validate_fixed(x: Tensor, fixed_frames: int) -> None:
    if isinstance(fixed_frames, bool) or not isinstance(fixed_frames, int) or not 0 <= fixed_frames < x.shape[1]:
        raise ValueError(f"fixed_frames must be an integer in [0, T={x.shape[1]}), got {fixed_frames!r}")


@torch.no_grad()
def sample_vpsde_dpmpp_2m(
    model: Model,
    x: Tensor,
    grid: Grid,
    noise: NoiseSource,
    *,
    fixed_frames: int = 0,
    sdedit: bool = False,
    callback: Callback = None,
) -> Tensor:
    """SDE DPM-Solver++(2M) in alpha space, CogVideoX's default (reference ``VPSDEDPMPP2MSampler``):
    x' = sqrt((1-a'^2)/(1-a^2)) e^-h x - expm1(-2h) a' D_i + sqrt(1-a'^2) sqrt(1-e^-2h) z,
    D_i = (1 + 1/2r) D - (1/2r) D_prev after the first step; the last step returns D.

    ``fixed_frames=F`` resets the first F frames to the input's before every step (re-noised to
    the step's level with a fresh draw when ``sdedit``) and puts the clean frames back at the end.
    """
    _validate_fixed(x, fixed_frames)
    return _vp_dpmpp_2m(model, x, grid, noise, callback, fixed_frames, sdedit)


@torch.no_grad()
def sample_vpode_dpmpp_2m(
    model: Model, x: Tensor, grid: Grid, noise: NoiseSource, *, callback: Callback = None
) -> Tensor:
    """Deterministic DPM-Solver++(2M) in alpha space (reference ``VPODEDPMPP2MSampler``):
    x' = sqrt((1-a'^2)/(1-a^2)) x - expm1(-h) a' D_i; the last step returns D."""
    return _vp_dpmpp_2m(model, x, grid, None, callback)
