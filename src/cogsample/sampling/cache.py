"""Step caching in the style of TeaCache and First-Block-Cache: skip network work on sampler
steps whose inputs barely moved since the last step that ran it. Approximate and off by default.

What is cached:

* :class:`OutputCache` wraps any :class:`~cogsample.sampling.denoiser.Network` (the built-in
  ``MixtureNetwork`` included): a reused call returns the whole output of the last computed call.
* a first-block cache patches a network's transformer: block 0 always runs; a reused call skips
  blocks ``1..N-1`` and adds their residual from the last computed call to block 0's fresh output.
  It is model machinery and lives with its model: for diffusers' CogVideoX transformer,
  :class:`~cogsample.models.first_block_cache.FirstBlockCache`, made by the network's
  ``first_block_cache(config)`` (:func:`apply_cache` asks the network for it).

The indicator. Call ``k`` is compared with call ``k-1`` (computed or reused)::

    OutputCache:      d_k = |x_k - x_{k-1}|_1 / |x_{k-1}|_1 + |t_k - t_{k-1}|_1 / |t_{k-1}|_1
    FirstBlockCache:  d_k = |r_k - r_{k-1}|_1 / |r_{k-1}|_1,   r = block 0's hidden-state output - its input

(``|.|_1`` sums absolute values, so each ratio is ``mean |a - b| / mean |b|``; ``x`` is the
network's input, ``t`` its timestep input). TeaCache-style, the changes are summed since the last
computed call, ``A_k = sum d_j``, and call ``k`` reuses iff all of:

* it is not among the first ``warmup`` calls since the cache was made or :meth:`reset`;
* nothing but ``x`` and ``t`` changed: same shapes, dtype and device (a CFG batch of ``2B`` rows
  after one of ``B`` rows recomputes), same context and ``ofs`` (identity and no in-place change,
  else equal values); for the transformer the same text-token input and rotary embedding;
* ``A_k < threshold``;
* fewer than ``max_skips`` calls in a row have been reused.

Otherwise it computes, and ``A`` restarts at 0. A threshold small enough that nothing is reused
gives results bit-identical to the uncached network; any reuse makes them differ (a reused call
answers for an input it did not see), so nothing in cogsample caches unless asked. Call
:meth:`reset` between videos (or make a new cache): the warmup and the references are per video.
Each call that could reuse reads its indicator to the host (one sync per call, inherent: the skip
is a Python branch); the cost is a few small ops, ~0.1 ms per call on a CPU.

Scale of ``d`` (built-in model, 50 steps): the timestep term alone is 0.02 per step at t = 999,
0.1 at t = 179 and 0.5 at the last step, so small thresholds never skip late steps. The input term is 0.01 to
0.09 per step for a deterministic sampler (``vpode_dpmpp_2m``), but 0.2 to 1.4 for the default
stochastic ``vpsde_dpmpp_2m``, whose fresh noise at every step moves ``x`` far more: there
thresholds up to 0.2 reuse nothing, and the output cache pays off only for deterministic samplers.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

from .denoiser import Network

Tensor = torch.Tensor

__all__ = [
    "CacheConfig",
    "CachedNetwork",
    "OutputCache",
    "apply_cache",
]

KINDS = ("output", "first-block")


@dataclass(frozen=True)
class CacheConfig:
    """When a step cache may reuse (see the module docstring for the rule).

    ``threshold``: reuse while the accumulated relative change stays below it (> 0; what a value
    buys depends on the sampler, see the module docstring); ``kind``: what :func:`apply_cache`
    caches, the whole network output (``"output"``, any network) or the CogVideoX transformer's
    blocks after the first (``"first-block"``); ``max_skips``: at most this many consecutive reused calls (>= 1);
    ``warmup``: the first ``warmup`` calls after a reset always compute (>= 0; the first call
    computes anyway, having nothing to reuse, so 0 and 1 are the same).
    JSON round trip: ``CacheConfig(**dataclasses.asdict(config))``.
    """

    threshold: float
    kind: Literal["output", "first-block"] = "output"
    max_skips: int = 3
    warmup: int = 1

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"CacheConfig threshold must be a finite number > 0, got {t!r}")
        object.__setattr__(self, "threshold", float(t))
        if self.kind not in KINDS:
            raise ValueError(f"CacheConfig kind must be one of {', '.join(map(repr, KINDS))}, got {self.kind!r}")
        for name, lo in (("max_skips", 1), ("warmup", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"CacheConfig {name} must be an integer >= {lo}, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``CacheConfig(**d)`` gives an equal config back)."""
        return dataclasses.asdict(self)


