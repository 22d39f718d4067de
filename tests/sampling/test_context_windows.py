"""Context windows: the layout, the blend weights, the wrapper under every sampler, FreeNoise."""

import itertools

import pytest
import torch

from cogsample import CFG, Conditioning, SamplingConfig, SeededNoise
from cogsample.reference.golden import ToyNetwork
from cogsample.sampling.cache import CacheConfig
from cogsample.sampling.config import build_model, sample
from cogsample.sampling.context_windows import ContextWindows, RepeatedNoise, WindowedNetwork, repeat_noise
from cogsample.sampling.samplers import SAMPLERS
from cogsample.sampling.schedules import ZeroSNRDDPM
from tests.sampling.configs import sampler_config

LAYOUTS = [(f, o, n) for f in (1, 2, 3, 4, 5, 13) for o in range(f) for n in (1, 2, f, f + 1, 2 * f + 3, 52)]


@pytest.mark.parametrize("frames,overlap,length", LAYOUTS)
def test_windows_cover_every_frame_and_weights_sum_to_one(frames, overlap, length):
    cw = ContextWindows(frames, overlap)
    spans = cw.spans(length)
    w = cw.weights(length)
    assert w.shape == (len(spans), length)
    assert torch.equal(w.sum(0), torch.ones(length, dtype=torch.float64)) or torch.allclose(
        w.sum(0), torch.ones(length, dtype=torch.float64), rtol=0, atol=1e-15
    )
    covered = torch.zeros(length, dtype=torch.int64)
    for j, (a, b) in enumerate(spans):
        assert 0 <= a < b <= length and b - a == min(frames, length)
        covered[a:b] += 1
        assert (w[j, :a] == 0).all() and (w[j, b:] == 0).all()
    assert (covered >= 1).all()
    # a frame one window covers is that window's output, weight exactly 1
    assert (w[:, covered == 1].max(0).values == 1.0).all()
    if length > frames:
        # neighbours share at least `overlap` frames; windows start in order and end on the last frame
        assert spans[-1][1] == length and [a for a, _ in spans] == sorted({a for a, _ in spans})
        for (_, b0), (a1, _) in itertools.pairwise(spans):
            assert b0 - a1 >= overlap


@pytest.mark.parametrize("frames,overlap", [(3, 1), (5, 2), (13, 4), (8, 7)])
def test_a_windows_weight_falls_off_towards_its_edges(frames, overlap):
    ramp = ContextWindows(frames, overlap).ramp()
    half = (frames + 1) // 2
    assert (ramp[1:half] >= ramp[: half - 1]).all() and torch.equal(ramp, ramp.flip(0))
    assert ramp[0] < 1 and (ramp.max() == 1.0) == (2 * overlap < frames)  # a plateau unless the ramps meet
    assert torch.equal(ContextWindows(frames, 0).ramp(), torch.ones(frames, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"frames": 0}, r"context_frames must be an integer >= 1.*got 0"),
        ({"frames": 2.5}, r"context_frames .*got 2.5"),
        ({"frames": 3, "overlap": 3}, r"context_overlap must be an integer in \[0, context_frames - 1\] = \[0, 2\]"),
        ({"frames": 3, "overlap": -1}, r"context_overlap .*got -1"),
    ],
)
def test_bad_layouts_name_the_parameter(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContextWindows(**kwargs)


def _config(name: str, steps: int = 4, context: ContextWindows | None = None, guidance=None) -> SamplingConfig:
    return sampler_config(name, steps, guidance, context=context)


def _inputs(t: int = 8, img: bool = False, b: int = 2):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, t, 16, 4, 4, generator=g)
    image = None
    if img:
        image = torch.zeros(b, t, 16, 4, 4)
        image[:, 0] = torch.randn(b, 16, 4, 4, generator=g)
    return x, Conditioning(torch.randn(b, 5, 16, generator=g), image_latents=image)


def _sample(name, x, cond, context, network=None):
    cfg = _config(name, context=context)
    extra = {"image": torch.zeros_like(x)} if "image" in SAMPLERS[name].needs else {}
    net = network or ToyNetwork(0.001, 0.1, 0.05, 0.0)
    return sample(net, x, cond, cfg, noise=SeededNoise([1, 2]), **extra)


class FrameMixer:
    """A network whose every output frame depends on every input frame (unlike ToyNetwork)."""

    def __init__(self):
        self.lengths = []

    def __call__(self, x, t, context, ofs=None):
        self.lengths.append(x.shape[1])
        return torch.tanh(x[:, :, :16]) * 0.9 + 0.1 * x[:, :, :16].mean(dim=1, keepdim=True)


