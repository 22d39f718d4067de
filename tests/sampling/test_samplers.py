"""Sampler properties: determinism, batch independence, convergence on exact Gaussian data,
ancestral steps as the reference computes them, and free composition with schedules."""

import pytest
import torch
from conftest import assert_reference, bits_equal
from exact import GaussianModel

from cogsample.sampling.noise import GlobalNoise, ReplayNoise, SeededNoise
from cogsample.sampling.samplers import SAMPLERS, _ancestral, get_sampler, lms_coefficients
from cogsample.sampling.schedules import EDM, LegacyDDPM, ZeroSNRDDPM

SHAPE = (1, 4, 16, 16, 16)  # 16384 values


class VFromX0:
    """``model(x, level) -> v`` for the samplers that consume v: v = (a x - x0) / sqrt(1 - a^2)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, level):
        a = level.value.double()
        x0 = self.model(x, level).double()
        return ((a * x.double() - x0) / (1 - a * a).sqrt()).to(torch.float32)


def _run(name, grid, x, noise=None, model=None, **opts):
    spec = SAMPLERS[name]
    model = model or GaussianModel()
    if "image" in spec.needs:
        opts.setdefault("image", torch.zeros_like(x))
        opts.setdefault("edit_ratio", 0.0)  # from pure noise: an unconditional sample
    fn_model = model if spec.consumes == "x0" else VFromX0(model)
    return spec.fn(fn_model, x, grid, noise or SeededNoise([7] * x.shape[0]), **opts), model


def _compatible(name, schedule):
    return not (SAMPLERS[name].space == "sigma" and isinstance(schedule, ZeroSNRDDPM))


SCHEDULES = {"zsnr1": ZeroSNRDDPM(1.0), "zsnr3": ZeroSNRDDPM(3.0), "legacy": LegacyDDPM(), "edm": EDM()}


@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_with_every_schedule_samples_the_data(name, sched):
    """x0 ~ N(0.5, 1): the output has the data's mean and spread, whatever the pairing."""
    schedule = SCHEDULES[sched]
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    if not _compatible(name, schedule):
        with pytest.raises(ValueError, match="sigma space"):
            _run(name, schedule.grid(100), x)
        return
    out, model = _run(name, schedule.grid(100), x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert abs(out.mean().item() - 0.5) < 0.05
    # first-order samplers still under-disperse a little at 100 steps
    assert 0.9 < out.std().item() < 1.1
    calls = SAMPLERS[name].calls_per_step
    steps = 100
    assert steps <= model.calls <= calls * steps


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if not s.stochastic] + ["euler", "heun"])
def test_deterministic_samplers_draw_nothing_and_repeat_exactly(name):
    grid = (EDM() if SAMPLERS[name].space == "sigma" else ZeroSNRDDPM(1.0)).grid(12)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    no_draws = ReplayNoise([])
    a, _ = _run(name, grid, x.clone(), noise=no_draws)
    b, _ = _run(name, grid, x.clone(), noise=no_draws)
    assert bits_equal(a, b) and no_draws.position == 0


def test_churn_zero_euler_is_deterministic_and_churn_draws_in_window():
    grid = EDM().grid(10)
    x = torch.randn(SHAPE)
    a, _ = _run("euler", grid, x, noise=ReplayNoise([]), s_churn=0.0)
    b, _ = _run("euler", grid, x, noise=GlobalNoise(), s_churn=0.0)
    assert bits_equal(a, b)
    replay = ReplayNoise([torch.randn(SHAPE, dtype=torch.float32) for _ in range(10)])
    _run("euler", grid, x, noise=replay, s_churn=1.0, s_tmin=0.05, s_tmax=10.0)
    in_window = sum(0.05 <= float(s) <= 10.0 for s in grid.values[:-1])
    assert replay.position == in_window > 0


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if s.stochastic])
def test_a_sample_does_not_depend_on_the_batch_around_it(name):
    grid = (EDM() if SAMPLERS[name].space == "sigma" else ZeroSNRDDPM(1.0)).grid(8)
    seeds = [11, 12, 13]
    x = SeededNoise(seeds).initial((3, *SHAPE[1:]))
    opts = {"s_churn": 1.0} if name in ("euler", "heun", "sdedit_euler") else {}
    batch, _ = _run(name, grid, x, noise=SeededNoise(seeds), **opts)
    alone, _ = _run(name, grid, x[1:2], noise=SeededNoise(seeds[1:2]), **opts)
    assert bits_equal(batch[1:2], alone)