class CachedNetwork(Network, Protocol):
    """A network behind a step cache: counters, a per-video reset, and the uncached network back.

    ``calls == computed + reused`` (calls since construction or the last reset)."""

    calls: int
    computed: int
    reused: int

    def reset(self) -> None: ...

    def detach(self) -> Network: ...


# --------------------------------------------------------------------------- shared pieces


def _version(t: Tensor) -> int | None:
    """The tensor's in-place modification counter, None where it has none (inference tensors)."""
    try:
        return t._version
    except RuntimeError:
        return None


class _Ref:
    """What a cached call saw as one input outside the indicator (context, ofs, rotary tables).

    Tensors are held with their version counters, so that the common case (the very same,
    unmodified tensor) is recognised without reading it; a clone only where a tensor has no
    counter (inference tensors). A tuple is compared item by item, anything else with ``==``.
    """

    def __init__(self, value: Any):
        self.value = value
        items = value if isinstance(value, tuple) else (value,)
        self.versions = [_version(v) if isinstance(v, Tensor) else None for v in items]
        self.copies = [
            v.detach().clone() if isinstance(v, Tensor) and ver is None else None
            for v, ver in zip(items, self.versions, strict=True)
        ]

    def matches(self, other: Any) -> bool:
        mine = self.value
        if isinstance(mine, tuple) != isinstance(other, tuple):
            return False
        a = mine if isinstance(mine, tuple) else (mine,)
        b = other if isinstance(other, tuple) else (other,)
        if len(a) != len(b):
            return False
        for old, new, ver, copy in zip(a, b, self.versions, self.copies, strict=True):
            if not isinstance(old, Tensor) or not isinstance(new, Tensor):
                if isinstance(old, Tensor) or isinstance(new, Tensor) or type(old) is not type(new) or old != new:
                    return False
                continue
            if copy is None and _version(old) != ver:
                return False  # modified in place since the cached call: its old values are gone
            if new is old and copy is None:
                continue
            snap = old if copy is None else copy
            if new.shape != snap.shape or new.dtype != snap.dtype or new.device != snap.device:
                return False
            if not torch.equal(new, snap):  # reads the device, but only when another tensor comes
                return False
        return True


def _l1(x: Tensor) -> Tensor:
    """``sum |x|`` as a float32 scalar on x's device (accumulated in at least float32)."""
    return torch.linalg.vector_norm(x, 1, dtype=torch.promote_types(x.dtype, torch.float32)).float()


def _ratio(num: float, den: float) -> float:
    """``num / den``, with 0 / 0 = 0 (nothing moved) and x / 0 = inf (moved off zero: recompute)."""
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.inf


class _Decider:
    """The reuse rule shared by every step cache: counters, warmup, accumulation, max_skips."""

    def __init__(self, config: CacheConfig):
        if not isinstance(config, CacheConfig):
            raise TypeError(f"config must be a CacheConfig, got {type(config).__name__}")
        self.config = config
        self.reset_counts()

    def reset_counts(self) -> None:
        self.calls = 0
        self.computed = 0
        self.reused = 0
        self.skips = 0  # consecutive reuses so far
        self.accumulated = 0.0  # A: the changes summed since the last computed call
        self.last_change: float | None = None  # d of the latest call whose indicator was read

    def may_reuse(self, comparable: bool) -> bool:
        """Whether the indicator is worth reading for the current call (counted in ``calls``)."""
        c = self.config
        return comparable and self.calls > c.warmup and self.skips < c.max_skips

    def decide(self, change: float) -> bool:
        self.last_change = change
        self.accumulated += change
        # NaN compares False: a NaN change recomputes (and the restart at 0 clears it)
        return self.accumulated < self.config.threshold

    def record(self, reuse: bool) -> None:
        if reuse:
            self.reused += 1
            self.skips += 1
        else:
            self.computed += 1
            self.skips = 0
            self.accumulated = 0.0


