"""EDM Euler and Heun (euler.py): churn draws only inside its window and is deterministic at zero."""

import torch
from conftest import bits_equal

from cogsample.sampling.noise import GlobalNoise, ReplayNoise
from cogsample.sampling.schedules import EDM

from .helpers import SHAPE, run_sampler


def test_churn_zero_euler_is_deterministic_and_churn_draws_in_window():
    grid = EDM().grid(10)
    x = torch.randn(SHAPE)
    a, _ = run_sampler("euler", grid, x, noise=ReplayNoise([]), s_churn=0.0)
    b, _ = run_sampler("euler", grid, x, noise=GlobalNoise(), s_churn=0.0)
    assert bits_equal(a, b)
    replay = ReplayNoise([torch.randn(SHAPE, dtype=torch.float32) for _ in range(10)])
    run_sampler("euler", grid, x, noise=replay, s_churn=1.0, s_tmin=0.05, s_tmax=10.0)
    in_window = sum(0.05 <= float(s) <= 10.0 for s in grid.values[:-1])
    assert replay.position == in_window > 0
