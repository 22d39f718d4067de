"""Step caching (cogsample.sampling.cache) on the built-in exact network and on hand-made inputs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pytest
import torch

from cogsample.models.builtin import BuiltinModel
from cogsample.sampling.cache import CacheConfig, OutputCache, apply_cache
from cogsample.sampling.config import SamplingConfig, sample
from cogsample.sampling.guidance import CFG, Conditioning, Guidance
from cogsample.sampling.noise import SeededNoise, latent_shape

SHAPE = latent_shape(1, 5, 32, 48)  # (1, 2, 16, 4, 6)
PROMPT = "a red ball bouncing on a blue background"
STEPS = 10


class Recording:
    """A network that records which of the cache's calls reached it, and with how many rows."""

    def __init__(self, net, cache_ref: list | None = None):
        self.net = net
        self.calls = 0
        self.rows: list[int] = []
        self.at: list[int] = []  # the cache's call number of each real call
        self.cache_ref = cache_ref if cache_ref is not None else []

    def __call__(self, x, t, context, ofs=None):
        self.calls += 1
        self.rows.append(x.shape[0])
        if self.cache_ref:
            self.at.append(self.cache_ref[0].calls)
        return self.net(x, t, context, ofs=ofs)


def cached(net, config: CacheConfig) -> tuple[OutputCache, Recording]:
    ref: list = []
    rec = Recording(net, ref)
    cache = OutputCache(rec, config)
    ref.append(cache)
    return cache, rec


@pytest.fixture(scope="module")
def model() -> BuiltinModel:
    return BuiltinModel()


def run(net, model: BuiltinModel, config: SamplingConfig | None = None) -> torch.Tensor:
    noise = SeededNoise([0])
    x = noise.initial(SHAPE)
    cond = Conditioning(model.encode_prompts([PROMPT]))
    return sample(net, x, cond, config or SamplingConfig(steps=STEPS), noise=noise)


@pytest.fixture(scope="module")
def reference(model: BuiltinModel) -> torch.Tensor:
    return run(model.network, model)


# --------------------------------------------------------------------------- whole sampling runs


def test_tiny_threshold_is_bit_identical(model, reference):
    cache, rec = cached(model.network, CacheConfig.output(1e-9))
    out = run(cache, model)
    assert torch.equal(out, reference)
    assert (cache.calls, cache.computed, cache.reused) == (STEPS, STEPS, 0)
    assert rec.calls == STEPS and set(rec.rows) == {2}  # DynamicCFG: one 2B-row call per step
    assert cache.last_change is not None and cache.last_change > 1e-9  # the indicator was read


@pytest.mark.parametrize("max_skips", [1, 3])
def test_large_threshold_reuses_up_to_max_skips(model, reference, max_skips):
    cache, rec = cached(model.network, CacheConfig.output(1e6, max_skips=max_skips))
    out = run(cache, model)
    # compute, then max_skips reuses, then compute ...
    assert rec.at == list(range(1, STEPS + 1, max_skips + 1))
    assert cache.computed == rec.calls == len(rec.at)
    assert cache.calls == cache.computed + cache.reused == STEPS
    assert cache.reused > 0
    assert torch.isfinite(out).all()
    assert not torch.equal(out, reference)  # reuse is approximate


def test_warmup_computes_the_first_calls(model):
    cache, rec = cached(model.network, CacheConfig.output(1e6, max_skips=2, warmup=4))
    run(cache, model)
    assert rec.at == [1, 2, 3, 4, 7, 10]


@dataclass(frozen=True)
class Alternating(Guidance):
    """CFG on even steps (2B rows), conditional only on odd steps (B rows)."""

    scale: float = 6.0

    def scale_at(self, step, timestep, num_steps):
        return None if step % 2 else self.scale