def test_one_window_over_the_whole_length_is_no_windows():
    x, cond = _inputs(t=6, img=True)
    plain = _sample("vpsde_dpmpp_2m", x, cond, None, FrameMixer())
    for frames in (6, 7, 40):
        net = FrameMixer()
        assert torch.equal(_sample("vpsde_dpmpp_2m", x, cond, ContextWindows(frames, frames - 1), net), plain)
        assert set(net.lengths) == {6}


@pytest.mark.parametrize("frames", [1, 2, 4])
def test_windows_covering_each_frame_exactly_once_are_no_windows(frames):
    # a frame-local network cannot tell disjoint windows from the whole latent: the same bits
    x, cond = _inputs(t=8, img=True)
    plain = _sample("vpsde_dpmpp_2m", x, cond, None)
    net = ToyNetwork(0.001, 0.1, 0.05, 0.0)
    windowed = _sample("vpsde_dpmpp_2m", x, cond, ContextWindows(frames, 0), net)
    assert torch.equal(windowed, plain)
    assert len(net.calls) == 4 * (8 // frames)  # 4 steps x 8 / frames windows, both branches in one batch


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_runs_under_windows(name):
    x, cond = _inputs(t=7)
    net = FrameMixer()
    out = _sample(name, x, cond, ContextWindows(3, 1), net)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert set(net.lengths) == {3}  # the network never sees more than a window
    plain = _sample(name, x, cond, None, FrameMixer())
    assert not torch.equal(out, plain)  # the windows changed what the network saw


def test_the_forward_counter_counts_every_window():
    x, cond = _inputs(t=7)
    cw = ContextWindows(3, 1)
    model, grid = build_model(FrameMixer(), x, cond, _config("vpsde_dpmpp_2m", steps=5, context=cw, guidance=CFG(3)))
    SAMPLERS["vpsde_dpmpp_2m"].fn(model, x, grid, SeededNoise([1, 2]))
    assert cw.count(7) == 3 and model.forwards == 5 * 2 * 3
    assert model.denoiser.network.calls == 5 * 3  # both branches in one batch per window


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, x, t, context, ofs=None):
        self.calls.append((x.clone(), None if ofs is None else ofs.clone()))
        return torch.tanh(x[:, :, :16])


def test_image_latent_and_ofs_go_to_the_window_holding_frame_zero():
    x, cond = _inputs(t=7, img=True)
    ofs = torch.full((1,), 2.0)
    cond = Conditioning(cond.context, image_latents=cond.image_latents, ofs=ofs)
    rec = Recorder()
    net = WindowedNetwork(rec, ContextWindows(3, 1))
    net(torch.cat([x, cond.image_latents], dim=2), torch.full((2,), 500.0), cond.context, ofs=ofs)
    (first, first_ofs), *rest = rec.calls
    assert torch.equal(first[:, 0, 16:], cond.image_latents[:, 0]) and torch.equal(first_ofs, ofs)
    for window, window_ofs in rest:
        assert window_ofs is None and not window[:, :, 16:].any()


def test_i2v_keeps_frame_zero():
    # an exact I2V denoiser (frame 0 is the image, the rest its own) keeps the image under windows
    x, cond = _inputs(t=9, img=True)
    image = cond.image_latents

    class Exact:
        def __call__(self, x_in, t, context, ofs=None):
            # v for x0 = image on frame 0 (where given) and 0.5 elsewhere, at the DDPM level t
            a = ZeroSNRDDPM(1.0).table(1000)[t.long()].view(-1, 1, 1, 1, 1).to(x_in.dtype)
            s = (1 - a * a).clamp_min(1e-12).sqrt()
            x0 = torch.full_like(x_in[:, :, :16], 0.5)
            has_image = x_in[:, :1, 16:].abs().sum(dim=(1, 2, 3, 4)) > 0
            x0[has_image, 0] = x_in[has_image, 0, 16:]
            return (a * x_in[:, :, :16] - x0) / s

    cfg = _config("vpode_dpmpp_2m", steps=50, context=ContextWindows(4, 2))
    seen = []
    out = sample(Exact(), x, cond, cfg, noise=SeededNoise([1, 2]), callback=lambda i, x, den: seen.append(den))
    # a window that does not hold frame 0 sees no image: were it taken for one, frames 3, 5, ... would be off
    plain = sample(Exact(), x, cond, _config("vpode_dpmpp_2m", steps=50), noise=SeededNoise([1, 2]))
    assert torch.allclose(out, plain, rtol=0, atol=1e-5)  # equal up to the blend's rounding
    assert torch.equal(out[:, 0], plain[:, 0])  # one window covers frame 0: no blend there
    # the denoised frame 0 is the image (up to this float32 test model's error late in the run)
    for den in seen:
        assert (den[:, 0] - image[:, 0]).abs().max() < 0.05 and (den[:, 1:] - 0.5).abs().max() < 0.05


