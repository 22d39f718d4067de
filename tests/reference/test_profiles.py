"""The diffusers profile: ``sample()`` equals diffusers' CogVideoX pipelines bit for bit.

A tiny random-weight ``CogVideoXTransformer3DModel`` runs under diffusers' own
``CogVideoXPipeline`` / ``CogVideoXImageToVideoPipeline`` and under cogsample with
:func:`~cogsample.reference.profiles.diffusers_sampling`, from the same initial latents and identically
seeded generators; the latents must be equal (max abs error 0). The schedulers' tables, grids and
steps are also checked on their own, without a network: grids for every step count 1..1000, steps
and noise draws for every count up to 70 and some beyond.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from functools import cache

import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (
    AutoencoderKLCogVideoX,
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
)
from diffusers.utils import logging as diffusers_logging
from diffusers.utils.torch_utils import randn_tensor

from cogsample.reference.profiles import COGVIDEOX_5B_SCHEDULER, diffusers_sampling, sat_sampling
from cogsample.sampling.config import COGVIDEOX_5B, SamplingConfig, build_model, sample
from cogsample.sampling.denoiser import DenoiserConfig
from cogsample.sampling.guidance import CFG, Conditioning, DynamicCFG, NoGuidance
from cogsample.sampling.noise import DiffusersNoise, SeededNoise
from cogsample.sampling.samplers import SAMPLERS, get_sampler
from cogsample.sampling.scalings import EDMScaling, VideoScaling
from cogsample.sampling.schedules import EDM, DiffusersDDPM, DiffusersGridWarning

#: a CogVideoX-5B-style ``scheduler/scheduler_config.json`` (2B: snr_shift_scale 3.0)
CONFIG_5B = {**COGVIDEOX_5B_SCHEDULER, "_class_name": "CogVideoXDDIMScheduler"}
CONFIG_2B = {**CONFIG_5B, "snr_shift_scale": 3.0}
SCHEDULERS = {"dpm": CogVideoXDPMScheduler, "ddim": CogVideoXDDIMScheduler}
VARIANTS = {
    "5b": CONFIG_5B,
    "2b": CONFIG_2B,
    "no_rescale": {**CONFIG_2B, "rescale_betas_zero_snr": False},
    "linear_final_ac0": {**CONFIG_5B, "beta_schedule": "linear", "set_alpha_to_one": False},
    "cosine": {**CONFIG_2B, "beta_schedule": "squaredcos_cap_v2"},
    "leading_offset": {**CONFIG_5B, "timestep_spacing": "leading", "steps_offset": 1},
    "linspace": {**CONFIG_2B, "timestep_spacing": "linspace"},
    "defaults": {"_class_name": "CogVideoXDPMScheduler", "prediction_type": "v_prediction"},
}

FRAMES, HEIGHT, WIDTH = 9, 32, 32  # latents (B, 3, 16, 4, 4)
LATENT = (3, 16, 4, 4)
TEXT_LEN, TEXT_DIM = 8, 32


@contextlib.contextmanager
def _quiet():
    """Swallow the broken-grid warnings where they are not the point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DiffusersGridWarning)
        yield


# ----------------------------------------------------------------------------------------------
# schedule, grid and step arithmetic against diffusers' schedulers (no network)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_table_is_diffusers_alphas_cumprod(variant):
    cfg = VARIANTS[variant]
    ours = DiffusersDDPM.from_diffusers_config(cfg).alphas_cumprod()
    theirs = CogVideoXDPMScheduler.from_config(cfg).alphas_cumprod
    assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


@pytest.mark.parametrize("variant", ["5b", "leading_offset", "linspace"])
def test_grid_timesteps_are_diffusers_for_every_step_count(variant):
    cfg = VARIANTS[variant]
    schedule, sched = DiffusersDDPM.from_diffusers_config(cfg), CogVideoXDDIMScheduler.from_config(cfg)
    with _quiet():
        for n in range(1, 1001):
            sched.set_timesteps(n)
            if sched.timesteps.max() >= 1000:  # leading + steps_offset at 1000 steps: diffusers' step fails
                with pytest.raises(ValueError, match="reaches timestep 1000, beyond the table's 1000 entries"):
                    schedule.grid(n)
                continue
            want = tuple(sched.timesteps.tolist())
            assert tuple(schedule.timesteps(n).tolist()) == want, n
            if n % 37 == 1:
                assert schedule.grid(n).timesteps == want, n


