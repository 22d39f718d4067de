"""Higher-order multistep samplers in alpha space (DPM-Solver++(3M), UniPC) on exact Gaussian data:
convergence against the closed-form probability-flow solution, the zero-SNR first step, the noise
stream, the SDE's sample statistics, option checks and the registry."""

import math

import numpy as np
import pytest
import torch
from conftest import bits_equal

from cogsample.cli.main import main
from cogsample.sampling.noise import NoiseSource, ReplayNoise, SeededNoise
from cogsample.sampling.samplers import (
    REFERENCE_NAMES,
    SAMPLERS,
    get_sampler,
    sample_vp_unipc,
    sample_vpode_dpmpp_3m,
    sample_vpsde_dpmpp_3m,
)
from cogsample.sampling.samplers.multistep import _log_snr_host, _unipc_coefficients, _unipc_rhos
from cogsample.sampling.schedules import Grid, ZeroSNRDDPM

M, TAU = 0.5, 0.6  # data x0 ~ N(M, TAU^2) per element


def gaussian_model(x, level):
    """The exact denoiser D(x, a) = m + a tau^2 (x - a m) / (a^2 tau^2 + 1 - a^2), in float64."""
    a = level.value.double()
    return (M + a * TAU**2 * (x.double() - a * M) / (a * a * TAU**2 + 1 - a * a)).to(x.dtype)


def ode_state(z, a):
    """The probability-flow ODE from unit noise z at a = 0: x(a) = a m + sqrt(a^2 tau^2 + 1 - a^2) z."""
    return a * M + math.sqrt(a * a * TAU**2 + 1 - a * a) * z


def exact_result(z, grid):
    """What a sampler returns without discretization error: D at the last level before the clean end,
    applied to the exact ODE state there."""
    a = grid.alphas().double()[-2:-1]
    return (M + a * TAU**2 * (ode_state(z, float(a)) - a * M) / (a * a * TAU**2 + 1 - a * a)).to(z.dtype)


def lambda_grid(steps, lo=-5.0, hi=2.5):
    """From a = 0, then steps - 1 levels uniform in lambda on [lo, hi], then the clean end: the same
    final level (and so the same exact answer) for every step count."""
    lam = np.linspace(lo, hi, steps - 1)
    a = 1 / np.sqrt(1 + np.exp(-2 * lam))
    return Grid("alpha", torch.tensor(np.concatenate([[0.0], a, [1.0]]), dtype=torch.float32))


