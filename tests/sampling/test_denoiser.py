"""The denoiser wrapper: every scaling, in its own and in the other coordinate system."""

import pytest
import torch
from exact import GaussianNetwork, posterior_mean

from cogsample.sampling.denoiser import Denoiser, DenoiserConfig, Level, to_space
from cogsample.sampling.scalings import EDMScaling, EpsScaling, VideoScaling, VScaling, VScalingEDMNoise
from cogsample.sampling.schedules import LegacyDDPM, ZeroSNRDDPM

SIGMA_SCALINGS = [EDMScaling(0.5), EpsScaling(), VScaling(), VScalingEDMNoise()]


def _x(dtype=torch.float64):
    return torch.randn(2, 3, 16, 4, 4, dtype=dtype, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("scaling", SIGMA_SCALINGS, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("space", ["sigma", "alpha"])
def test_sigma_scalings_give_the_exact_posterior_in_both_spaces(scaling, space):
    den = Denoiser(GaussianNetwork(scaling), DenoiserConfig(scaling))
    sigma = torch.tensor([2.5], dtype=torch.float64)
    level = Level(to_space(sigma, "sigma", space), space, 0)
    x = _x()
    got = den(x, level, torch.zeros(2, 1, 4))
    torch.testing.assert_close(got, posterior_mean(x, level, 0.5, 1.0))


@pytest.mark.parametrize("space", ["alpha", "sigma"])
def test_video_scaling_with_a_table_finds_the_timestep_itself(space):
    table_sched = ZeroSNRDDPM(1.0)
    table = table_sched.table()
    net = GaussianNetwork(VideoScaling(), table)
    den = Denoiser(net, DenoiserConfig(VideoScaling(), table=table_sched))
    alpha = table[500:501].double()  # on the table: snapping is exact
    level = Level(to_space(alpha, "alpha", space), space, 0, timestep=None)
    x = _x()
    got = den(x, level, torch.zeros(2, 1, 4))
    torch.testing.assert_close(got, posterior_mean(x, level, 0.5, 1.0))


def test_quantized_c_noise_is_the_table_index():
    seen = []

    def net(x, t, context, ofs=None):
        seen.append(t)
        return torch.zeros_like(x)

    den = Denoiser(net, DenoiserConfig(EpsScaling(), table=LegacyDDPM(), quantize_c_noise=True))
    sigma = LegacyDDPM().table()[321:322]
    den(_x(torch.float32), Level(sigma, "sigma", 0), torch.zeros(2, 1, 4))
    assert seen[0].dtype == torch.int64 and seen[0].tolist() == [321, 321]


def test_image_latents_are_appended_after_scaling_the_input():
    seen = []

    def net(x, t, context, ofs=None):
        seen.append((x, ofs))
        return x[:, :, :16]

    den = Denoiser(net, DenoiserConfig(EpsScaling()))
    x, img, ofs = _x(torch.float32), torch.ones(2, 3, 16, 4, 4), torch.tensor([2.0])
    den(x, Level(torch.tensor([3.0]), "sigma", 0), torch.zeros(2, 1, 4), img, ofs)
    net_in, got_ofs = seen[0]
    assert net_in.shape[2] == 32 and torch.equal(net_in[:, :, 16:], img) and got_ofs is ofs
    torch.testing.assert_close(net_in[:, :, :16], x / (3.0**2 + 1) ** 0.5)


def test_quantize_needs_a_table():
    with pytest.raises(ValueError, match="quantize_c_noise=True needs a table"):
        DenoiserConfig(EpsScaling(), quantize_c_noise=True)
    with pytest.raises(ValueError, match="num_idx must be an integer >= 2, got 1"):
        DenoiserConfig(EpsScaling(), num_idx=1)
