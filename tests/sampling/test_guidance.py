"""Guidance scales (DynamicCFG exactly as the reference applies it) and the CFG batch."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogsample.sampling.denoiser import Level
from cogsample.sampling.guidance import (
    CFG,
    Conditioning,
    DynamicCFG,
    GuidanceInterval,
    GuidedModel,
    NoGuidance,
    guidance_scales,
)
from cogsample.sampling.schedules import ZeroSNRDDPM


@pytest.mark.parametrize("n", [10, 22, 50])
def test_dynamic_cfg_reference_step_index(schedules, n):
    grid = ZeroSNRDDPM(1.0).grid(n)
    g = DynamicCFG(6, 5, n)
    scales = guidance_scales(g, grid.timesteps, n)
    assert scales == schedules[f"dyncfg_scale6_exp5_n{n}/scale_as_applied"].tolist()
    k = [g.index(i, t, n) for i, t in enumerate(grid.timesteps)]
    assert k == schedules[f"dyncfg_scale6_exp5_n{n}/step_index_as_applied"].tolist()


@pytest.mark.parametrize("n", [10, 22, 50])
def test_dynamic_cfg_loop_counter_is_the_intended_ramp(schedules, n):
    g = DynamicCFG(6, 5, n, step_index="loop")
    want = schedules[f"dyncfg_scale6_exp5_n{n}/scale_at_true_step_index"].tolist()
    assert [g.scale_at(i, None, n) for i in range(n + 1)] == want
    assert want[0] == 1.0 and want[-1] == 7.0


def test_dynamic_cfg_hits_exactly_one_at_step_6_of_22():
    grid = ZeroSNRDDPM(1.0).grid(22)
    assert guidance_scales(DynamicCFG(6, 5, 22), grid.timesteps, 22)[6] == 1.0


def test_reference_step_index_needs_timesteps():
    with pytest.raises(ValueError, match="step_index='loop'"):
        guidance_scales(DynamicCFG(6, 5, 10), None, 10)


def test_non_integer_exp_with_negative_index_is_rejected_up_front():
    grid = ZeroSNRDDPM(1.0).grid(10)
    with pytest.raises(ValueError, match="exp must be an integer"):
        guidance_scales(DynamicCFG(6, 2.5, 10), grid.timesteps, 10)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CFG(float("nan")), "scale must be a finite number"),
        (lambda: DynamicCFG(6, 5, 0), "num_steps must be an integer >= 1, got 0"),
        (lambda: DynamicCFG(6, 5, 10, step_index="counter"), "step_index must be"),
    ],
)
def test_bad_guidance_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


class RowRecorder:
    """A denoiser stub: returns x + mean(context) per row and remembers what it saw."""

    def __init__(self):
        self.seen = []

    def __call__(self, x, level, context, image_latents=None, ofs=None):
        self.seen.append((x, context, image_latents, ofs))
        return x + context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)


def _level(step=0):
    return Level(torch.tensor([0.5]), "alpha", step, 999)


def test_cfg_batches_uncond_rows_first_and_shares_image_and_ofs():
    b = 2
    rec = RowRecorder()
    ctx = torch.full((b, 3, 4), 2.0)
    img = torch.randn(b, 3, 16, 2, 2)
    ofs = torch.tensor([2.0])
    model = GuidedModel(rec, CFG(3.0), Conditioning(ctx, None, img, ofs), num_steps=1)
    x = torch.zeros(b, 3, 16, 2, 2)
    out = model(x, _level())
    xs, context, image, seen_ofs = rec.seen[0]
    assert xs.shape[0] == 2 * b and torch.equal(context[:b], torch.zeros_like(ctx)) and torch.equal(context[b:], ctx)
    assert torch.equal(image[:b], img) and torch.equal(image[b:], img) and seen_ofs is ofs
    assert torch.allclose(out, torch.full_like(x, 0 + 3.0 * 2.0))


def test_no_guidance_runs_the_conditional_rows_only():
    rec = RowRecorder()
    ctx = torch.ones(2, 3, 4)
    model = GuidedModel(rec, NoGuidance(), Conditioning(ctx), num_steps=1)
    model(torch.zeros(2, 1, 16, 2, 2), _level())
    assert rec.seen[0][0].shape[0] == 2 and rec.seen[0][1] is ctx


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3), st.floats(-5, 5), st.integers(0, 2**31 - 1))
def test_cfg_at_scale_one_gives_the_conditional_prediction(b, shift, seed):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randn(b, 3, 4, generator=g) + shift
    unc = torch.randn(b, 3, 4, generator=g)
    x = torch.randn(b, 2, 16, 2, 2, generator=g)
    rec = RowRecorder()
    guided = GuidedModel(rec, CFG(1.0), Conditioning(ctx, unc), num_steps=1)(x, _level())
    cond_only = GuidedModel(RowRecorder(), NoGuidance(), Conditioning(ctx), num_steps=1)(x, _level())
    # u + 1*(c - u) equals c up to one rounding (the reference evaluates it in full, so do we)
    torch.testing.assert_close(guided, cond_only)


def test_prediction_dtype_cast_happens_before_guidance():
    rec = RowRecorder()
    ctx = torch.ones(1, 2, 4, dtype=torch.float64)
    model = GuidedModel(rec, CFG(2.0), Conditioning(ctx), num_steps=1, prediction_dtype=torch.float32)
    out = model(torch.zeros(1, 1, 16, 1, 1, dtype=torch.float64), _level())
    assert out.dtype == torch.float32


def test_dynamic_cfg_formula():
    g = DynamicCFG(6, 5, 50)
    k = 50 - 979
    assert g.scale_at(1, 979, 50) == 1 + 6 * (1 - math.cos(math.pi * (k / 50) ** 5)) / 2


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 200), st.floats(0, 20), st.sampled_from([1, 2, 3, 5, 7]))
def test_dynamic_cfg_stays_between_one_and_one_plus_scale(n, scale, exp):
    """Both step indices give scales in [1, 1 + scale]; the loop ramp rises monotonically."""
    grid = ZeroSNRDDPM(1.0).grid(min(n, 1000))
    ref = guidance_scales(DynamicCFG(scale, exp, n), grid.timesteps, grid.num_steps)
    loop = guidance_scales(DynamicCFG(scale, exp, n, step_index="loop"), None, grid.num_steps)
    for s in ref + loop:
        assert 1 - 1e-12 <= s <= 1 + scale + 1e-12
    assert loop == sorted(loop) and loop[0] == 1.0


def test_guidance_interval_is_conditional_only_outside():
    inner = DynamicCFG(6, 5, 10, step_index="loop")
    scales = guidance_scales(GuidanceInterval(inner, 0.3, 0.8), None, 10)
    full = guidance_scales(inner, None, 10)
    assert scales == [None, None, None, *full[3:8], None, None]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"start": -0.1}, "start"),
        ({"end": 1.5}, "end"),
        ({"start": 0.5, "end": 0.5}, "start must be < end"),
        ({"guidance": "cfg"}, "guidance must be"),
    ],
)
def test_bad_guidance_interval(kw, match):
    args = {"guidance": CFG(3.0), **kw}
    with pytest.raises(ValueError, match=match):
        GuidanceInterval(**args)


def test_skip_unit_scale_runs_conditional_rows_only_where_the_scale_is_exactly_one():
    grid = ZeroSNRDDPM(1.0).grid(22)
    guidance = DynamicCFG(6, 5, 22)  # the reference's index hits 1.0 exactly at step 6
    ctx = torch.ones(2, 3, 4)
    x = torch.zeros(2, 1, 16, 2, 2)
    rows = []
    for skip in (False, True):
        rec = RowRecorder()
        model = GuidedModel(
            rec, guidance, Conditioning(ctx), num_steps=22, timesteps=grid.timesteps, skip_unit_scale=skip
        )
        for i in range(22):
            model(x, Level(torch.ones(1), "alpha", i, grid.timesteps[i]))
        rows.append([seen[0].shape[0] for seen in rec.seen])
        assert model.forwards == sum(r // 2 for r in rows[-1])
    assert rows[0] == [4] * 22
    assert rows[1] == [4] * 6 + [2] + [4] * 15


# ----------------------------------------------------------------------------------------------
# guidance by noise level


def _by_level(scale=6.0):
    from cogsample.sampling.guidance import DynamicCFG, LevelGuidance
    from cogsample.sampling.schedules import ZeroSNRDDPM

    anchor = ZeroSNRDDPM(1.0).grid(50).timesteps
    return LevelGuidance(DynamicCFG(scale, 5.0, 50), anchor), anchor


def test_level_guidance_is_the_reference_scales_on_the_reference_grid():
    from cogsample.sampling.guidance import DynamicCFG, guidance_scales

    level, anchor = _by_level()
    assert guidance_scales(level, anchor, 50) == guidance_scales(DynamicCFG(6.0, 5.0, 50), anchor, 50)


def test_level_guidance_gives_a_finer_grid_the_scale_of_the_anchor_step_holding_each_level():
    from cogsample.sampling.guidance import guidance_scales
    from cogsample.sampling.schedules import ZeroSNRDDPM

    level, anchor = _by_level()
    ref = level.anchor_scales()
    fine = ZeroSNRDDPM(1.0).grid(500).timesteps
    got = guidance_scales(level, fine, 500)
    for t, s in zip(fine, got, strict=True):
        j = max(i for i, a in enumerate(anchor) if a >= t)  # the anchor step whose (a[j+1], a[j]] holds t
        assert s == ref[j], (t, j)


def test_level_guidance_on_a_coarse_grid_averages_the_scales_its_steps_cover():
    from cogsample.sampling.guidance import guidance_scales
    from cogsample.sampling.schedules import SpacedDDPM, ZeroSNRDDPM

    level, _ = _by_level()
    ref = level.anchor_scales()
    coarse = SpacedDDPM(ZeroSNRDDPM(1.0), "logsnr").grid(8).timesteps
    got = guidance_scales(level, coarse, 8)
    assert all(min(ref) <= s <= max(ref) for s in got)
    assert got[-1] == ref[-1]  # the step that returns the clean estimate: the anchor's last scale
    # a constant rule stays constant whatever the grid
    from cogsample.sampling.guidance import CFG, LevelGuidance

    const = LevelGuidance(CFG(4.5), level.anchor)
    assert guidance_scales(const, coarse, 8) == [4.5] * 8


def test_level_guidance_composes_with_an_interval_and_round_trips_through_a_config():
    from cogsample.sampling.config import SamplingConfig
    from cogsample.sampling.guidance import GuidanceInterval, guidance_scales
    from cogsample.sampling.schedules import SpacedDDPM, ZeroSNRDDPM

    level, _ = _by_level()
    grid = SpacedDDPM(ZeroSNRDDPM(1.0), "logsnr").grid(10).timesteps
    inner = guidance_scales(level, grid, 10)
    cut = guidance_scales(GuidanceInterval(level, 0.4, 1.0), grid, 10)
    assert cut == [None] * 4 + inner[4:]
    cfg = SamplingConfig(sampler="vpode_dpmpp_2m", steps=10, guidance=level)
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg


def test_level_guidance_refuses_what_it_cannot_carry():
    from cogsample.sampling.guidance import CFG, LevelGuidance, guidance_scales

    level, _ = _by_level()
    with pytest.raises(ValueError, match="carries the scales by DDPM timestep; this grid has none"):
        guidance_scales(level, None, 10)
    with pytest.raises(ValueError, match="strictly decreasing"):
        LevelGuidance(CFG(2.0), (10, 20))
    with pytest.raises(ValueError, match="plain Guidance rule"):
        LevelGuidance(level, (10,))