def _fake_v(x, t):
    """A stand-in network: any deterministic function of (x, t) in float32."""
    return torch.sin(x.float() * 1.3 + t / 500.0) * 0.8


def _scheduler_loop(kind, cfg, n, x, generator):
    """diffusers' pipeline loop around ``scheduler.step``, with the fake network."""
    sched = SCHEDULERS[kind].from_config(cfg)
    sched.set_timesteps(n)
    ts = sched.timesteps
    x = x * sched.init_noise_sigma
    old = None
    for i, t in enumerate(ts):
        v = _fake_v(x, float(t.item()))
        if kind == "dpm":
            x, old = sched.step(v, old, t, ts[i - 1] if i > 0 else None, x, generator=generator, return_dict=False)
        else:
            x = sched.step(v, t, x, generator=generator, return_dict=False)[0]
    return x


STEP_COUNTS = [*range(1, 71), 103, 121, 250, 1000]


@pytest.mark.parametrize("kind", ["dpm", "ddim"])
@pytest.mark.parametrize("variant", ["5b", "2b", "linear_final_ac0", "leading_offset"])
def test_sampler_steps_are_the_schedulers_for_every_step_count(kind, variant):
    """Exact per-step arithmetic, noise draws included, for all step counts up to 70 and more."""
    cfg = VARIANTS[variant]
    schedule = DiffusersDDPM.from_diffusers_config(cfg)
    fn = SAMPLERS[f"diffusers_{kind}"].fn
    x = torch.randn(1, 2, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    counts = STEP_COUNTS if variant in ("5b", "2b") else STEP_COUNTS[::7]
    with _quiet():
        for n in counts:
            want = _scheduler_loop(kind, cfg, n, x.clone(), torch.Generator().manual_seed(n))
            got = fn(
                lambda x_, level: _fake_v(x_, float(level.timestep)),
                x.clone(),
                schedule.grid(n),
                DiffusersNoise(torch.Generator().manual_seed(n)),
            )
            assert torch.equal(got, want), (kind, variant, n)


def test_broken_grids_warn_and_say_what_is_wrong():
    s = DiffusersDDPM.from_diffusers_config(CONFIG_5B)
    with pytest.warns(DiffusersGridWarning, match="it makes 62 steps, not the 61 asked for") as rec:
        g = s.grid(61)
    assert "timestep -1" in str(rec[0].message)
    assert g.num_steps == 62 and g.timesteps[-1] == -1 and g.requested_steps == 61
    with pytest.warns(DiffusersGridWarning, match="does not end clean: the last step goes to timestep 0"):
        g = s.grid(7)
    assert g.num_steps == 7 and not g.ddpm.to_final[-1] and float(g.values[-1]) < 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", DiffusersGridWarning)
        for n in (10, 20, 30, 49, 50):  # 30 and 49 step to t - T//n, not the next timestep: no warning
            assert s.grid(n).ddpm.to_final[-1]


@pytest.mark.parametrize(
    "generator",
    [
        lambda: torch.Generator().manual_seed(3),
        lambda: [torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)],
        lambda: [torch.Generator().manual_seed(9)],
        lambda: None,
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_diffusers_noise_is_randn_tensor(generator, dtype):
    """Initial latent, a discarded draw and a used one: the same values as three randn_tensor calls."""
    shape = (2, *LATENT)
    torch.manual_seed(11)
    g = generator()
    want = [randn_tensor(shape, generator=g, dtype=dtype) for _ in range(3)]
    torch.manual_seed(11)
    noise = DiffusersNoise(generator())
    x = noise.initial(shape, dtype=dtype)
    noise.discard(x)
    z = noise.draw(x)
    assert x.dtype == z.dtype == dtype
    assert torch.equal(x, want[0]) and torch.equal(z, want[2])


def test_diffusers_noise_refuses_a_wrong_generator_count():
    noise = DiffusersNoise([torch.Generator(), torch.Generator()])
    with pytest.raises(ValueError, match="a list of 2 generators for a batch of 3"):
        noise.initial((3, *LATENT))


# ----------------------------------------------------------------------------------------------
# the profile's config


def test_profile_config_from_a_scheduler_config():
    cfg = diffusers_sampling(CONFIG_5B, steps=30)
    assert cfg.sampler == "diffusers_ddim"  # the config's _class_name
    assert cfg.schedule == DiffusersDDPM(1.0)  # the defaults are CogVideoX-5B's
    assert cfg.denoiser == DenoiserConfig(VideoScaling(), table=None)
    assert cfg.guidance == DynamicCFG(6.0, 5.0, 30, step_index="reference")
    assert diffusers_sampling(CONFIG_5B, scheduler="dpm").sampler == "diffusers_dpm"
    assert diffusers_sampling(CONFIG_2B, use_dynamic_cfg=False).guidance == CFG(6.0)
    assert diffusers_sampling(CONFIG_2B).schedule.shift_scale == 3.0
    # diffusers runs no CFG at all unless guidance_scale > 1, dynamic or not
    assert diffusers_sampling(CONFIG_5B, guidance_scale=1).guidance == NoGuidance()
    assert diffusers_sampling(CONFIG_5B, guidance_scale=0.5, use_dynamic_cfg=False).guidance == NoGuidance()
    assert get_sampler("CogVideoXDPMScheduler").name == "diffusers_dpm"
    for c in (cfg, diffusers_sampling(VARIANTS["linear_final_ac0"], scheduler="dpm", guidance_scale=1)):
        assert SamplingConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_profile_refuses_what_it_cannot_reproduce():
    with pytest.raises(ValueError, match="prediction_type must be 'v_prediction', got 'epsilon'"):
        diffusers_sampling({**CONFIG_5B, "prediction_type": "epsilon"})
    with pytest.raises(ValueError, match="_class_name='DDIMScheduler'"):
        diffusers_sampling({**CONFIG_5B, "_class_name": "DDIMScheduler"})
    with pytest.raises(ValueError, match="trained_betas is not supported"):
        diffusers_sampling({**CONFIG_5B, "trained_betas": [0.1] * 1000})
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        diffusers_sampling({**CONFIG_5B, "timestep_spacing": "karras"})


@pytest.mark.parametrize(
    "config, match",
    [
        (
            lambda: SamplingConfig(
                "diffusers_dpm", 10, DiffusersDDPM(), DenoiserConfig(VideoScaling(), table=DiffusersDDPM())
            ),
            r"set DenoiserConfig.table=None, got table=DiffusersDDPM\(",
        ),
        (
            lambda: SamplingConfig(
                "diffusers_ddim", 10, DiffusersDDPM(rescale_betas_zero_snr=False), DenoiserConfig(EDMScaling())
            ),
            "needs a scaling with c_in = 1 and v output \\(VideoScaling\\), got scaling EDMScaling",
        ),
        (
            lambda: SamplingConfig("diffusers_ddim", 10, EDM(), DenoiserConfig(VideoScaling()), CFG(2.0)),
            "schedule EDM has none",
        ),
    ],
)
def test_raw_prediction_needs_video_scaling_without_a_table(config, match):
    x, cond = torch.randn(1, *LATENT), Conditioning(torch.randn(1, TEXT_LEN, TEXT_DIM))

    def must_not_run(*a, **k):
        raise AssertionError("the network ran before the combination was checked")

    with pytest.raises(ValueError, match=match):
        sample(must_not_run, x, cond, config())


@pytest.mark.parametrize("n", [7, 10, 50, 61])
def test_dynamic_cfg_is_the_pipelines_formula(n):
    """``1 + gs * ((1 - cos(pi * ((n - t.item()) / n) ** 5.0)) / 2)`` with the requested n."""
    cfg = diffusers_sampling(CONFIG_5B, steps=n, guidance_scale=6)
    x, cond = torch.randn(1, *LATENT), Conditioning(torch.randn(1, TEXT_LEN, TEXT_DIM))
    with _quiet():
        model, _ = build_model(lambda *a, **k: None, x, cond, cfg)
    sched = CogVideoXDDIMScheduler.from_config(CONFIG_5B)
    sched.set_timesteps(n)
    want = [1 + 6 * ((1 - math.cos(math.pi * ((n - t.item()) / n) ** 5.0)) / 2) for t in sched.timesteps]
    assert model.step_scales == want


# ----------------------------------------------------------------------------------------------
# whole pipelines with a tiny transformer


@cache
def _transformer(rotary: bool, in_channels: int = 16, ofs: int | None = None, dtype=torch.float32):
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=in_channels,
        out_channels=16,
        time_embed_dim=16,
        ofs_embed_dim=ofs,
        text_embed_dim=TEXT_DIM,
        num_layers=1,
        sample_width=WIDTH // 8,
        sample_height=HEIGHT // 8,
        sample_frames=FRAMES,
        max_text_seq_length=TEXT_LEN,
        use_rotary_positional_embeddings=rotary,
    ).eval()
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # casting a random-weight model: nothing to keep in float32
    try:
        return model.to(dtype)
    finally:
        diffusers_logging.set_verbosity(verbosity)


@cache
def _vae():
    torch.manual_seed(1)
    return AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
    ).eval()


