"""The built-in exact model: clips, the linear VAE, the closed-form posterior, prompts, sampling."""

from __future__ import annotations

import warnings

import pytest
import torch

from cogsample import Conditioning, SamplingConfig, SeededNoise, latent_shape, sample
from cogsample.models.base import VideoModel
from cogsample.models.builtin import (
    CLIPS,
    BlockVAE,
    BuiltinModel,
    MixtureNetwork,
    builtin_info,
    captions,
    match_prompt,
    posterior_mean,
    posterior_mean_given_first,
)
from cogsample.sampling.denoiser import Denoiser, DenoiserConfig, Level
from cogsample.sampling.guidance import NoGuidance
from cogsample.sampling.scalings import VideoScaling
from cogsample.sampling.schedules import ZeroSNRDDPM

F, H, W = 9, 64, 96  # 3 latent frames of 8x12: small enough for many sampler runs
TABLE = ZeroSNRDDPM(1.0).table(1000).double()


@pytest.fixture(autouse=True)
def _one_thread():
    """The tensors here are tiny: intra-op threads only add barriers, which stall for seconds when
    the cores are busy with other work (the file takes ~2 s either way on an idle machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> BuiltinModel:
    return BuiltinModel()


@pytest.fixture(scope="module")
def model_i2v() -> BuiltinModel:
    return BuiltinModel(i2v=True)


def block_means(video: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) -> each 8x8 block replaced by its mean (what the VAE keeps)."""
    lead = video.shape[:-3]
    flat = video.reshape(-1, *video.shape[-3:])
    pooled = torch.nn.functional.avg_pool2d(flat, 8)
    up = pooled.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
    return up.reshape(*lead, *video.shape[-3:])


