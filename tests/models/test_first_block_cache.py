"""First-block caching (cogsample.models.first_block_cache) on tiny random-weight diffusers CogVideoX
transformers with 3 blocks (the tiny folders' transformers have 1, nothing to skip)."""

from __future__ import annotations

import pytest
import torch

from cogsample.models.cogvideox import CogVideoXTransformerNetwork
from cogsample.models.first_block_cache import FirstBlockCache, FirstBlockCachedNetwork
from cogsample.models.tiny import TinySize
from cogsample.models.tiny import tiny_transformer as build_transformer
from cogsample.sampling.cache import CacheConfig, apply_cache
from cogsample.sampling.config import SamplingConfig, sample
from cogsample.sampling.guidance import Conditioning
from cogsample.sampling.noise import SeededNoise

from .tiny_cogvideox import NATIVE, TEXT_LEN

pytest.importorskip("diffusers")

LAYERS = 3
SHAPE = (2, 3, 16, NATIVE["latent_height"], NATIVE["latent_width"])


def tiny_transformer(num_layers: int = LAYERS, seed: int = 0):
    """The tiny t2v (5B-style, rotary) transformer of the tiny folders with ``num_layers`` blocks."""
    torch.manual_seed(seed)
    return build_transformer("t2v", TinySize(num_layers=num_layers))


def steps(n: int = 6, batch: int = 2, seed: int = 1):
    """Inputs of ``n`` consecutive calls: x drifting slowly, t going down 20 per call."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *SHAPE[1:]), generator=g)
    drift = torch.randn((batch, *SHAPE[1:]), generator=g)
    ctx = torch.randn(batch, TEXT_LEN, 32, generator=g)
    return [(x + 0.01 * k * drift, torch.full((batch,), 999.0 - 20 * k), ctx) for k in range(n)]


class BlockCounter:
    """Forward hooks counting the calls of every transformer block."""

    def __init__(self, blocks):
        self.counts = [0] * len(blocks)
        self.handles = [b.register_forward_hook(self._hook(i)) for i, b in enumerate(blocks)]

    def _hook(self, i):
        def hook(module, args, output):
            self.counts[i] += 1

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def transformer():
    return tiny_transformer()


def test_tiny_threshold_is_bit_identical(transformer):
    net = CogVideoXTransformerNetwork(transformer)
    inputs = steps()
    ref = [net(*a) for a in inputs]
    cached = apply_cache(net, CacheConfig(1e-9, kind="first-block"))
    assert isinstance(cached, FirstBlockCachedNetwork)
    counter = BlockCounter(cached.cache._original)
    try:
        for a, r in zip(inputs, ref, strict=True):
            assert torch.equal(cached(*a), r)
        assert (cached.calls, cached.computed, cached.reused) == (6, 6, 0)
        assert counter.counts == [6] * LAYERS
        assert cached.cache.last_change is not None and cached.cache.last_change > 1e-9
    finally:
        counter.remove()
        cached.detach()


def test_tiny_threshold_sampling_run_is_bit_identical(transformer):
    net = CogVideoXTransformerNetwork(transformer)
    cond = Conditioning(torch.randn(1, TEXT_LEN, 32, generator=torch.Generator().manual_seed(3)))
    config = SamplingConfig(steps=5)

    def run(network):
        noise = SeededNoise([0])
        return sample(network, noise.initial((1, *SHAPE[1:])), cond, config, noise=noise)

    ref = run(net)
    cached = apply_cache(net, CacheConfig(1e-9, kind="first-block"))
    try:
        assert torch.equal(run(cached), ref)
        assert (cached.computed, cached.reused) == (5, 0)
    finally:
        cached.detach()


def test_large_threshold_skips_later_blocks(transformer):
    net = CogVideoXTransformerNetwork(transformer)
    inputs = steps(7)
    ref = [net(*a) for a in inputs]
    cache = FirstBlockCache(CacheConfig(1e6, kind="first-block", max_skips=2)).attach(transformer)
    counter = BlockCounter(cache._original)
    try:
        outs = [net(*a) for a in inputs]
        # computed at calls 1, 4, 7; block 0 runs on every call
        assert (cache.calls, cache.computed, cache.reused) == (7, 3, 4)
        assert counter.counts == [7, 3, 3]
        for k in (0, 3, 6):
            assert torch.equal(outs[k], ref[k])
        for k in (1, 2, 4, 5):
            assert torch.isfinite(outs[k]).all() and not torch.equal(outs[k], ref[k])
    finally:
        counter.remove()
        cache.detach()


def test_reused_residual_reproduces_an_unchanged_call(transformer):
    """Same input twice: the second call reuses (d = 0) and block 0's output plus the cached
    residual of blocks 1..N-1 gives back the computed call's hidden and text states."""
    cache = FirstBlockCache(CacheConfig(1e6, kind="first-block")).attach(transformer)
    seen = []
    handle = transformer.transformer_blocks[0].register_forward_hook(lambda m, a, out: seen.append(out))
    try:
        net = CogVideoXTransformerNetwork(transformer)
        x, t, ctx = steps(1)[0]
        first = net(x, t, ctx)
        second = net(x, t, ctx)
        assert (cache.computed, cache.reused) == (1, 1) and cache.last_change == 0.0
        torch.testing.assert_close(second, first, rtol=1e-5, atol=1e-5)
        for a, b in zip(seen[0], seen[1], strict=True):  # (hidden, text) after the block stack
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    finally:
        handle.remove()
        cache.detach()