class PipelineNetwork:
    """Test-local adapter: the transformer called as the pipelines call it (float timesteps are
    fine: the transformer's time projection casts them to float32 either way)."""

    def __init__(self, pipe):
        self.transformer = pipe.transformer
        self.rotary = None
        if pipe.transformer.config.use_rotary_positional_embeddings:
            self.rotary = pipe._prepare_rotary_positional_embeddings(HEIGHT, WIDTH, LATENT[0], torch.device("cpu"))

    def __call__(self, x, t, context, ofs=None):
        return self.transformer(
            hidden_states=x,
            encoder_hidden_states=context,
            timestep=t,
            ofs=ofs,
            image_rotary_emb=self.rotary,
            return_dict=False,
        )[0]


def _embeddings(batch: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + batch)
    latents = torch.randn(batch, *LATENT, generator=g).to(dtype)
    pos = torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=g).to(dtype)
    neg = torch.randn(batch, TEXT_LEN, TEXT_DIM, generator=g).to(dtype)
    return latents, pos, neg


def _generators(seed, batch, as_list):
    return (
        [torch.Generator().manual_seed(seed + k) for k in range(batch)]
        if as_list
        else torch.Generator().manual_seed(seed)
    )


def _t2v(kind, steps, dyn, gs, rotary, *, dtype=torch.float32, batch=2, as_list=False, given_latents=True, cfg=None):
    """(diffusers' latents, cogsample's latents) for the same inputs and generator seeds."""
    cfg = cfg or CONFIG_5B
    pipe = CogVideoXPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        transformer=_transformer(rotary, dtype=dtype),
        scheduler=SCHEDULERS[kind].from_config(cfg),
    )
    pipe.set_progress_bar_config(disable=True)
    latents, pos, neg = _embeddings(batch, dtype)
    want = pipe(
        prompt_embeds=pos,
        negative_prompt_embeds=neg,
        latents=latents.clone() if given_latents else None,
        height=HEIGHT,
        width=WIDTH,
        num_frames=FRAMES,
        num_inference_steps=steps,
        guidance_scale=gs,
        use_dynamic_cfg=dyn,
        generator=_generators(7, batch, as_list),
        output_type="latent",
    ).frames
    noise = DiffusersNoise(_generators(7, batch, as_list))
    x = latents.clone() if given_latents else noise.initial((batch, *LATENT), dtype=dtype)
    config = diffusers_sampling(cfg, steps=steps, guidance_scale=gs, use_dynamic_cfg=dyn, scheduler=kind)
    got = sample(PipelineNetwork(pipe), x, Conditioning(pos, neg), config, noise=noise)
    return want, got