def clip_video(k: int, frames: int = F, height: int = H, width: int = W) -> torch.Tensor:
    return CLIPS[k].render(frames, height, width, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# clips


def test_clip_library_renders_at_any_size():
    assert len(CLIPS) >= 12
    assert len(set(captions())) == len(CLIPS)
    for clip in CLIPS:
        for frames, height, width in ((1, 16, 16), (5, 32, 80), (13, 48, 112)):
            v = clip.render(frames, height, width)
            assert v.shape == (frames, 3, height, width) and v.dtype == torch.float32
            assert 0 <= float(v.min()) and float(v.max()) <= 1
        assert torch.equal(clip.render(9, 32, 48), clip.render(9, 32, 48))
    # normalized time: frame 2 of 5 is frame 4 of 9
    assert torch.allclose(CLIPS[0].render(5, 32, 48)[2], CLIPS[0].render(9, 32, 48)[4])


def test_clips_move_and_have_distinct_first_frames():
    firsts = torch.stack([clip_video(k)[0] for k in range(len(CLIPS))])
    dist = (firsts[:, None] - firsts[None]).abs().mean(dim=(2, 3, 4))
    off = dist + torch.eye(len(CLIPS)) * 1e9
    assert float(off.min()) > 0.05  # image-to-video can tell every clip from its first frame
    for k in range(len(CLIPS)):
        v = clip_video(k)
        assert float((v - v[:1]).abs().amax()) > 0.3, CLIPS[k].caption  # something moves


# ----------------------------------------------------------------------------------------------
# the linear VAE


def test_vae_shapes_and_scale(model):
    video = torch.stack([clip_video(k) for k in range(4)])
    z = model.encode_video(video * 2 - 1)
    assert z.shape == latent_shape(4, F, H, W) and z.dtype == torch.float32
    assert 0.3 < float(z.std()) < 1.5 and float(z.abs().max()) <= 1.0 + 1e-6  # roughly unit scale
    out = model.decode(z)
    assert out.shape == (4, F, 3, H, W) and out.dtype == torch.float32
    assert model.latents_for_vae(z) is z


def test_decode_encode_is_block_mean():
    vae = BlockVAE()
    video = torch.rand(2, F, 3, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = vae.decode(vae.encode(video))
    assert torch.allclose(out.double(), block_means(video), atol=1e-6)


def test_decoder_is_pseudo_inverse():
    vae = BlockVAE()
    g = torch.Generator().manual_seed(1)
    video = torch.rand(2, F, 3, H, W, dtype=torch.float64, generator=g)
    z = vae.encode(video)
    # E D E = E: latents in the encoder's range come back unchanged
    assert torch.allclose(vae.encode(vae.decode(z).double()), z, atol=1e-6)
    # D E D = D for any latent small enough not to clip; E D is an orthogonal projection
    z = 0.2 * torch.randn(1, 3, 16, H // 8, W // 8, dtype=torch.float64, generator=g)
    d = vae.decode(z).double()
    assert torch.allclose(vae.decode(vae.encode(d)).double(), d, atol=1e-6)
    proj = vae.encode(d)
    assert torch.allclose(vae.encode(vae.decode(proj).double()), proj, atol=1e-6)
    assert float(((z - proj) * proj).sum().abs()) < 1e-6
    assert torch.allclose(vae.dec @ vae.enc, torch.eye(12, dtype=torch.float64), atol=1e-12)


def test_encode_image_is_latent_frame_zero(model):
    video = clip_video(3)[None]
    img = video[:, 0] * 2 - 1
    assert torch.allclose(model.encode_image(img), model.encode_video(video * 2 - 1)[:, :1], atol=1e-6)


# ----------------------------------------------------------------------------------------------
# the closed-form posterior


def mixture(k: int = 3, d: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(k, d, dtype=torch.float64, generator=g)
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)[:k]
    return mu, w / w.sum()


def draw(mu: torch.Tensor, w: torch.Tensor, tau: float, n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(w, n, replacement=True, generator=g)
    return mu[k] + tau * torch.randn(n, mu.shape[1], dtype=torch.float64, generator=g)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.7, 0.95, float(TABLE[0])])
def test_posterior_mean_matches_monte_carlo(alpha):
    """Self-normalised importance estimate: prior draws weighted by p(x_t | x0)."""
    tau, n = 0.3, 400_000
    mu, w = mixture()
    g = torch.Generator().manual_seed(2)
    x0 = draw(mu, w, tau, n, g)
    s = (1 - alpha**2) ** 0.5
    xt = alpha * draw(mu, w, tau, 3, g) + s * torch.randn(3, 2, dtype=torch.float64, generator=g)
    exact = posterior_mean(xt, torch.full((3,), alpha, dtype=torch.float64), mu, w.log().expand(3, -1), tau)
    for i in range(3):
        logp = -((xt[i] - alpha * x0) ** 2).sum(1) / (2 * s**2)
        p = torch.softmax(logp, 0)
        est = (p[:, None] * x0).sum(0)
        ess = 1 / float((p * p).sum())
        spread = float(((p[:, None] * (x0 - est) ** 2).sum(0)).max()) ** 0.5
        assert torch.allclose(exact[i], est, atol=4 * spread / ess**0.5 + 1e-9), (alpha, i, exact[i], est, ess)


def test_posterior_mean_limits():
    tau = 0.2
    mu, w = mixture()
    x = torch.randn(4, 2, dtype=torch.float64) * 3
    # pure noise: the prior mean, whatever x is
    out = posterior_mean(x, torch.zeros(4, dtype=torch.float64), mu, w.log().expand(4, -1), tau)
    assert torch.allclose(out, (w[:, None] * mu).sum(0).expand(4, -1), atol=1e-12)
    # a dropped component (weight 0) never contributes
    lw = torch.log(torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)).expand(4, -1)
    out = posterior_mean(x, torch.zeros(4, dtype=torch.float64), mu, lw, tau)
    assert torch.allclose(out, mu[1].expand(4, -1), atol=1e-12)
    # alpha -> 1: x itself
    out = posterior_mean(x, torch.ones(4, dtype=torch.float64), mu, w.log().expand(4, -1), tau)
    assert torch.allclose(out, x, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.6, float(TABLE[0])])
def test_posterior_given_first_frame_matches_monte_carlo(alpha):
    """Condition on x0[0] = y with a narrow kernel (bias O(eps^2 / tau^2)) and weight by p(x_t[1:] | x0)."""
    tau, eps, n = 0.3, 0.01, 1_000_000
    mu, w = mixture(d=3, seed=3)  # coordinate 0 plays frame 0, coordinates 1, 2 the rest
    g = torch.Generator().manual_seed(4)
    x0 = draw(mu, w, tau, n, g)
    s = (1 - alpha**2) ** 0.5
    ref = draw(mu, w, tau, 1, g)[0]
    y = ref[:1]
    xt = alpha * ref[1:] + s * torch.randn(2, dtype=torch.float64, generator=g)
    exact = posterior_mean_given_first(
        xt[None], y[None], torch.tensor([alpha], dtype=torch.float64), mu[:, :1], mu[:, 1:], w.log()[None], tau
    )[0]
    logp = -((y - x0[:, :1]) ** 2).sum(1) / (2 * eps**2) - ((xt - alpha * x0[:, 1:]) ** 2).sum(1) / (2 * s**2)
    p = torch.softmax(logp, 0)
    est = (p[:, None] * x0[:, 1:]).sum(0)
    ess = 1 / float((p * p).sum())
    spread = float(((p[:, None] * (x0[:, 1:] - est) ** 2).sum(0)).max()) ** 0.5
    assert torch.allclose(exact, est, atol=4 * spread / ess**0.5 + 0.005), (exact, est, ess)