def test_batch_change_forces_recompute(model):
    config = SamplingConfig(steps=STEPS, guidance=Alternating())
    ref = run(model.network, model, config)
    cache, rec = cached(model.network, CacheConfig.output(1e6, max_skips=3))
    out = run(cache, model, config)
    assert rec.rows == [2, 1] * (STEPS // 2)
    assert (cache.computed, cache.reused) == (STEPS, 0)
    assert torch.equal(out, ref)
    # the same threshold reuses when the batch stays put
    cache, _ = cached(model.network, CacheConfig.output(1e6, max_skips=3))
    run(cache, model, SamplingConfig(steps=STEPS, guidance=CFG(6.0)))
    assert cache.reused > 0


def test_reset_starts_a_new_video(model, reference):
    cache, rec = cached(model.network, CacheConfig.output(1e6))
    run(cache, model)
    assert cache.reused > 0
    cache.reset()
    assert (cache.calls, cache.computed, cache.reused, cache.accumulated) == (0, 0, 0, 0.0)
    # after the reset nothing from the first video is reused: the first call runs the network
    n = rec.calls
    run(cache, model)
    assert rec.calls > n and rec.at[len(rec.at) - (rec.calls - n)] == 1
    # and a tiny threshold after a reset reproduces the uncached run
    cache2, _ = cached(model.network, CacheConfig.output(1e-9))
    run(cache2, model)
    cache2.reset()
    assert torch.equal(run(cache2, model), reference)


# --------------------------------------------------------------------------- the indicator, call by call


def linear_net(x, t, context, ofs=None):
    return x * t.view(-1, 1, 1, 1, 1) + context.sum()


X = torch.ones(1, 1, 16, 2, 2)
T = torch.tensor([500.0])


def test_indicator_accumulates_relative_l1_changes():
    cache, rec = cached(linear_net, CacheConfig.output(0.025, max_skips=10))
    ctx = torch.zeros(1, 1, 4)
    first = cache(X, T, ctx)
    assert rec.at == [1]
    second = cache(X * 1.01, T, ctx)  # d = 0.01 (x) + 0 (t)
    assert cache.last_change == pytest.approx(0.01, rel=1e-5)
    assert second is first and rec.at == [1]
    cache(X * 1.02, T, ctx)  # d = 0.01 / 1.01, A = 0.0199 < 0.025: reuse
    assert cache.accumulated == pytest.approx(0.01 + 0.01 / 1.01, rel=1e-5)
    assert rec.at == [1]
    third = cache(X * 1.03, T, ctx)  # A = 0.0298 >= 0.025: compute, A restarts
    assert rec.at == [1, 4] and cache.accumulated == 0.0
    assert torch.equal(third, linear_net(X * 1.03, T, ctx))
    # the timestep's relative change counts as well: 500 -> 490 is 0.02, then 490 -> 480 is 0.0204
    cache(X * 1.03, T - 10, ctx)
    assert cache.last_change == pytest.approx(0.02, rel=1e-5) and rec.at == [1, 4]
    cache(X * 1.03, T - 20, ctx)
    assert rec.at == [1, 4, 6]
    assert cache.calls == cache.computed + cache.reused == 6


def test_other_inputs_force_recompute():
    cache, rec = cached(linear_net, CacheConfig.output(1e6, max_skips=100))
    ctx = torch.zeros(1, 1, 4)
    cache(X, T, ctx)
    cache(X, T, ctx.clone())  # another tensor with equal values: reusable
    assert rec.calls == 1
    ctx2 = ctx + 1  # other values
    cache(X, T, ctx2)
    assert rec.calls == 2
    cache(X, T, ctx2)  # the very same, unmodified tensor: reusable
    assert rec.calls == 2
    ctx2.add_(1)  # the same tensor, modified in place after the cached call
    cache(X, T, ctx2)
    assert rec.calls == 3
    cache(X, T, ctx2, ofs=torch.tensor([2.0]))  # ofs appears
    assert rec.calls == 4
    cache(X, T, ctx2, ofs=torch.tensor([3.0]))  # ofs changes
    assert rec.calls == 5
    cache(X, T, ctx2, ofs=torch.tensor([3.0]))  # an equal ofs: reusable
    assert rec.calls == 5
    cache(X.double(), T, ctx2, ofs=torch.tensor([3.0]))  # dtype
    assert rec.calls == 6
    cache(torch.cat([X, X]).double(), T.expand(2), torch.cat([ctx2, ctx2]), ofs=torch.tensor([3.0]))  # batch
    assert rec.calls == 7
    assert cache.calls == cache.computed + cache.reused == 10


def test_x_updated_in_place_is_seen():
    """The cache compares with a copy of the previous input, not the caller's (mutable) tensor."""
    cache, rec = cached(linear_net, CacheConfig.output(0.5))
    ctx = torch.zeros(1, 1, 4)
    x = X.clone()
    cache(x, T, ctx)
    x.mul_(2)  # d = 1
    cache(x, T, ctx)
    assert rec.calls == 2 and cache.last_change == pytest.approx(1.0)


def test_nan_change_recomputes():
    cache, rec = cached(linear_net, CacheConfig.output(1e6))
    ctx = torch.zeros(1, 1, 4)
    cache(X, T, ctx)
    cache(X * math.nan, T, ctx)
    assert rec.calls == 2


# --------------------------------------------------------------------------- config and apply_cache


def test_config_round_trips_through_json():
    c = CacheConfig.output(0.1, max_skips=2, warmup=3)
    d = json.loads(json.dumps(c.to_dict()))
    assert d == {"kind": "output", "threshold": 0.1, "max_skips": 2, "warmup": 3}
    assert CacheConfig.from_dict(d) == c and c.spec() == "output:threshold=0.1,max_skips=2,warmup=3"
    assert CacheConfig.output(1).threshold == 1.0 and isinstance(CacheConfig.output(1).threshold, float)
    # a first-block cache written before the hooks reads back as the hooks' settings
    assert CacheConfig.from_dict({"threshold": 0.1, "kind": "first-block", "max_skips": 3, "warmup": 1}) == (
        CacheConfig("first-block", {"threshold": 0.1})
    )


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": math.nan}, "threshold"),
        ({"threshold": math.inf}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"threshold": "0.1"}, "threshold"),
        ({"threshold": 0.1, "max_skips": 0}, "max_skips"),
        ({"threshold": 0.1, "max_skips": 1.5}, "max_skips"),
        ({"threshold": 0.1, "max_skips": True}, "max_skips"),
        ({"threshold": 0.1, "warmup": -1}, "warmup"),
        ({"threshold": 0.1, "blocks": 1}, "blocks"),
    ],
)
def test_bad_config_raises(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CacheConfig("output", kwargs)


def test_apply_cache(model):
    net = apply_cache(model.network, CacheConfig.output(0.1))
    assert isinstance(net, OutputCache) and net.detach() is model.network
    with pytest.raises(TypeError, match="CogVideoXTransformerNetwork"):
        apply_cache(model.network, CacheConfig("first-block", {"threshold": 0.1}))
    with pytest.raises(TypeError, match="CacheConfig"):
        apply_cache(model.network, {"threshold": 0.1})
