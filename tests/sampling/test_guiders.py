"""The guidance combine rules: equal to diffusers' guiders on the same inputs, composing with every
sampler through the guided denoiser, fresh state per run, and the config round trip."""

import json
import logging

import pytest
import torch

from cogsample.reference.golden import ToyNetwork
from cogsample.sampling.calls import current_call
from cogsample.sampling.config import SamplingConfig, sample
from cogsample.sampling.guidance import Conditioning, DynamicCFG, GuidanceInterval
from cogsample.sampling.guiders import (
    APG,
    FDG,
    GUIDERS,
    MAG,
    PAG,
    SLG,
    CFGZeroStar,
    Tangential,
    laplacian_pyramid,
    make_guider,
    rebuild_from_pyramid,
)
from cogsample.sampling.noise import SeededNoise
from cogsample.sampling.samplers import SAMPLERS
from tests.sampling.configs import sampler_config

guiders = pytest.importorskip("diffusers.guiders")
logging.getLogger("diffusers.guiders.guider_utils").setLevel(logging.ERROR)  # "experimental" warnings

STEPS = 4


def _pairs(shape, n=STEPS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) for _ in range(n)]


def _theirs(guider, pairs):
    out = []
    for step, (u, c) in enumerate(pairs):
        guider.set_state(step, len(pairs), None)
        out.append(guider.forward(c, u).pred)
    return out


def _ours(rule, pairs, scale):
    state = rule.start()
    return [rule.combine(u, c, scale, u, step, state) for step, (u, c) in enumerate(pairs)]


def _equal(ours, theirs, tol=1e-6):
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(2, 3, 16, 4, 6), (2, 4, 8, 8)])
def test_cfg_zero_star_equals_diffusers(shape):
    pairs = _pairs(shape)
    theirs = _theirs(guiders.ClassifierFreeZeroStarGuidance(guidance_scale=5.0, zero_init_steps=1), pairs)
    ours = _ours(CFGZeroStar(zero_init=1), pairs, 5.0)
    assert (theirs[0] == 0).all()  # the zero-init step: GuidedModel returns zeros without a forward
    _equal(ours[1:], theirs[1:])


@pytest.mark.parametrize("eta, momentum, threshold", [(0.0, -0.5, 0.0), (0.3, 0.2, 40.0), (1.0, 0.0, 0.0)])
def test_apg_equals_diffusers_with_its_momentum_over_steps(eta, momentum, threshold):
    from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer

    pairs = _pairs((2, 3, 16, 4, 6))
    theirs = guiders.AdaptiveProjectedGuidance(
        guidance_scale=6.0,
        adaptive_projected_guidance_momentum=momentum or None,
        adaptive_projected_guidance_rescale=threshold,
        eta=eta,
    )
    theirs.momentum_buffer = MomentumBuffer(momentum) if momentum else None  # what its step-0 prepare does
    _equal(_ours(APG(eta, momentum, threshold), pairs, 6.0), _theirs(theirs, pairs))


def test_tangential_equals_diffusers():
    pairs = _pairs((2, 3, 16, 4, 6))
    _equal(
        _ours(Tangential(), pairs, 7.0), _theirs(guiders.TangentialClassifierFreeGuidance(guidance_scale=7.0), pairs)
    )


def test_mag_equals_diffusers_where_diffusers_runs():
    # diffusers' mambo_guidance norms with torch.norm over dims (1, 2): tokens (B, L, D) only
    pairs = _pairs((2, 24, 16))
    theirs = guiders.MagnitudeAwareGuidance(guidance_scale=6.0, alpha=2.0)
    _equal(_ours(MAG(alpha=2.0), pairs, 6.0), _theirs(theirs, pairs), tol=1e-5)
    # on latents the same formula, per sample
    (u, c), s = _pairs((2, 3, 16, 4, 6), 1)[0], 6.0
    r = (c - u).flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)
    want = u + (1 + (s - 1) * torch.exp(-2.0 * r)).view(-1, 1, 1, 1, 1) * (c - u)
    torch.testing.assert_close(MAG(alpha=2.0).combine(u, c, s, u, 0, None), want)


@pytest.mark.parametrize("parallel", [1.0, 0.3])
def test_fdg_equals_diffusers_on_images(parallel):
    pytest.importorskip("kornia")
    pairs = _pairs((2, 4, 16, 32))  # diffusers' (kornia's) pyramid: 4-D, power-of-two sizes
    theirs = guiders.FrequencyDecoupledGuidance(guidance_scales=[6.0, 3.5], parallel_weights=parallel)
    _equal(_ours(FDG(low=0.5, levels=2, parallel=parallel), pairs, 6.0), _theirs(theirs, pairs), tol=1e-5)