def denoise(model: VideoModel, x: torch.Tensor, t: int, context: torch.Tensor, image=None) -> torch.Tensor:
    """The network's x0 through the core's Denoiser, at exactly the table level of timestep t."""
    den = Denoiser(model.network, DenoiserConfig(VideoScaling(), table=ZeroSNRDDPM(1.0)))
    level = Level(TABLE[t].float().reshape(1), "alpha", 0, t)
    return den(x, level, context, image)


@pytest.mark.parametrize("t", [999, 500, 100, 0])
def test_network_v_prediction_gives_posterior_mean(model, t):
    shape = latent_shape(2, F, H, W)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
    ctx = torch.cat([model.encode_prompts(["a red ball"]), torch.zeros(1, 1, len(CLIPS))]).double()
    got = denoise(model, x, t, ctx)
    assert got.dtype == torch.float64 and got.shape == shape
    mu = model.network.means(shape[1], shape[3], shape[4]).mu
    log_w = model.network.log_weights(ctx, torch.float64)
    want = posterior_mean(x.reshape(2, -1), TABLE[t].expand(2), mu, log_w, model.network.tau)
    # to float32 rounding: the Denoiser's c_skip, c_out are float32
    assert torch.allclose(got.reshape(2, -1), want, atol=1e-5)
    # float32 in, float32 out
    assert model.network(x.float(), torch.tensor([float(t)] * 2), ctx.float()).dtype == torch.float32


def test_network_i2v_first_frame_is_the_image(model_i2v):
    shape = latent_shape(1, F, H, W)
    y = model_i2v.encode_image(clip_video(5)[:1] * 2 - 1).double()
    image = torch.cat([y, y.new_zeros(1, shape[1] - 1, *shape[2:])], dim=1)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zero = torch.zeros(1, 1, len(CLIPS), dtype=torch.float64)
    for t in (999, 400, 0):
        out = denoise(model_i2v, x, t, zero, image)
        assert torch.allclose(out[:, 0], y[:, 0], atol=1e-5)
    # at pure noise the other frames are the mean of the clips whose first frame is y: clip 5's
    mu = model_i2v.network.means(shape[1], shape[3], shape[4]).mu[5].view(shape[1:])
    out = denoise(model_i2v, x, 999, zero, image)
    assert torch.allclose(out[0, 1:], mu[1:], atol=1e-6)


def test_network_rejects_bad_inputs(model, model_i2v):
    x = torch.zeros(latent_shape(1, F, H, W))
    t, ctx = torch.tensor([10.0]), torch.zeros(1, 1, len(CLIPS))
    with pytest.raises(ValueError, match="16 latent \\+ 16 image"):
        model_i2v.network(x, t, ctx)
    with pytest.raises(ValueError, match="text-to-video"):
        model.network(torch.cat([x, x], dim=2), t, ctx)
    with pytest.raises(ValueError, match="clip weights"):
        model.network(x, t, torch.zeros(1, 1, 4096))
    assert model.network(x, t, ctx, ofs=torch.ones(1)).shape == x.shape  # ofs is ignored


def test_means_are_cached_per_size():
    net = MixtureNetwork()
    a = net.means(3, 8, 12)
    assert net.means(3, 8, 12) is a
    assert net.means(2, 4, 6).mu.shape == (len(CLIPS), 2 * 16 * 4 * 6)
    # a clip's latent is the encoding of its rendering (rendered in float32 there)
    enc = BlockVAE().encode(clip_video(7)[None])
    assert torch.allclose(a.mu[7], enc.reshape(-1), atol=1e-5)
    small = BlockVAE().encode(CLIPS[2].render(5, 32, 48, dtype=torch.float64)[None])
    assert torch.allclose(net.means(2, 4, 6).mu[2], small.reshape(-1), atol=1e-5)


# ----------------------------------------------------------------------------------------------
# prompts


def test_zero_context_is_uniform(model):
    shape = latent_shape(1, F, H, W)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([300.0])
    k = len(CLIPS)
    zero = model.network(x, t, torch.zeros(1, 1, k, dtype=torch.float64))
    uniform = model.network(x, t, torch.full((1, 1, k), 1.0 / k, dtype=torch.float64))
    empty = model.network(x, t, model.encode_prompts([""]).double())
    assert torch.allclose(zero, uniform, atol=1e-12) and torch.allclose(zero, empty, atol=1e-12)


