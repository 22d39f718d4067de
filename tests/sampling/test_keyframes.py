"""Keyframes: held latent frames under every sampler and guidance (cogsample.sampling.keyframes)."""

import pytest
import torch

from cogsample import CFG, Conditioning, SeededNoise
from cogsample.reference.golden import ToyNetwork
from cogsample.sampling.config import build_model, sample
from cogsample.sampling.context_windows import ContextWindows
from cogsample.sampling.keyframes import KeyframedModel, Keyframes, latent_frame
from cogsample.sampling.samplers import SAMPLERS
from tests.sampling.configs import sampler_config

SAMPLER_NAMES = [n for n, s in SAMPLERS.items() if "image" not in s.needs]


class FrameMixer:
    """Every output frame depends on every input frame: held frames steer the others."""

    def __init__(self):
        self.inputs = []

    def __call__(self, x, t, context, ofs=None):
        self.inputs.append(x.detach().clone())
        x = x[:, :, :16]
        return (
            torch.tanh(x) * 0.9 + 0.3 * x.mean(dim=1, keepdim=True) + 0.05 * context.mean(dim=1).view(-1, 1, 16, 1, 1)
        )


def _config(name, steps=4, guidance=None, context=None):
    return sampler_config(name, steps, guidance, context=context)


def _inputs(t=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, t, 16, 4, 4, generator=g)
    cond = Conditioning(torch.randn(1, 3, 16, generator=g))
    z = torch.rand(1, 2, 16, 4, 4, generator=g) * 2 - 1
    return x, cond, Keyframes(z, (1, 4))


def test_frame_mapping():
    assert [latent_frame(f) for f in (0, 1, 4, 5, 8, 9, 48)] == [0, 1, 1, 2, 2, 3, 12]


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_held_frames_end_exactly_at_the_keyframes_under_every_sampler(name):
    x, cond, kf = _inputs()
    seen = []
    out = sample(FrameMixer(), x, cond, _config(name), noise=SeededNoise([1]), keyframes=kf,
                 callback=lambda i, xi, d: seen.append(d))  # fmt: skip
    plain = sample(FrameMixer(), x, cond, _config(name), noise=SeededNoise([1]))
    assert torch.equal(out[:, [1, 4]], kf.latents.to(out.dtype))
    # every step's x0 estimate at the held frames is the keyframe (the solver lands on it)
    torch.testing.assert_close(seen[-1][:, [1, 4]].float(), kf.latents, rtol=0, atol=1e-5)
    assert not torch.allclose(out[:, [0, 2, 3]], plain[:, [0, 2, 3]])  # the others move with them
    assert (out[:, [0, 2, 3]] - kf.latents[:, :1]).abs().max() > 0.1


@pytest.mark.parametrize("name", ["vpsde_dpmpp_2m", "dpmpp_2m", "euler", "video_ddim", "diffusers_dpm"])
def test_no_keyframes_is_plain_sampling_bit_for_bit(name):
    x, cond, _ = _inputs()
    a = sample(ToyNetwork(0.001, 0.1, 0.05, 0.0), x, cond, _config(name), noise=SeededNoise([1]))
    b = sample(ToyNetwork(0.001, 0.1, 0.05, 0.0), x, cond, _config(name), noise=SeededNoise([1]), keyframes=None)
    assert torch.equal(a, b)


def test_the_network_sees_the_keyframe_noised_with_the_initial_noise():
    x, cond, kf = _inputs()
    net = FrameMixer()
    cfg = _config("video_ddim", steps=3, guidance=CFG(1.0))
    sample(net, x, cond, cfg, noise=SeededNoise([1]), keyframes=kf)
    a = cfg.grid().values.double()
    for i, seen in enumerate(net.inputs):
        held = (a[i] * kf.latents.double() + (1 - a[i] ** 2) ** 0.5 * x[:, [1, 4]].double()).float()
        torch.testing.assert_close(seen[:1, [1, 4]], held, rtol=0, atol=1e-6)  # VideoScaling: c_in = 1
    assert torch.equal(net.inputs[0][:1, [1, 4]], x[:, [1, 4]])  # ZeroSNR starts at alpha = 0: pure eps


def test_a_channel_mask_holds_only_its_channels():
    x, cond, kf = _inputs()
    mask = torch.zeros(1, 2, 16, 1, 1, dtype=torch.bool)
    mask[:, :, :4] = True
    masked = Keyframes(kf.latents, kf.frames, mask)
    out = sample(FrameMixer(), x, cond, _config("vpsde_dpmpp_2m"), noise=SeededNoise([1]), keyframes=masked)
    assert torch.equal(out[:, [1, 4], :4], kf.latents[:, :, :4])
    assert (out[:, [1, 4], 4:] - kf.latents[:, :, 4:]).abs().max() > 0.1


def test_wrapper_sits_above_guidance_and_forwards_its_attributes():
    x, cond, kf = _inputs()
    model, _ = build_model(FrameMixer(), x, cond, _config("euler"), keyframes=kf)
    assert isinstance(model, KeyframedModel)
    assert model.forwards == 0 and model.windows == 1 and model.owned_cache is None


def test_context_windows_compose():
    x, cond, kf = _inputs(t=7)
    cfg = _config("vpsde_dpmpp_2m", context=ContextWindows(3, 1))
    out = sample(FrameMixer(), x, cond, cfg, noise=SeededNoise([1]), keyframes=kf)
    assert torch.equal(out[:, [1, 4]], kf.latents)


@pytest.mark.parametrize(
    "frames,latents,match",
    [((1, 1), (1, 2, 16, 4, 4), "distinct"), ((1,), (1, 2, 16, 4, 4), "distinct"), ((9,), (1, 1, 16, 4, 4), "outside")],
)
def test_bad_keyframes_are_refused(frames, latents, match):
    x, cond, _ = _inputs()
    with pytest.raises(ValueError, match=match):
        sample(FrameMixer(), x, cond, _config("euler"), keyframes=Keyframes(torch.zeros(latents), frames))


def test_given_noise_replaces_the_initial_latents_own():
    x, cond, kf = _inputs()
    eps = torch.randn(kf.latents.shape, generator=torch.Generator().manual_seed(5))
    net = FrameMixer()
    cfg = _config("video_ddim", steps=2, guidance=CFG(1.0))
    sample(net, x, cond, cfg, keyframes=Keyframes(kf.latents, kf.frames, noise=eps))
    assert torch.equal(net.inputs[0][:1, [1, 4]], eps)  # alpha = 0: the held frames are the given noise