def test_fdg_pyramid_rebuilds_and_equal_scales_are_cfg():
    u, c = _pairs((2, 3, 16, 6, 10), 1)[0]  # odd halves: the pyramid keeps each level's size
    torch.testing.assert_close(rebuild_from_pyramid(laplacian_pyramid(c.flatten(0, 1), 3)).view_as(c), c)
    flat = FDG(low=1.0, levels=3).combine(u, c, 4.0, u, 0, None)
    torch.testing.assert_close(flat, u + 4.0 * (c - u), rtol=1e-5, atol=1e-5)
    assert FDG(low=0.5, levels=3).scales(5.0) == [5.0, 4.0, 3.0]
    with pytest.raises(ValueError, match="fdg levels=3 halves the 8x12 latent 2 times"):
        FDG(levels=3).check((1, 3, 16, 8, 12))


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (SLG, lambda **k: guiders.SkipLayerGuidance(skip_layer_guidance_layers=[0], **k)),
        (PAG, lambda **k: guiders.PerturbedAttentionGuidance(perturbed_guidance_layers=[0], **k)),
    ],
)
def test_perturbed_rules_equal_diffusers_where_cfg_runs(ours, theirs):
    """``u + s (c - u) + w (c - p)``, bit for bit, on the steps in the range (diffusers: after
    ``int(start n)``, before ``int(stop n)``; cogsample: ``begin <= i / n < end``: the same steps here)."""
    g = torch.Generator().manual_seed(3)
    triples = [tuple(torch.randn(2, 3, 16, 4, 6, generator=g) for _ in range(3)) for _ in range(10)]
    rule = ours(weight=2.0, begin=0.15, end=0.5)
    prefix = "skip_layer_guidance" if ours is SLG else "perturbed_guidance"
    settings = {f"{prefix}_{k}": v for k, v in (("scale", 2.0), ("start", 0.15), ("stop", 0.5))}
    guider = theirs(guidance_scale=5.0, **settings)
    for step, (u, c, p) in enumerate(triples):
        guider.set_state(step, len(triples), None)
        want = guider.forward(c, u, p).pred
        got = rule.combine(u, c, 5.0, u, step, None)
        if rule.perturbs(step, len(triples)):
            got = rule.add_perturbed(got, c, p)
        assert rule.perturbs(step, len(triples)) == (2 <= step <= 4)
        assert torch.equal(got, want), step
    # without CFG (a conditional-only step) cogsample keeps the weight: c + w (c - p)
    u, c, p = triples[0]
    assert torch.equal(rule.add_perturbed(c, c, p), c + 2.0 * (c - p))


def test_perturbed_rules_parse_layers_and_name_the_perturbation():
    assert make_guider("pag", {"layers": "1-3+7"}).perturbation.layers == (1, 2, 3, 7)
    assert make_guider("slg", {}).perturbation.kind == "blocks" and PAG().perturbation.kind == "attention"
    assert SLG().perturbation.indices(30) == (15,) and SLG(layers=(0, 29)).perturbation.indices(30) == (0, 29)
    with pytest.raises(ValueError, match=r"layers 30 are not blocks of this network: it has 30 \(indices 0 to 29\)"):
        SLG(layers=(30,)).perturbation.indices(30)
    assert not SLG(weight=0.0, begin=0.0, end=1.0).perturbs(3, 10)


@pytest.mark.parametrize("rule", sorted(GUIDERS))
def test_every_rule_is_the_conditional_branch_at_scale_one(rule):
    u, c = _pairs((2, 3, 16, 4, 6), 1)[0]
    g = make_guider(rule, {})
    assert torch.equal(g.combine(u, c, 1.0, u, 5, g.start()), c)


def _config(name, guider, steps=5):
    interval = GuidanceInterval(DynamicCFG(6, 5, steps, step_index="loop"), 0.0, 0.9)
    return sampler_config(name, steps, interval, guider=guider)


class PerturbableToy(ToyNetwork):
    """The toy network with 4 "blocks": a perturbed call (PAG, SLG) scales its output by 0.9."""

    perturbable_blocks = 4

    def __call__(self, x, t, context, ofs=None):
        out = super().__call__(x, t, context, ofs)
        self.perturbed.append(current_call().perturb)
        return out if current_call().perturb is None else 0.9 * out