def test_prompt_restricts_to_matching_clips(model):
    ctx = model.encode_prompts(["a red ball bouncing on a blue background", "balls", "Spinning STARS!", "a box"])
    assert ctx.shape == (4, 1, len(CLIPS)) and torch.allclose(ctx.sum(-1), torch.ones(4, 1))

    def chosen(row: torch.Tensor) -> set[str]:
        return {CLIPS[i].caption for i in torch.nonzero(row[0]).flatten().tolist()}

    assert chosen(ctx[0]) == {"a red ball bouncing on a blue background"}
    assert chosen(ctx[1]) == {c.caption for c in CLIPS if c.shape == "circle"}
    assert chosen(ctx[2]) == {"a yellow star spinning on a blue background"}
    assert chosen(ctx[3]) == {c.caption for c in CLIPS if c.shape == "square"}
    # colour roles: "white" is the shape's colour, "black" the background's
    w = match_prompt("a white bar on a black background")
    assert [CLIPS[i].caption for i, v in enumerate(w) if v] == ["a white bar rotating on a black background"]
    w = match_prompt("something moving from left to right")
    assert [CLIPS[i].caption for i, v in enumerate(w) if v] == [CLIPS[2].caption]


def test_unknown_prompt_warns_and_uses_all_clips(model):
    with pytest.warns(UserWarning, match=r"'a cat playing piano'.*a red ball bouncing"):
        ctx = model.encode_prompts(["a cat playing piano"])
    assert torch.allclose(ctx, torch.full_like(ctx, 1 / len(CLIPS)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert match_prompt("") == match_prompt("   ") == [1 / len(CLIPS)] * len(CLIPS)


def test_info_and_sizes():
    info = builtin_info()
    assert (info.name, info.i2v, info.latent_channels) == ("builtin", False, 16)
    assert builtin_info(i2v=True).name == "builtin-i2v" and builtin_info(i2v=True).i2v
    assert (info.frames - 1) % 4 == 0 and info.height % 16 == 0 and info.width % 16 == 0
    m = BuiltinModel()
    assert m.info == info and isinstance(m, VideoModel)
    m.check_size(25, 160, 240)
    with pytest.raises(ValueError, match="frames"):
        m.check_size(24, 160, 240)
    with pytest.raises(ValueError, match="width"):
        m.check_size(25, 160, 250)


# ----------------------------------------------------------------------------------------------
# sampling


def nearest_clip(video: torch.Tensor) -> tuple[int, list[float]]:
    errs = [float((video - block_means(clip_video(k))).abs().mean()) for k in range(len(CLIPS))]
    return min(range(len(errs)), key=errs.__getitem__), errs


@pytest.mark.parametrize(
    ("prompt", "clip"),
    [
        ("a red ball bouncing on a blue background", 0),
        ("a yellow star", 12),
        ("a purple ring shrinking", 10),
    ],
)
def test_sampling_lands_on_the_prompted_clip(model, prompt, clip):
    shape = latent_shape(1, F, H, W)
    x = SeededNoise([7]).initial(shape)
    cond = Conditioning(model.encode_prompts([prompt]))
    latents = sample(model.network, x, cond, SamplingConfig(), noise=SeededNoise([7]))  # CogVideoX-5B's sampler
    video = model.decode(latents)[0].double()
    k, errs = nearest_clip(video)
    assert k == clip and errs[clip] < 0.02, (errs[clip], sorted(errs)[:3])


def test_unconditional_sampling_covers_many_clips(model):
    shape = latent_shape(8, F, H, W)
    seeds = list(range(100, 108))
    x = SeededNoise(seeds).initial(shape)
    cond = Conditioning(torch.zeros(8, 1, len(CLIPS)))
    latents = sample(model.network, x, cond, SamplingConfig(guidance=NoGuidance()), noise=SeededNoise(seeds))
    found = [nearest_clip(v.double()) for v in model.decode(latents)]
    assert all(errs[k] < 0.02 for k, errs in found)
    assert len({k for k, _ in found}) >= 4


@pytest.mark.parametrize("clip", [1, 9, 14])
def test_i2v_sampling_follows_the_image(model_i2v, clip):
    shape = latent_shape(1, F, H, W)
    image = clip_video(clip)[0].float() * 2 - 1
    first = model_i2v.encode_image(image[None])
    image_latents = torch.cat([first, first.new_zeros(1, shape[1] - 1, *shape[2:])], dim=1)
    # the empty prompt: unconditional, the image alone picks the clip
    cond = Conditioning(model_i2v.encode_prompts([""]), image_latents=image_latents)
    x = SeededNoise([3]).initial(shape)
    latents = sample(model_i2v.network, x, cond, SamplingConfig(), noise=SeededNoise([3]))
    video = model_i2v.decode(latents)[0].double()
    k, errs = nearest_clip(video)
    assert k == clip and errs[clip] < 0.02, (errs[clip], sorted(errs)[:3])
    # frame 0 is the image up to the sampler's own table snapping (the reference's, not the model's)
    assert torch.allclose(video[0], block_means(clip_video(clip)[:1])[0], atol=0.01)
