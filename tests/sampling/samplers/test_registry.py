"""The registry (registry.py): names, reference names and options read from the signatures."""

import pytest

from cogsample.sampling.samplers import SAMPLERS, get_sampler


def test_get_sampler_accepts_sat_names_and_rejects_others():
    assert get_sampler("VPSDEDPMPP2MSampler").name == "vpsde_dpmpp_2m"
    assert get_sampler("Image2VideoDDIMSampler").name == "video_ddim"
    with pytest.raises(ValueError, match=r"sampler must be one of .* got 'nope'"):
        get_sampler("nope")


def test_options_come_from_signatures():
    assert SAMPLERS["euler"].options() == {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
    assert SAMPLERS["vpsde_dpmpp_2m"].options() == {"fixed_frames": 0, "sdedit": False}
    assert "image" not in SAMPLERS["sdedit_euler"].options()
