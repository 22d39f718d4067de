"""Ancestral samplers (ancestral.py): sigma_up and sigma_down as the reference computes them, eta = 0 is Euler."""

import pytest
import torch
from conftest import assert_reference

from cogsample.sampling.noise import ReplayNoise
from cogsample.sampling.samplers.ancestral import _ancestral
from cogsample.sampling.schedules import EDM, LegacyDDPM

from .helpers import SHAPE, run_sampler


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
    a, _ = run_sampler("euler_ancestral", grid, x, noise=ReplayNoise([torch.zeros(SHAPE)] * 10), eta=0.0)
    b, _ = run_sampler("euler", grid, x)
    torch.testing.assert_close(a, b)
