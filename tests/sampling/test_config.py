"""``sample()``: validation before any network call, no host sync in the loop, config round trips."""

import json
import re
from pathlib import Path

import pytest
import torch
from exact import GaussianNetwork

from cogsample import (
    CFG,
    EDM,
    Conditioning,
    DenoiserConfig,
    DynamicCFG,
    EDMScaling,
    GuidanceInterval,
    LegacyDDPM,
    NoGuidance,
    SamplingConfig,
    SeededNoise,
    SpacedDDPM,
    VideoScaling,
    VScaling,
    ZeroSNRDDPM,
    latent_shape,
    sample,
)
from cogsample.reference.golden import ToyNetwork
from cogsample.sampling.samplers import SAMPLERS

ROOT = Path(__file__).resolve().parents[2]


class MustNotRun:
    def __call__(self, *a, **k):
        raise AssertionError("the network was called before the input was validated")


def _inputs(b=2, t=3, img=False):
    x = torch.randn(b, t, 16, 4, 4)
    return x, Conditioning(torch.randn(b, 5, 16), image_latents=torch.zeros(b, t, 16, 4, 4) if img else None)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda x, c: (x[:1], c), "context batch 2 does not match latent batch 1"),
        (lambda x, c: (x, Conditioning(c.context, c.context[:, :2])), "uncond_context must have the context's shape"),
        (
            lambda x, c: (x, Conditioning(c.context, image_latents=torch.zeros(1, 3, 16, 4, 4))),
            "image_latents batch 1 does not match latent batch 2",
        ),
        (
            lambda x, c: (x, Conditioning(c.context, image_latents=torch.zeros(2, 2, 16, 4, 4))),
            r"image_latents must be \(B, T, C, H, W\) with T, H, W = \(3, 4, 4\)",
        ),
        (lambda x, c: (x[0], c), r"latent x must be a floating tensor of shape \(B, T, C, H, W\)"),
        (lambda x, c: (x.index_fill(1, torch.tensor([1]), float("nan")), c), "NaN or inf"),
        (lambda x, c: (x.index_fill(1, torch.tensor([0]), float("inf")), c), "NaN or inf"),
        (lambda x, c: (x, Conditioning(c.context[0])), r"context must be a tensor of shape \(B, L, D\)"),
    ],
)
def test_bad_input_is_refused_before_the_network_runs(mutate, match):
    x, cond = mutate(*_inputs())
    with pytest.raises(ValueError, match=match):
        sample(MustNotRun(), x, cond, SamplingConfig(steps=3))


@pytest.mark.parametrize(
    "config, match",
    [
        (lambda: SamplingConfig(sampler="euler", steps=5, schedule=ZeroSNRDDPM(1.0)), "cannot start from alpha=0"),
        (
            lambda: SamplingConfig(steps=5, denoiser=DenoiserConfig(VScaling())),
            "scaling VScaling works in sigma space and cannot be evaluated at alpha=0",
        ),
        (
            lambda: SamplingConfig(sampler="heun", steps=5, schedule=EDM(), denoiser=DenoiserConfig(VideoScaling())),
            "needs a denoiser table",
        ),
        (
            lambda: SamplingConfig(sampler="euler", steps=5, schedule=EDM(), denoiser=DenoiserConfig(EDMScaling())),
            "step_index='loop'",
        ),
        (lambda: SamplingConfig(steps=0), "steps must be an integer >= 1, got 0"),
        (lambda: SamplingConfig(sampler="warp"), "sampler must be one of"),
        (lambda: SamplingConfig(options={"eta": 1.0}), "sampler option 'eta' is not an option of 'vpsde_dpmpp_2m'"),
        (lambda: SamplingConfig(schedule=ZeroSNRDDPM(0.0)), "shift_scale must be a finite number > 0"),
    ],
)
def test_impossible_combinations_are_refused_before_the_network_runs(config, match):
    x, cond = _inputs()
    with pytest.raises(ValueError, match=match):
        sample(MustNotRun(), x, cond, config())


def test_sdedit_needs_its_image():
    x, cond = _inputs()
    cfg = SamplingConfig(
        sampler="sdedit_euler", steps=4, schedule=EDM(), denoiser=DenoiserConfig(EDMScaling()), guidance=CFG(2.0)
    )
    with pytest.raises(ValueError, match="pass image="):
        sample(MustNotRun(), x, cond, cfg)


class NoSync:
    """Inside the loop, any read of a device value into Python fails."""

    NAMES = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def arm(self):
        for name in self.NAMES:

            def forbidden(*a, _name=name, **k):
                raise AssertionError(f"host-device sync in the sampling loop: Tensor.{_name}")

            self.monkeypatch.setattr(torch.Tensor, name, forbidden)


