"""Schedules and denoiser tables equal the reference's arrays exactly."""

import itertools

import numpy as np
import pytest
import torch
from conftest import assert_reference

from cogsample.sampling.denoiser import Denoiser, DenoiserConfig
from cogsample.sampling.scalings import VideoScaling
from cogsample.sampling.schedules import EDM, Grid, LegacyDDPM, SpacedDDPM, ZeroSNRDDPM, ddpm_substeps

ZSNR = {
    "zsnr_shift1": ZeroSNRDDPM(1.0),
    "zsnr_shift3": ZeroSNRDDPM(3.0),
    "zsnr_shift3_keepstart": ZeroSNRDDPM(3.0, keep_start=True),
    "zsnr_shift3_postshift": ZeroSNRDDPM(3.0, post_shift=True),
}


@pytest.mark.parametrize("name", sorted(ZSNR))
@pytest.mark.parametrize("n", [10, 50])
def test_zero_snr_grid_and_timesteps(schedules, name, n):
    key = f"{name}_n{n}"
    grid = ZSNR[name].grid(n)
    assert grid.space == "alpha" and grid.num_steps == n
    assert grid.values[-1] == 1.0 and grid.values[0] == 0.0
    # the reference keeps timesteps ascending and pairs alpha[i] with timesteps[-(i+1)]
    assert list(grid.timesteps) == schedules[f"{key}/timesteps"].flip(0).tolist()
    assert_reference((grid.values[:-1], schedules[f"{key}/alpha_cumprod_sqrt"]))


@pytest.mark.parametrize("name", sorted(ZSNR))
def test_zero_snr_table(schedules, name):
    key = f"{name}_table1000/table"
    table = ZSNR[name].table(1000)
    assert table[999] == 0.0
    assert_reference((table, schedules[key]))


SNAPPED = [
    ("zsnr_shift1", 10),
    ("zsnr_shift1", 50),
    ("zsnr_shift3", 10),
    ("zsnr_shift3", 50),
    ("zsnr_shift3_keepstart", 10),
    ("zsnr_shift3_postshift", 10),
]


@pytest.mark.parametrize("name, n", SNAPPED)
def test_denoiser_snaps_to_the_recorded_table_entry(schedules, name, n):
    key = f"{name}_n{n}"
    den = Denoiser(lambda *a, **k: None, DenoiserConfig(VideoScaling(), table=ZSNR[name]))
    q, idx = den.snap(ZSNR[name].grid(n).values[:-1])
    assert torch.equal(idx, schedules[f"{key}/denoiser_quantized_index"])
    assert_reference((q, schedules[f"{key}/denoiser_quantized_alpha"]))


def test_snapping_picks_a_neighbour_of_the_renormalised_step(schedules):
    # the sub-sampled grid is renormalised with its own endpoints: step at timestep 99 -> entry 93
    assert schedules["zsnr_shift1_n10/timesteps"][0] == 99
    assert schedules["zsnr_shift1_n10/denoiser_quantized_index"][-1] == 93


@pytest.mark.parametrize("n", [10, 50])
def test_legacy_and_edm_sigmas(schedules, n):
    assert_reference(
        (LegacyDDPM().grid(n).values, schedules[f"legacy_n{n}/sigmas"], "legacy"),
        (EDM().grid(n).values, schedules[f"edm_default_n{n}/sigmas"], "edm"),
    )


def test_edm_sigma_max_700(schedules):
    assert_reference((EDM(0.002, 700.0, 7.0).grid(10).values, schedules["edm_sigmamax700_n10/sigmas"]))


def test_ddpm_substeps_are_trailing():
    assert ddpm_substeps(10).tolist() == [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]
    assert ddpm_substeps(50)[-1] == 999 and ddpm_substeps(50)[0] == 19


def test_full_length_grid_has_every_timestep():
    g = ZeroSNRDDPM(1.0).grid(1000)
    assert g.timesteps == tuple(range(999, -1, -1))
    assert torch.equal(g.values[:-1], ZeroSNRDDPM(1.0).table().flip(0))