Z = torch.randn(1, 4096, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
DETERMINISTIC = {
    "dpmpp_2m": ("vpode_dpmpp_2m", {}),
    "dpmpp_3m": ("vpode_dpmpp_3m", {}),
    "unipc_1": ("vp_unipc", {"order": 1}),
    "unipc_2": ("vp_unipc", {"order": 2}),
    "unipc_3": ("vp_unipc", {"order": 3}),
}


def error(key, grid, z=Z):
    name, opts = DETERMINISTIC[key]
    out = SAMPLERS[name].fn(gaussian_model, z.clone(), grid, ReplayNoise([]), **opts)
    assert torch.isfinite(out).all()
    return (out - exact_result(z, grid)).abs().max().item()


@pytest.fixture(scope="module")
def lambda_errors():
    return {key: [error(key, lambda_grid(n)) for n in (20, 40, 80)] for key in DETERMINISTIC}


# measured on this grid (steps 20, 40, 80): 2m 1.6e-2 4.3e-3 1.1e-3; 3m 1.5e-2 2.0e-3 4.0e-4;
# unipc-1 5.6e-2 1.3e-2 2.9e-3; unipc-2 1.8e-2 1.9e-3 2.3e-4; unipc-3 2.0e-3 1.1e-4 8.7e-6
@pytest.mark.parametrize(
    "key, rate",
    [
        ("dpmpp_2m", 1.7),
        # k-diffusion's 3M weights (phi_3 d2, d2 ~ h^2 D''/2) are formally second order: ~2.3 here
        ("dpmpp_3m", 1.8),
        ("unipc_1", 1.8),  # UniP-1 + UniC-1: second order
        ("unipc_2", 2.6),  # third order
        ("unipc_3", 3.2),  # fourth order, ~3.6 here
    ],
)
def test_error_falls_at_the_expected_order(lambda_errors, key, rate):
    errs = lambda_errors[key]
    rates = [math.log2(errs[k] / errs[k + 1]) for k in range(len(errs) - 1)]
    assert min(rates) > rate, (key, errs, rates)


@pytest.mark.parametrize("key, factor", [("dpmpp_3m", 0.6), ("unipc_2", 0.5), ("unipc_3", 0.1)])
def test_higher_order_beats_dpmpp_2m_at_equal_steps(lambda_errors, key, factor):
    """Resolved steps (h ~ 0.2 and 0.1): the smooth problem rewards order. At 20 steps (h ~ 0.4)
    UniPC-2 is still slightly behind 2M (1.8e-2 vs 1.6e-2), so that count is not compared."""
    for err, ref in zip(lambda_errors[key][1:], lambda_errors["dpmpp_2m"][1:], strict=True):
        assert err < factor * ref, (key, lambda_errors[key], lambda_errors["dpmpp_2m"])


def test_zero_snr_ddpm_grid_converges():
    """The CogVideoX grid: its last levels are evenly spaced in t, not lambda (steps of ~0.35 in
    lambda whatever n), which caps every method near first order there; measured at 40 steps
    2m 9.3e-3, 3m 1.5e-3, unipc-2 9.0e-3, unipc-3 2.1e-3."""
    grid = ZeroSNRDDPM(1.0).grid(40)
    errs = {key: error(key, grid) for key in ("dpmpp_2m", "dpmpp_3m", "unipc_2", "unipc_3")}
    assert all(e < 1.5e-2 for e in errs.values()), errs
    assert errs["dpmpp_3m"] < 0.5 * errs["dpmpp_2m"] and errs["unipc_3"] < 0.5 * errs["dpmpp_2m"], errs


def test_latents_keep_their_dtype_and_the_result_is_float32():
    """Float32 latents stay float32 and float64 ones float64; the last step returns D, which is
    float32 (the prediction's dtype), as with the 2M samplers."""
    grid = lambda_grid(40)
    for key in ("dpmpp_3m", "unipc_3"):
        name, opts = DETERMINISTIC[key]
        outs = []
        for z in (Z.float(), Z.clone()):
            seen = _steps(SAMPLERS[name].fn, grid, z, ReplayNoise([]), **opts)
            assert all(x.dtype == z.dtype for x, _ in seen[:-1]) and seen[-1][0].dtype == torch.float32
            outs.append(seen[-1][0])
        torch.testing.assert_close(outs[0], outs[1], atol=2e-6, rtol=0)


class CountingNoise(SeededNoise):
    def __init__(self, seeds):
        super().__init__(seeds)
        self.draws = 0

    def draw(self, like):
        self.draws += 1
        return super().draw(like)

    def discard(self, like):
        raise AssertionError("the multistep samplers never discard a draw")


def _steps(fn, grid, x, noise, **opts):
    """Every callback's (x, denoised), in order."""
    seen = []
    out = fn(gaussian_model, x, grid, noise, callback=lambda i, xi, d: seen.append((xi, d)), **opts)
    assert len(seen) == grid.num_steps and bits_equal(seen[-1][0], out)
    return seen


def test_first_step_from_zero_snr_is_finite_and_exact():
    """From a = 0 (lambda = -inf, h = inf): x' = s' x + a' D for the ODEs, a' D + s' z for the SDE."""
    grid = ZeroSNRDDPM(1.0).grid(10)
    a1 = grid.alphas().double()[1]
    s1 = (1 - a1 * a1).sqrt()
    d0 = torch.full_like(Z, M)  # D at a = 0 is the data mean
    for fn, opts in [(sample_vpode_dpmpp_3m, {}), (sample_vp_unipc, {"order": 3})]:
        seen = _steps(fn, grid, Z.clone(), ReplayNoise([]), **opts)
        assert all(torch.isfinite(x).all() and torch.isfinite(d).all() for x, d in seen)
        torch.testing.assert_close(seen[0][1], d0.float())
        torch.testing.assert_close(seen[0][0], s1 * Z + a1 * d0)
    draws = [torch.randn(Z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) for k in range(9)]
    seen = _steps(sample_vpsde_dpmpp_3m, grid, Z.clone(), ReplayNoise(draws))
    assert all(torch.isfinite(x).all() for x, _ in seen)
    torch.testing.assert_close(seen[0][0], a1 * d0 + s1 * draws[0])


def test_first_order_steps_are_the_2m_samplers_first_order_steps():
    """Steps 0 and 1 of a zero-SNR grid are first order (no finite-lambda history): the 3M step must
    be the existing 2M one, SDE at eta = 1 (same draws) and ODE at eta = 0."""
    grid = ZeroSNRDDPM(1.0).grid(8)
    for new, old in [("vpsde_dpmpp_3m", "vpsde_dpmpp_2m"), ("vpode_dpmpp_3m", "vpode_dpmpp_2m")]:
        a = _steps(SAMPLERS[new].fn, grid, Z.clone(), SeededNoise([5]))
        b = _steps(SAMPLERS[old].fn, grid, Z.clone(), SeededNoise([5]))
        for i in (0, 1):
            # the same step up to float32 rounding of D (the coefficients are computed differently)
            torch.testing.assert_close(a[i][0], b[i][0], rtol=0, atol=1e-7)
        assert not torch.allclose(a[2][0], b[2][0], rtol=0, atol=1e-4)  # then they differ


def test_unipc_coefficients_have_finite_limits():
    """h = inf (the step from a = 0): every b_m -> 1, so the order-1 corrector weight is 1 and the
    corrected first step is s' x + a' D(new point); small h: the weight -> 1/2."""
    assert _unipc_rhos([1.0], math.inf) == pytest.approx([1.0])
    assert _unipc_rhos([1.0], 1e-6) == pytest.approx([0.5], abs=1e-6)
    for n in (2, 3, 5, 50):
        a, s, lam = _log_snr_host(ZeroSNRDDPM(1.0).grid(n))
        for order in (1, 2, 3):
            pred, corr = _unipc_coefficients(a, s, lam, order)
            flat = [c for p in pred for c in (p[0], *p[1])] + [c for q in corr for c in (q[0], *q[1], q[2])]
            assert all(math.isfinite(c) for c in flat), (n, order)
            if n > 2:
                c_x, w_c, w_new = corr[0]
                assert c_x == pytest.approx(s[1]) and w_new == pytest.approx(a[1]) and w_c == pytest.approx([0.0])


@pytest.mark.parametrize("levels", [[0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.3, 0.8, 1.0], [0.0, 0.2, 0.5, 0.9, 1.0]])
def test_very_short_grids(levels):
    grid = Grid("alpha", torch.tensor(levels))
    for name in ("vpsde_dpmpp_3m", "vpode_dpmpp_3m", "vp_unipc"):
        for opts in [{}] if name != "vp_unipc" else [{"order": o} for o in (1, 2, 3)]:
            out = SAMPLERS[name].fn(gaussian_model, Z.clone(), grid, SeededNoise([3]), **opts)
            assert torch.isfinite(out).all()


def test_sde_draws_once_per_non_final_step_and_eta_zero_draws_none():
    grid = ZeroSNRDDPM(1.0).grid(12)
    noise = CountingNoise([1])
    sample_vpsde_dpmpp_3m(gaussian_model, Z.clone(), grid, noise)
    assert noise.draws == grid.num_steps - 1
    noise = CountingNoise([1])
    sample_vpsde_dpmpp_3m(gaussian_model, Z.clone(), grid, noise, s_noise=0.0)
    assert noise.draws == grid.num_steps - 1  # the stream does not depend on s_noise
    no_draws = ReplayNoise([])
    at_zero = sample_vpsde_dpmpp_3m(gaussian_model, Z.clone(), grid, no_draws, eta=0.0)
    ode = sample_vpode_dpmpp_3m(gaussian_model, Z.clone(), grid, no_draws)
    assert no_draws.position == 0 and bits_equal(at_zero, ode)
    sample_vp_unipc(gaussian_model, Z.clone(), grid, no_draws, order=3)
    assert no_draws.position == 0


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_sde_samples_have_the_data_statistics(eta):
    """Many samples, 50 steps: mean m and variance a^2 tau^4 / (a^2 tau^2 + s^2), the variance of
    D at the last level. Measured: var +3.4% (eta 1; the 2M SDE sampler gives +3.3%), +1.4% (eta 0.5)
    at 50 steps, halving with each doubling of steps; sampling error ~0.6%."""
    grid = ZeroSNRDDPM(1.0).grid(50)
    seeds = [1, 2, 3, 4]
    x = SeededNoise(seeds).initial((4, 16384))
    out = sample_vpsde_dpmpp_3m(gaussian_model, x, grid, SeededNoise(seeds), eta=eta)
    a = float(grid.alphas()[-2])
    var = a * a * TAU**4 / (a * a * TAU**2 + 1 - a * a)
    assert out.dtype == torch.float32
    assert abs(out.mean().item() - M) < 0.015
    assert abs(out.var().item() / var - 1) < 0.07


def test_sde_noise_matters():
    """The SDE at eta = 1 is not the ODE: its samples differ and they depend on the draws."""
    grid = ZeroSNRDDPM(1.0).grid(10)
    a = sample_vpsde_dpmpp_3m(gaussian_model, Z.clone(), grid, SeededNoise([1]))
    b = sample_vpsde_dpmpp_3m(gaussian_model, Z.clone(), grid, SeededNoise([2]))
    c = sample_vpode_dpmpp_3m(gaussian_model, Z.clone(), grid, SeededNoise([1]))
    assert (a - b).abs().max() > 0.1 and (a - c).abs().max() > 0.1


@pytest.mark.parametrize(
    "fn, opts, match",
    [
        (sample_vpsde_dpmpp_3m, {"eta": -0.1}, "eta must be >= 0, got -0.1"),
        (sample_vpsde_dpmpp_3m, {"eta": float("nan")}, "eta must be >= 0, got nan"),
        (sample_vpsde_dpmpp_3m, {"s_noise": -1.0}, "s_noise must be >= 0, got -1.0"),
        (sample_vp_unipc, {"order": 0}, r"order must be an integer in \[1, 3\], got 0"),
        (sample_vp_unipc, {"order": 4}, r"order must be an integer in \[1, 3\], got 4"),
        (sample_vp_unipc, {"order": 2.0}, r"order must be an integer in \[1, 3\], got 2.0"),
        (sample_vp_unipc, {"order": True}, r"order must be an integer in \[1, 3\], got True"),
    ],
)
def test_bad_options_raise(fn, opts, match):
    with pytest.raises(ValueError, match=match):
        fn(gaussian_model, Z.clone(), ZeroSNRDDPM(1.0).grid(4), ReplayNoise([]), **opts)


def test_registry():
    unipc = get_sampler("vp_unipc")
    assert unipc.space == "alpha" and not unipc.stochastic and unipc.options() == {"order": 2}
    sde, ode = get_sampler("vpsde_dpmpp_3m"), get_sampler("vpode_dpmpp_3m")
    assert sde.stochastic and not ode.stochastic
    assert sde.options() == {"eta": 1.0, "s_noise": 1.0} and ode.options() == {}
    for spec in (unipc, sde, ode):
        assert spec.reference == () and spec.prediction_dtype == torch.float32 and spec.consumes == "x0"
        assert spec.name not in REFERENCE_NAMES.values()
    assert get_sampler("VPSDEDPMPP2MSampler").name == "vpsde_dpmpp_2m"
    assert "" not in REFERENCE_NAMES
    with pytest.raises(ValueError, match="sampler must be one of"):
        get_sampler("")


def test_cli_lists_them_with_their_options(capsys):
    assert main(["samplers"]) == 0
    out = capsys.readouterr().out
    assert "vp_unipc" in out and "order=2" in out and "eta=1.0, s_noise=1.0" in out


class _Unused(NoiseSource):
    """A source that fails on any use: the deterministic samplers must not touch it."""

    def draw(self, like):
        raise AssertionError("drew noise")

    def discard(self, like):
        raise AssertionError("discarded noise")


def test_deterministic_samplers_never_touch_the_noise_source():
    grid = ZeroSNRDDPM(1.0).grid(6)
    for name, opts in DETERMINISTIC.values():
        SAMPLERS[name].fn(gaussian_model, Z.clone(), grid, _Unused(), **opts)