def test_each_window_call_names_its_window():
    # a network that keeps state per call (a transformer's cache hooks) keeps one per window
    from cogsample.sampling.calls import current_call

    seen = []

    def net(x, t, context, ofs=None):
        seen.append((current_call().window, x.shape[1]))
        return torch.tanh(x[:, :, :16])

    x, cond = _inputs(t=7)
    WindowedNetwork(net, ContextWindows(3, 1))(x, torch.full((1,), 500.0), cond.context)
    assert [w for w, _ in seen] == list(range(len(seen))) and len(seen) > 1
    assert current_call().window == 0  # only within the call
    SamplingConfig(cache=CacheConfig("first-block", {"threshold": 0.1}), context=ContextWindows(3, 1))
    SamplingConfig(cache=CacheConfig.output(0.1), context=ContextWindows(3, 1))


def test_config_with_windows_round_trips_and_without_keeps_its_description():
    cfg = SamplingConfig(context=ContextWindows(13, 4))
    assert SamplingConfig.from_dict(cfg.to_dict()) == cfg
    assert "context" not in SamplingConfig().to_dict()


def test_repeat_noise_repeats_the_first_window_shuffled_and_reproducibly():
    x = torch.randn(2, 12, 16, 2, 2)
    cw = ContextWindows(3, 1)
    a = repeat_noise(x, cw, torch.Generator().manual_seed(7))
    b = repeat_noise(x, cw, torch.Generator().manual_seed(7))
    c = repeat_noise(x, cw, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :3], x[:, :3])
    for t in range(3, 12):
        assert any(torch.equal(a[:, t], x[:, k]) for k in range(3))
    # each block of `stride` new frames draws distinct frames of the first window
    for s in range(3, 12, 2):
        block = [next(k for k in range(3) if torch.equal(a[:, t], x[:, k])) for t in range(s, min(s + 2, 12))]
        assert len(set(block)) == len(block)
    short = torch.randn(1, 3, 16, 2, 2)
    assert torch.equal(repeat_noise(short, cw, torch.Generator().manual_seed(0)), short)


def test_repeated_noise_maps_every_draw_alike():
    cw = ContextWindows(3, 1)
    src = RepeatedNoise(SeededNoise([5]), cw, torch.Generator().manual_seed(1))
    x = src.initial((1, 8, 16, 2, 2))
    d = src.draw(x)
    plain = SeededNoise([5])
    x0, d0 = plain.initial((1, 8, 16, 2, 2)), None
    d0 = plain.draw(x0)
    m = [next(k for k in range(3) if torch.equal(x[:, t], x0[:, k])) for t in range(8)]
    assert m[:3] == [0, 1, 2]
    assert all(torch.equal(d[:, t], d0[:, m[t]]) for t in range(8))


def test_repeated_noise_changes_what_a_stochastic_sampler_makes():
    # from zero SNR vpsde_dpmpp_2m forgets the initial noise: the in-loop draws must repeat too
    x, cond = _inputs(t=7)
    cfg = _config("vpsde_dpmpp_2m", context=ContextWindows(3, 1))

    def net(x_in, t, context, ofs=None):  # the exact denoiser of x0 = 0.5 + context: blind to x at alpha = 0
        a = ZeroSNRDDPM(1.0).table(1000)[t.long()].view(-1, 1, 1, 1, 1)
        x0 = 0.5 + context.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)
        return (a * x_in[:, :, :16] - x0) / (1 - a * a).clamp_min(1e-12).sqrt()

    plain = sample(net, x, cond, cfg, noise=SeededNoise([1, 2]))
    other_start = sample(net, torch.randn_like(x), cond, cfg, noise=SeededNoise([1, 2]))
    assert torch.equal(plain, other_start)
    rep = RepeatedNoise(SeededNoise([1, 2]), cfg.context, torch.Generator().manual_seed(0))
    repeated = sample(net, rep.initial(x.shape), cond, cfg, noise=rep)
    assert not torch.equal(repeated, plain) and torch.isfinite(repeated).all()