def test_seeded_noise_is_per_sample():
    a = SeededNoise([5, 6]).initial((2, 3, 4))
    b = SeededNoise([6]).initial((1, 3, 4))
    assert torch.equal(a[1:], b) and not torch.equal(a[0], a[1])


@pytest.mark.parametrize(
    "sched, eta, key",
    [(EDM(), 1.0, "ancestral_edm_default_n10_eta1"), (LegacyDDPM(), 0.6, "ancestral_legacy_n10_eta0.6")],
)
def test_ancestral_step_matches_reference(schedules, sched, eta, key):
    s = sched.grid(10).values
    down, up = _ancestral(s[:-1], s[1:], eta)
    assert_reference(
        (down, schedules[f"{key}/sigma_down"], "sigma_down"), (up, schedules[f"{key}/sigma_up"], "sigma_up")
    )


def test_eta_zero_is_deterministic_euler():
    grid = EDM().grid(10)
    x = torch.randn(SHAPE)
    a, _ = _run("euler_ancestral", grid, x, noise=ReplayNoise([torch.zeros(SHAPE)] * 10), eta=0.0)
    b, _ = _run("euler", grid, x)
    torch.testing.assert_close(a, b)


def test_lms_coefficients_are_exact_adams_weights():
    sigmas = [10.0, 5.0, 2.0, 1.0, 0.0]
    c = lms_coefficients(sigmas, 3)
    assert c[0] == pytest.approx([-5.0])  # first order: the step length
    # any order: the weights integrate constants exactly
    for i, row in enumerate(c):
        assert sum(row) == pytest.approx(sigmas[i + 1] - sigmas[i])
    # order 2 at step 1: integral of the linear interpolant through (s1, 1), (s0, 0) over [s1, s2]
    assert c[1][0] == pytest.approx(((2 - 10) ** 2 - (5 - 10) ** 2) / (2 * (5 - 10)))


def test_vpsde_fixed_frames_are_kept():
    grid = ZeroSNRDDPM(1.0).grid(6)
    x = torch.randn(SHAPE)
    out, _ = _run("vpsde_dpmpp_2m", grid, x, fixed_frames=2)
    assert bits_equal(out[:, :2], x[:, :2])
    with pytest.raises(ValueError, match="fixed_frames must be an integer in"):
        _run("vpsde_dpmpp_2m", grid, x, fixed_frames=4)


def test_dpm_solvers_converge_at_second_order():
    """On exact Gaussian data the deterministic 2M solvers' error falls ~4x per doubling of steps."""
    x = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for name, schedule in [("dpmpp_2m", EDM()), ("heun", EDM())]:
        ref, _ = _run(name, schedule.grid(400), x)
        errs = [(_run(name, schedule.grid(n), x)[0] - ref).abs().max().item() for n in (20, 40)]
        assert errs[1] < errs[0] / 2.5, (name, errs)


def test_get_sampler_accepts_sat_names_and_rejects_others():
    assert get_sampler("VPSDEDPMPP2MSampler").name == "vpsde_dpmpp_2m"
    assert get_sampler("Image2VideoDDIMSampler").name == "video_ddim"
    with pytest.raises(ValueError, match=r"sampler must be one of .* got 'nope'"):
        get_sampler("nope")


def test_options_come_from_signatures():
    assert SAMPLERS["euler"].options() == {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
    assert SAMPLERS["vpsde_dpmpp_2m"].options() == {"fixed_frames": 0, "sdedit": False}
    assert "image" not in SAMPLERS["sdedit_euler"].options()