# --------------------------------------------------------------------------- the output cache


class OutputCache(_Decider):
    """``net(x, t, context, ofs=None)``: ``network``'s output, or its last computed output while
    the accumulated input change ``sum_k |dx_k|_1/|x_{k-1}|_1 + |dt_k|_1/|t_{k-1}|_1`` stays under
    ``config.threshold`` (module docstring). Counters ``calls``, ``computed``, ``reused``.

    A reused call returns the cached output tensor itself (no copy): do not modify network outputs
    in place (nothing in cogsample does). ``config.kind`` is not read here (see :func:`apply_cache`).
    """

    def __init__(self, network: Network, config: CacheConfig):
        if not callable(network):
            raise TypeError(f"network must be callable as net(x, t, context, ofs=None), got {type(network).__name__}")
        self.network = network
        super().__init__(config)
        self.reset()

    def reset(self) -> None:
        """Forget the cached call and the counters: the next call computes (a new video)."""
        self.reset_counts()
        self._out: Tensor | None = None
        self._key: tuple | None = None
        self._context = _Ref(None)
        self._ofs = _Ref(None)
        # the previous call's inputs and their L1 norms (kept as device tensors: read only with
        # the next call's indicator, so a call that cannot reuse never waits on the device)
        self._x: Tensor | None = None
        self._t: Tensor | None = None
        self._x_norm: Tensor | None = None
        self._t_norm: Tensor | None = None

    def detach(self) -> Network:
        """The uncached network (nothing to undo: the wrapper only holds it)."""
        return self.network

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        self.calls += 1
        t_in = torch.as_tensor(t, device=x.device)
        tf = t_in.detach().to(torch.float32)  # integer timesteps too; float32 holds them exactly
        key = (tuple(x.shape), x.dtype, x.device, tuple(t_in.shape))
        comparable = (
            self._out is not None and key == self._key and self._context.matches(context) and self._ofs.matches(ofs)
        )
        x_norm, t_norm = _l1(x), _l1(tf)
        reuse = False
        if self.may_reuse(comparable):
            assert self._x is not None and self._t is not None
            stats = torch.stack([_l1(x - self._x), self._x_norm, _l1(tf - self._t), self._t_norm])
            # The one device -> host read per call: the decision is a Python branch, so the
            # indicator must reach the host before the network can be (or not be) launched.
            # Inherent to step caching; the reductions themselves are two passes over x.
            dx, nx, dt, nt = stats.tolist()
            reuse = self.decide(_ratio(dx, nx) + _ratio(dt, nt))
        if reuse:
            out = self._out
            assert out is not None
        else:
            out = self.network(x, t, context, ofs=ofs)
            # state changes only once the network has returned: a call that raises leaves none
            self._out, self._key, self._context, self._ofs = out, key, _Ref(context), _Ref(ofs)
        # references for the next call's change: a copy, in case the caller updates x in place
        self._x, self._t, self._x_norm, self._t_norm = x.detach().clone(), tf.clone(), x_norm, t_norm
        self.record(reuse)
        return out


def apply_cache(network: Network, config: CacheConfig) -> CachedNetwork:
    """``network`` behind the step cache ``config.kind`` names.

    ``"output"``: :class:`OutputCache` (any network). ``"first-block"``: what the network's own
    ``first_block_cache(config)`` makes (a CogVideoX transformer's network has one,
    :class:`~cogsample.models.cogvideox.CogVideoXTransformerNetwork`; it patches the transformer
    until ``detach()``); TypeError for a network without one.
    """
    if not isinstance(config, CacheConfig):
        raise TypeError(f"config must be a CacheConfig, got {type(config).__name__}")
    if config.kind == "output":
        return OutputCache(network, config)
    # the network knows its own blocks: the core asks it rather than knowing any model
    make = getattr(network, "first_block_cache", None)
    if not callable(make):
        raise TypeError(
            "kind='first-block' caches the blocks of a diffusers CogVideoX transformer and needs a network "
            f"with first_block_cache(config), such as a CogVideoXTransformerNetwork, got {type(network).__name__}; "
            "use kind='output' for any other network"
        )
    return make(config)