T2V_CASES = [
    # kind, steps, use_dynamic_cfg, guidance_scale, rotary
    ("dpm", 10, True, 6, True),
    ("dpm", 20, False, 6, False),
    ("dpm", 50, True, 6, True),
    ("dpm", 30, True, 6, False),  # steps go to t - 33, the next timestep is t - 34
    ("dpm", 10, True, 1, True),  # no CFG at all
    ("ddim", 10, True, 6, False),
    ("ddim", 20, False, 6, True),
    ("ddim", 50, True, 6, False),
    ("ddim", 10, False, 1, True),
]


@pytest.mark.parametrize("kind, steps, dyn, gs, rotary", T2V_CASES)
def test_t2v_equals_the_diffusers_pipeline(kind, steps, dyn, gs, rotary):
    want, got = _t2v(kind, steps, dyn, gs, rotary)
    assert got.dtype == want.dtype and torch.equal(got, want)
    assert want.std() > 0.1  # a real sample, not a degenerate one


@pytest.mark.parametrize("kind", ["dpm", "ddim"])
@pytest.mark.parametrize("steps, match", [(61, "it makes 62 steps"), (7, "does not end clean")])
def test_broken_diffusers_grids_are_reproduced_with_a_warning(kind, steps, match):
    with pytest.warns(DiffusersGridWarning, match=match):
        want, got = _t2v(kind, steps, True, 6, True)
    assert torch.equal(got, want)