def _run_armed(name, device, arm):
    """Every sampler, 6 steps, I2V inputs, DynamicCFG; ``arm()`` runs at every network call, so
    whatever it forbids is forbidden from the first call on: inside the sampling loop."""
    spec = SAMPLERS[name]
    schedule = ZeroSNRDDPM(1.0) if spec.space == "alpha" else LegacyDDPM()
    cfg = SamplingConfig(
        sampler=name,
        steps=6,
        schedule=schedule,
        # samplers that consume the raw prediction read the grid's own timesteps: no table
        denoiser=DenoiserConfig(VideoScaling(), table=schedule if spec.consumes == "x0" else None),
        guidance=DynamicCFG(6, 5, 6, step_index="loop"),
    )
    x, cond = _inputs(img=True)
    x, cond = x.to(device), Conditioning(cond.context.to(device), image_latents=cond.image_latents.to(device))
    net = ToyNetwork(0.001, 0.1, 0.05, 0.01)

    def network(*args, **kwargs):
        arm()
        return net(*args, **kwargs)

    extra = {"image": torch.zeros_like(x)} if "image" in spec.needs else {}
    return sample(network, x, cond, cfg, noise=SeededNoise([1, 2], generator_device=device), **extra)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_no_host_device_sync_inside_the_sampling_loop(name, monkeypatch):
    out = _run_armed(name, "cpu", NoSync(monkeypatch).arm)
    monkeypatch.undo()
    assert torch.isfinite(out).all()


def test_config_round_trips_through_json():
    cfgs = [
        SamplingConfig(),
        SamplingConfig(
            sampler="euler",
            steps=7,
            schedule=EDM(0.01, 50, 5),
            denoiser=DenoiserConfig(EDMScaling(0.7)),
            guidance=CFG(4.5),
            options={"s_churn": 0.5, "s_tmax": float("inf")},
        ),
        SamplingConfig(
            sampler="vpode_dpmpp_2m",
            steps=9,
            schedule=ZeroSNRDDPM(3.0, post_shift=True),
            guidance=DynamicCFG(6, 5, 9, step_index="loop"),
        ),
        SamplingConfig(
            sampler="dpmpp_2m",
            schedule=LegacyDDPM(),
            guidance=NoGuidance(),
            denoiser=DenoiserConfig(VScaling(), table=LegacyDDPM(), quantize_c_noise=True),
        ),
    ]
    cfgs.append(
        SamplingConfig(
            sampler="vpsde_dpmpp_2m",
            steps=12,
            schedule=SpacedDDPM(ZeroSNRDDPM(3.0), "logsnr", t_max=998),
            guidance=GuidanceInterval(DynamicCFG(6, 5, 12, step_index="loop"), 0.4, 1.0),
            skip_unit_cfg=True,
        )
    )
    for cfg in cfgs:
        assert SamplingConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_sampling_a_gaussian_through_the_whole_stack():
    """The CogVideoX default config, CFG with equal branches, on exact Gaussian data."""
    sched = ZeroSNRDDPM(1.0)
    net = GaussianNetwork(VideoScaling(), sched.table())
    noise = SeededNoise.from_seed(0, 1)
    x = noise.initial(latent_shape(1, 33, 256, 256))
    ctx = torch.zeros(1, 4, 16)
    out = sample(net, x, Conditioning(ctx, ctx), SamplingConfig(), noise=noise)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert abs(out.mean().item() - 0.5) < 0.02 and abs(out.std().item() - 1.0) < 0.05


def test_readme_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "SamplingConfig" in c)
    monkeypatch.chdir(tmp_path)  # an empty folder: the example needs no file of its own
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["latents"].shape == (2, 13, 16, 60, 90) and torch.isfinite(scope["latents"]).all()
    assert scope["cfg"].steps == 25


def test_the_sync_guard_catches_a_sync(monkeypatch):
    guard = NoSync(monkeypatch)

    def syncing_network(x, t, context, ofs=None):
        guard.arm()
        t.max().item()
        return x[:, :, :16]

    x, cond = _inputs()
    with pytest.raises(AssertionError, match=r"host-device sync in the sampling loop: Tensor.item"):
        sample(syncing_network, x, cond, SamplingConfig(steps=2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_no_sync_on_cuda(name):
    """On a GPU, torch itself refuses any synchronising call once the loop has started."""
    try:
        out = _run_armed(name, "cuda", lambda: torch.cuda.set_sync_debug_mode("error"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(out).all()
