"""DPM-Solver++(2M) (dpmpp.py): fixed frames are kept through VPSDE 2M."""

import pytest
import torch
from conftest import bits_equal

from cogsample.sampling.schedules import ZeroSNRDDPM

from .helpers import SHAPE, run_sampler


def test_vpsde_fixed_frames_are_kept():
    grid = ZeroSNRDDPM(1.0).grid(6)
    x = torch.randn(SHAPE)
    out, _ = run_sampler("vpsde_dpmpp_2m", grid, x, fixed_frames=2)
    assert bits_equal(out[:, :2], x[:, :2])
    with pytest.raises(ValueError, match="fixed_frames must be an integer in"):
        run_sampler("vpsde_dpmpp_2m", grid, x, fixed_frames=4)