def test_initial_latents_and_per_sample_generators_in_bfloat16():
    """latents drawn from the generators (no latents=), one generator per sample, bf16 latents,
    prompt embeddings and transformer (the step runs in float32, latents are cast back)."""
    want, got = _t2v("dpm", 10, True, 6, False, dtype=torch.bfloat16, as_list=True, given_latents=False, cfg=CONFIG_2B)
    assert got.dtype == want.dtype == torch.bfloat16 and torch.equal(got, want)


@pytest.mark.parametrize("kind, ofs", [("dpm", None), ("dpm", 16), ("ddim", None)])
def test_i2v_equals_the_diffusers_pipeline(kind, ofs):
    """CogVideoXImageToVideoPipeline with a tiny VAE. Its image encoding samples the VAE's latent
    distribution from the same generator before the loop: the caller makes the image latents with
    the generator it then hands to DiffusersNoise (here via the pipeline's own prepare_latents)."""
    pipe = CogVideoXImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=_vae(),
        transformer=_transformer(True, in_channels=32, ofs=ofs),
        scheduler=SCHEDULERS[kind].from_config(CONFIG_5B),
    )
    pipe.set_progress_bar_config(disable=True)
    latents, pos, neg = _embeddings(2)
    image = torch.rand(2, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(5))
    want = pipe(
        image=image,
        prompt_embeds=pos,
        negative_prompt_embeds=neg,
        latents=latents.clone(),
        height=HEIGHT,
        width=WIDTH,
        num_frames=FRAMES,
        num_inference_steps=10,
        guidance_scale=6,
        use_dynamic_cfg=True,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
    ).frames
    g = torch.Generator().manual_seed(7)
    pixels = pipe.video_processor.preprocess(image, height=HEIGHT, width=WIDTH)
    _, image_latents = pipe.prepare_latents(pixels, 2, 16, FRAMES, HEIGHT, WIDTH, torch.float32, "cpu", g, latents)
    cond = Conditioning(pos, neg, image_latents=image_latents, ofs=None if ofs is None else latents.new_full((1,), 2.0))
    got = sample(
        PipelineNetwork(pipe),
        latents.clone(),
        cond,
        diffusers_sampling(CONFIG_5B, 10, scheduler=kind),
        noise=DiffusersNoise(g),
    )
    assert torch.equal(got, want)


