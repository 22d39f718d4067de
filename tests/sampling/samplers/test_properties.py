"""Properties of every sampler: determinism, batch independence, convergence on exact Gaussian data
and free composition with schedules."""

import pytest
import torch
from conftest import bits_equal

from cogsample.sampling.noise import ReplayNoise, SeededNoise
from cogsample.sampling.samplers import SAMPLERS
from cogsample.sampling.schedules import EDM, ZeroSNRDDPM

from .helpers import SCHEDULES, SHAPE, compatible, run_sampler


@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_with_every_schedule_samples_the_data(name, sched):
    """x0 ~ N(0.5, 1): the output has the data's mean and spread, whatever the pairing."""
    schedule = SCHEDULES[sched]
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    if not compatible(name, schedule):
        with pytest.raises(ValueError, match="sigma space"):
            run_sampler(name, schedule.grid(100), x)
        return
    out, model = run_sampler(name, schedule.grid(100), x)
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
    a, _ = run_sampler(name, grid, x.clone(), noise=no_draws)
    b, _ = run_sampler(name, grid, x.clone(), noise=no_draws)
    assert bits_equal(a, b) and no_draws.position == 0


@pytest.mark.parametrize("name", [n for n, s in SAMPLERS.items() if s.stochastic])
def test_a_sample_does_not_depend_on_the_batch_around_it(name):
    grid = (EDM() if SAMPLERS[name].space == "sigma" else ZeroSNRDDPM(1.0)).grid(8)
    seeds = [11, 12, 13]
    x = SeededNoise(seeds).initial((3, *SHAPE[1:]))
    opts = {"s_churn": 1.0} if name in ("euler", "heun", "sdedit_euler") else {}
    batch, _ = run_sampler(name, grid, x, noise=SeededNoise(seeds), **opts)
    alone, _ = run_sampler(name, grid, x[1:2], noise=SeededNoise(seeds[1:2]), **opts)
    assert bits_equal(batch[1:2], alone)


def test_seeded_noise_is_per_sample():
    a = SeededNoise([5, 6]).initial((2, 3, 4))
    b = SeededNoise([6]).initial((1, 3, 4))
    assert torch.equal(a[1:], b) and not torch.equal(a[0], a[1])


def test_dpm_solvers_converge_at_second_order():
    """On exact Gaussian data the deterministic 2M solvers' error falls ~4x per doubling of steps."""
    x = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for name, schedule in [("dpmpp_2m", EDM()), ("heun", EDM())]:
        ref, _ = run_sampler(name, schedule.grid(400), x)
        errs = [(run_sampler(name, schedule.grid(n), x)[0] - ref).abs().max().item() for n in (20, 40)]
        assert errs[1] < errs[0] / 2.5, (name, errs)
