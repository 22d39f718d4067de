"""Scaling coefficients equal the reference's on its recorded grids."""

import pytest
import torch
from conftest import assert_reference

from cogsample.sampling.scalings import EDMScaling, EpsScaling, VideoScaling, VScaling, VScalingEDMNoise


@pytest.mark.parametrize("prefix, scaling", [("edm", EDMScaling(0.5)), ("eps", EpsScaling()), ("v", VScaling())])
def test_sigma_scalings(schedules, prefix, scaling):
    sigma = schedules["scaling_grid/sigma"]
    c_skip, c_out, c_in = scaling(sigma)
    assert_reference(
        (c_skip, schedules[f"scaling_grid/{prefix}_c_skip"], "c_skip"),
        (c_out, schedules[f"scaling_grid/{prefix}_c_out"], "c_out"),
        (c_in, schedules[f"scaling_grid/{prefix}_c_in"], "c_in"),
        (scaling.c_noise(sigma), schedules[f"scaling_grid/{prefix}_c_noise"], "c_noise"),
    )


def test_v_scaling_with_edm_noise(schedules):
    sigma = schedules["vscaling_edm_cnoise_grid/sigma"]
    s = VScalingEDMNoise()
    c_skip, c_out, c_in = s(sigma)
    got = {"c_skip": c_skip, "c_out": c_out, "c_in": c_in, "c_noise": s.c_noise(sigma)}
    assert_reference(*[(v, schedules[f"vscaling_edm_cnoise_grid/{k}"], k) for k, v in got.items()])


def test_video_scaling(schedules):
    alpha = schedules["scaling_grid/video_alpha"]
    c_skip, c_out, c_in = VideoScaling()(alpha)
    # its noise input is the DDPM index itself
    assert torch.equal(schedules["scaling_grid/video_idx"], schedules["scaling_grid/video_c_noise"])
    assert VideoScaling.uses_timestep and VideoScaling.space == "alpha"
    assert_reference(
        (c_skip, schedules["scaling_grid/video_c_skip"], "c_skip"),
        (c_out, schedules["scaling_grid/video_c_out"], "c_out"),
        (c_in, schedules["scaling_grid/video_c_in"], "c_in"),
    )


def test_edm_sigma_data_must_be_positive():
    with pytest.raises(ValueError, match="sigma_data must be > 0, got 0"):
        EDMScaling(0)