def test_no_host_device_sync_in_the_diffusers_loops(monkeypatch):
    """As tests/sampling/test_config.py's guard: after the first network call nothing reads a value back."""
    names = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")

    def arm():
        for name in names:

            def forbidden(*a, _name=name, **k):
                raise AssertionError(f"host-device sync in the sampling loop: Tensor.{_name}")

            monkeypatch.setattr(torch.Tensor, name, forbidden)

    def network(x, t, context, ofs=None):
        arm()
        return torch.tanh(x[:, :, :16]) * 0.5 + context.mean() * 0.01

    x, pos, neg = _embeddings(2)
    for kind in ("dpm", "ddim"):
        cfg = diffusers_sampling(CONFIG_5B, steps=7, scheduler=kind)
        with _quiet():
            out = sample(
                network, x, Conditioning(pos, neg), cfg, noise=DiffusersNoise(torch.Generator().manual_seed(1))
            )
        monkeypatch.undo()
        assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# how far the two reproductions are apart (a measurement, printed; run with -s to see it)


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_sat_and_diffusers_profiles_differ_little(capsys):
    """SAT (ZeroSNR grid renormalised per step count, table snapping, CFG on x0) against
    diffusers (whole-table rescale, no snapping, CFG on v) on the same tiny transformer, inputs
    and in-loop noise (both DPM samplers make the same draws in the same order), 50 steps."""
    pipe = CogVideoXPipeline(
        tokenizer=None, text_encoder=None, vae=None, transformer=_transformer(True), scheduler=CogVideoXDPMScheduler()
    )
    net = PipelineNetwork(pipe)
    latents, pos, neg = _embeddings(2)
    cond = Conditioning(pos, neg)

    def run(config, seed=7):
        return sample(net, latents.clone(), cond, config, noise=DiffusersNoise(torch.Generator().manual_seed(seed)))

    assert sat_sampling() == COGVIDEOX_5B
    dpm_d, dpm_s = run(diffusers_sampling(CONFIG_5B, scheduler="dpm")), run(sat_sampling())
    ddim_d, ddim_s = run(diffusers_sampling(CONFIG_5B, scheduler="ddim")), run(sat_sampling(sampler="video_ddim"))
    seed_gap = _rel(run(diffusers_sampling(CONFIG_5B, scheduler="dpm"), seed=8), dpm_d)
    rows = {
        "dpm (diffusers_dpm vs vpsde_dpmpp_2m, same noise)": _rel(dpm_s, dpm_d),
        "ddim (diffusers_ddim vs video_ddim)": _rel(ddim_s, ddim_d),
        "for scale: diffusers dpm, seed 7 vs seed 8": seed_gap,
    }
    with capsys.disabled():
        print("\nrelative L2 difference, SAT profile vs diffusers profile (tiny transformer, 50 steps, DynamicCFG 6):")
        for k, v in rows.items():
            print(f"  {k}: {v:.3e}")
    assert 0 < rows["ddim (diffusers_ddim vs video_ddim)"] < 0.1
    assert 0 < rows["dpm (diffusers_dpm vs vpsde_dpmpp_2m, same noise)"] < seed_gap


def test_seeded_noise_composes_with_the_diffusers_samplers():
    """Any noise source works with the diffusers samplers; SeededNoise makes a sample independent
    of the batch around it (up to the transformer's batch-dependent rounding)."""
    x, pos, neg = _embeddings(2)
    pipe = CogVideoXPipeline(
        tokenizer=None, text_encoder=None, vae=None, transformer=_transformer(False), scheduler=CogVideoXDPMScheduler()
    )
    cfg = diffusers_sampling(CONFIG_5B, steps=5, scheduler="dpm")
    both = sample(PipelineNetwork(pipe), x, Conditioning(pos, neg), cfg, noise=SeededNoise([3, 4]))
    one = sample(PipelineNetwork(pipe), x[1:], Conditioning(pos[1:], neg[1:]), cfg, noise=SeededNoise([4]))
    torch.testing.assert_close(both[1:], one, rtol=1e-4, atol=1e-4)