def test_grid_conversions_meet_at_sigma_equals_sqrt_one_minus_a2_over_a():
    g = LegacyDDPM().grid(10)
    a = g.alphas()
    assert a[-1] == 1.0
    np.testing.assert_allclose(
        a[:-1].double().numpy(), (1 / (1 + g.values[:-1].double() ** 2).sqrt()).numpy(), rtol=1e-6
    )
    z = ZeroSNRDDPM(1.0).grid(10)
    assert torch.isinf(z.sigmas()[0]) and z.sigmas()[-1] == 0.0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ZeroSNRDDPM(0.0), "shift_scale must be a finite number > 0, got 0.0"),
        (lambda: ZeroSNRDDPM(-1.0), "shift_scale"),
        (lambda: ZeroSNRDDPM(float("nan")), "shift_scale"),
        (lambda: ZeroSNRDDPM(1.0).grid(0), "steps must be an integer >= 1, got 0"),
        (lambda: ZeroSNRDDPM(1.0).grid(1001), "at most num_timesteps=1000"),
        (lambda: EDM().grid(-3), "steps must be an integer >= 1, got -3"),
        (lambda: EDM(sigma_min=1.0, sigma_max=0.5), "sigma_min"),
        (lambda: LegacyDDPM(linear_start=0.0), "linear_start"),
        (lambda: Grid("sigma", torch.tensor([1.0])), "at least 2"),
    ],
)
def test_bad_schedule_parameters_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("spacing", ["uniform", "power", "logsnr"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 15, 50, 999, 1000])
def test_spaced_ddpm_timesteps_run_from_the_top_to_t_min_strictly_decreasing(spacing, n):
    ts = SpacedDDPM(spacing=spacing).timesteps(n)
    assert len(ts) == n and ts[0] == 999
    assert all(a > b for a, b in itertools.pairwise(ts))
    if n > 1:
        assert ts[-1] == 0


def test_spaced_ddpm_levels_are_the_base_table_entries_then_the_clean_end():
    base = ZeroSNRDDPM(1.0)
    s = SpacedDDPM(base, "power", 2.0)
    grid = s.grid(10)
    assert grid.space == "alpha" and grid.timesteps == tuple(s.timesteps(10))
    assert torch.equal(grid.values[:-1], base.table(1000)[list(grid.timesteps)]) and grid.values[-1] == 1.0
    assert grid.values[0] == 0.0
    legacy = SpacedDDPM(LegacyDDPM(), "uniform").grid(5)
    assert legacy.space == "sigma" and legacy.values[-1] == 0.0


def test_spaced_ddpm_spacings():
    assert SpacedDDPM(spacing="uniform").timesteps(4) == [999, 666, 333, 0]
    assert SpacedDDPM(spacing="power", rho=2.0).timesteps(5) == [999, 562, 250, 62, 0]
    # logsnr: after the zero-SNR level, equal steps of log(alpha/sigma) between t=998 and t=0
    base = ZeroSNRDDPM(1.0).table(1000).double()
    lam = (base / (1 - base**2).sqrt()).log()
    ts = SpacedDDPM(spacing="logsnr").timesteps(12)
    steps = [float(lam[b] - lam[a]) for a, b in itertools.pairwise(ts[1:])]
    assert ts[:2] == [999, 998] and max(steps) - min(steps) < 0.1 * (sum(steps) / len(steps))
    assert SpacedDDPM(spacing="logsnr", t_max=998, t_min=5).timesteps(6)[::5] == [998, 5]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"spacing": "karras"}, "spacing"),
        ({"rho": 0}, "rho"),
        ({"t_min": 999}, "t_min"),
        ({"t_max": 1000}, "t_max"),
        ({"t_max": 10, "t_min": 10}, "t_min"),
        ({"base": EDM()}, "base"),
    ],
)
def test_spaced_ddpm_rejects_bad_parameters(kw, match):
    with pytest.raises(ValueError, match=match):
        SpacedDDPM(**kw)


def test_spaced_ddpm_rejects_more_steps_than_timesteps():
    with pytest.raises(ValueError, match="steps"):
        SpacedDDPM(t_min=900).grid(101)
