"""Latent shapes and noise sources."""

import pytest
import torch

from cogsample.sampling.noise import GlobalNoise, ReplayNoise, SeededNoise, latent_shape


def test_latent_shape_of_cogvideox():
    assert latent_shape(1, 49, 480, 720) == (1, 13, 16, 60, 90)
    assert latent_shape(2, 81, 768, 1360) == (2, 21, 16, 96, 170)
    assert latent_shape(1, 1, 16, 16) == (1, 1, 16, 2, 2)


@pytest.mark.parametrize(
    "args, match",
    [
        ((1, 48, 480, 720), r"frames must be of the form 4k\+1 .* got 48; nearest: 45 or 49"),
        ((1, 49, 481, 720), "height must be a multiple of 16 .* got 481; nearest: 480 or 496"),
        ((1, 49, 480, 700), "width must be a multiple of 16 .* got 700"),
        ((0, 49, 480, 720), "batch must be an integer >= 1, got 0"),
        ((1, 0, 480, 720), "frames must be an integer >= 1, got 0"),
        ((1, 49.0, 480, 720), "frames must be an integer"),
    ],
)
def test_bad_sizes_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        latent_shape(*args)


def test_seeded_noise_reproduces_and_is_batch_independent():
    shape = latent_shape(3, 9, 32, 48)
    a = SeededNoise.from_seed(100, 3).initial(shape)
    b = SeededNoise.from_seed(100, 3).initial(shape)
    c = SeededNoise([101]).initial((1, *shape[1:]))
    assert torch.equal(a, b) and torch.equal(a[1:2], c)
    assert abs(a.mean().item()) < 0.1 and abs(a.std().item() - 1) < 0.1


def test_seeded_noise_continues_each_stream():
    n = SeededNoise([1, 2])
    x0 = n.initial((2, 4))
    d = n.draw(x0)
    solo = SeededNoise([2])
    assert torch.equal(solo.initial((1, 4)), x0[1:]) and torch.equal(solo.draw(x0[1:]), d[1:])
    with pytest.raises(ValueError, match="batch of 3 requested from 2 seeds"):
        n.draw(torch.zeros(3, 4))


def test_global_noise_is_torch_global_stream_with_discards():
    torch.manual_seed(5)
    want = [torch.randn(2, 3) for _ in range(3)]
    torch.manual_seed(5)
    g = GlobalNoise()
    first = g.initial((2, 3))
    g.discard(first)
    assert torch.equal(first, want[0]) and torch.equal(g.draw(first), want[2])


def test_replay_noise_checks_shapes_and_count():
    r = ReplayNoise([torch.zeros(2, 3), torch.ones(2, 3)])
    r.discard(torch.empty(2, 3))
    assert torch.equal(r.draw(torch.empty(2, 3)), torch.ones(2, 3)) and r.exhausted
    with pytest.raises(ValueError, match="ran out"):
        r.draw(torch.empty(2, 3))
    with pytest.raises(ValueError, match=r"has shape \(2, 3\), the sampler asked for \(1, 3\)"):
        ReplayNoise([torch.zeros(2, 3)]).draw(torch.empty(1, 3))