def test_batch_and_text_changes_recompute(transformer):
    net = CogVideoXTransformerNetwork(transformer)
    cached = apply_cache(net, CacheConfig(1e6, kind="first-block", max_skips=10))
    try:
        x, t, ctx = steps(1)[0]
        cached(x, t, ctx)
        cached(x[:1], t[:1], ctx[:1])  # 2B -> B rows
        assert (cached.computed, cached.reused) == (2, 0)
        cached(x[:1], t[:1], ctx[:1])
        assert (cached.computed, cached.reused) == (2, 1)
        cached(x[:1], t[:1], ctx[:1] + 0.5)  # another prompt: other text tokens
        assert (cached.computed, cached.reused) == (3, 1)
        cached.reset()
        assert (cached.calls, cached.computed, cached.reused) == (0, 0, 0)
        cached(x[:1], t[:1], ctx[:1] + 0.5)  # same as before the reset, but a new video computes
        assert (cached.computed, cached.reused) == (1, 0)
    finally:
        cached.detach()


def test_detach_restores_the_transformer():
    transformer = tiny_transformer(seed=5)
    net = CogVideoXTransformerNetwork(transformer)
    original = transformer.transformer_blocks
    keys = list(transformer.state_dict())
    inputs = steps(3)
    ref = [net(*a) for a in inputs]
    cached = apply_cache(net, CacheConfig(1e6, kind="first-block"))
    assert transformer.transformer_blocks is not original
    with pytest.raises(RuntimeError, match="already has a first-block cache"):
        FirstBlockCache(CacheConfig(0.1)).attach(transformer)
    [cached(*a) for a in inputs]
    assert cached.reused > 0
    assert cached.detach() is net
    assert transformer.transformer_blocks is original
    assert list(transformer.state_dict()) == keys
    counter = BlockCounter(original)
    try:
        for a, r in zip(inputs, ref, strict=True):
            assert torch.equal(net(*a), r)
        assert counter.counts == [3] * LAYERS
    finally:
        counter.remove()
    assert cached.calls == cached.computed + cached.reused == 3  # the counters outlive detach()
    assert cached.detach() is net  # a second detach() does nothing
    with pytest.raises(RuntimeError, match="detached"):
        cached(*inputs[0])
    with pytest.raises(RuntimeError, match="not attached"):
        cached.cache.detach()


def test_needs_two_blocks():
    with pytest.raises(ValueError, match="at least 2 blocks"):
        FirstBlockCache(CacheConfig(0.1)).attach(tiny_transformer(num_layers=1))
    with pytest.raises(TypeError, match="CogVideoXTransformer3DModel"):
        FirstBlockCache(CacheConfig(0.1)).attach(torch.nn.Linear(2, 2))


def test_apply_cache_asks_the_network(transformer):
    net = CogVideoXTransformerNetwork(transformer)
    cached = net.first_block_cache(CacheConfig(0.1, kind="first-block"))
    try:
        assert isinstance(cached, FirstBlockCachedNetwork) and cached.network is net and cached.cache.reduce is None
    finally:
        cached.detach()

    class Own:
        """A network of another kind that brings its own first-block cache."""

        def __init__(self):
            self.asked = []

        def __call__(self, x, t, context, ofs=None):
            return x

        def first_block_cache(self, config):
            self.asked.append(config)
            return "made by the network"

    own, config = Own(), CacheConfig(0.1, kind="first-block")
    assert apply_cache(own, config) == "made by the network" and own.asked == [config]


def run_reduced(transformer, reduce, config, inputs):
    """Counters and last change of a first-block cache with ``reduce`` over ``inputs``."""
    net = CogVideoXTransformerNetwork(transformer)
    cached = net.first_block_cache(config, reduce=reduce)
    try:
        outs = [cached(*a) for a in inputs]
        return (cached.calls, cached.computed, cached.reused), cached.cache.last_change, outs
    finally:
        cached.detach()


def test_reduce_sees_the_stats_and_a_scale_leaves_the_decisions(transformer):
    """``reduce`` gets the stacked (3,) indicator sums once per forward that reads them; a common
    scale (a SUM over ranks of equal shards) changes no ratio and keeps a zero text change zero."""
    inputs = [*steps(5), steps(1)[0]]  # the last call repeats the first call's input
    inputs[3] = (inputs[3][0], inputs[3][1], inputs[3][2] + 0.5)  # another prompt at call 4
    config = CacheConfig(0.3, kind="first-block", max_skips=2)
    seen = []

    def double(stats):
        seen.append(stats.clone())
        return 2 * stats

    counts, change, outs = run_reduced(transformer, None, config, inputs)
    assert counts[1] > 1 and counts[2] > 0  # both branches taken: the test decides something
    got_counts, got_change, got_outs = run_reduced(transformer, double, config, inputs)
    assert (got_counts, got_change) == (counts, change)
    for a, b in zip(outs, got_outs, strict=True):
        assert torch.equal(a, b)
    assert len(seen) == counts[0] - 1  # every call but the first reads the indicator here
    assert all(s.shape == (3,) and s.dtype == torch.float32 for s in seen)
    assert seen[2][2] > 0 and seen[0][2] == 0  # the text term: zero, and not for the other prompt


def test_reduce_decides(transformer):
    """The decision reads the reduced stats: all-zero sums (nothing moved anywhere) reuse what the
    local ones would recompute."""
    inputs = steps(4)
    config = CacheConfig(1e-9, kind="first-block", max_skips=10)
    assert run_reduced(transformer, None, config, inputs)[0] == (4, 4, 0)
    assert run_reduced(transformer, torch.zeros_like, config, inputs)[0] == (4, 1, 3)
    with pytest.raises(TypeError, match="reduce must be callable"):
        FirstBlockCache(config, reduce=2.0)