def _toy():
    net = PerturbableToy(0.001, 0.1, 0.05, 0.01)
    net.perturbed = []
    return net


def _sample(cfg, net=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 16, 6, 6, generator=g)
    cond = Conditioning(torch.randn(2, 5, 16, generator=g))
    extra = {"image": torch.zeros_like(x)} if "image" in cfg.spec.needs else {}
    return sample(net or _toy(), x, cond, cfg, noise=SeededNoise([1, 2]), **extra)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_every_rule(name):
    """Samplers see only the guided denoiser: each rule, with an interval, runs under every one."""
    for rule in sorted(GUIDERS):
        out = _sample(_config(name, make_guider(rule, {}), steps=3))
        assert out.shape == (2, 2, 16, 6, 6) and torch.isfinite(out).all(), rule


def test_state_is_fresh_for_every_run_and_zero_init_skips_the_network():
    cfg = _config("vpsde_dpmpp_2m", APG(eta=0.0, momentum=-0.5))
    assert torch.equal(_sample(cfg), _sample(cfg))  # no momentum carried from one run to the next
    net = _toy()
    _sample(_config("vpsde_dpmpp_2m", CFGZeroStar(zero_init=2)), net)
    assert len(net.calls) == 3  # 5 steps, 2 zeroed without a network call


def test_perturbed_rules_make_one_more_call_on_their_steps_only():
    """PAG over steps 2-3 of 5: 5 batched calls plus 2 perturbed ones, each carrying the
    perturbation; the result differs from plain CFG; a network without blocks is refused."""
    net = _toy()
    rule = PAG(weight=1.5, begin=0.4, end=0.8, layers=(1, 2))
    out = _sample(_config("vpsde_dpmpp_2m", rule), net)
    assert len(net.calls) == 7
    assert [p for p in net.perturbed if p is not None] == [rule.perturbation] * 2
    assert not torch.equal(out, _sample(_config("vpsde_dpmpp_2m", None)))
    with pytest.raises(ValueError, match="network ToyNetwork has no transformer blocks"):
        _sample(_config("vpsde_dpmpp_2m", rule), ToyNetwork(0.001, 0.1, 0.05, 0.01))
    with pytest.raises(ValueError, match=r"layers 4 are not blocks of this network: it has 4"):
        _sample(_config("vpsde_dpmpp_2m", SLG(layers=(4,))), _toy())


def test_no_rule_is_plain_cfg_bit_for_bit_and_a_rule_changes_the_result():
    cfg = _config("vpsde_dpmpp_2m", None)
    assert "guider" not in cfg.to_dict()
    assert not torch.equal(_sample(cfg), _sample(_config("vpsde_dpmpp_2m", MAG())))


@pytest.mark.parametrize("rule", sorted(GUIDERS))
def test_config_with_a_rule_round_trips_through_json(rule):
    params = {"apg": {"eta": "0.25", "momentum": "0"}, "fdg": {"levels": "3", "low": "0.2"}}.get(rule, {})
    cfg = _config("vpsde_dpmpp_2m", make_guider(rule, params))
    d = cfg.to_dict()
    assert d["guider"]["type"] == type(cfg.guider).__name__
    assert SamplingConfig.from_dict(json.loads(json.dumps(d))) == cfg


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("apg", {"bogus": "1"}, "unknown parameter 'bogus'; apg takes: eta, momentum, norm_threshold"),
        ("apg", {"eta": "x"}, "eta must be a number, got 'x'"),
        ("apg", {"momentum": "2"}, r"apg momentum must be a finite number in \[-1.0, 1.0\]"),
        ("fdg", {"levels": "2.5"}, "levels must be an integer, got '2.5'"),
        ("fdg", {"levels": "9"}, r"fdg levels must be an integer in \[2, 4\]"),
        ("mag", {"alpha": "-1"}, "mag alpha must be a finite number"),
        ("cfg-zero-star", {"zero_init": "-1"}, "zero_init must be an integer"),
        ("tangential", {"eta": "1"}, "tangential takes: none"),
        ("pag", {"layers": "2-1"}, "layers must be block indices joined by"),
        ("slg", {"layers": "1+1"}, "slg layers must be distinct block indices"),
        ("slg", {"begin": "0.5", "end": "0.5"}, "slg begin must be < end"),
        ("pag", {"end": "2"}, r"pag end must be a finite number in \[0.0, 1.0\]"),
    ],
)
def test_bad_parameters_are_named(name, params, match):
    with pytest.raises(ValueError, match=match):
        make_guider(name, params)
