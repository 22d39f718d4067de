"""Step caches: skip network work on sampler steps whose inputs barely moved. Approximate, off by default.

A :class:`CacheConfig` names a kind and its settings (``--cache KIND[:key=value,...]``). This
module implements one kind itself, ``output``, for networks without blocks (the exact built-in
model); every other kind is diffusers' hooks inside a transformer, model machinery that lives
with its model (:mod:`cogsample.models.hook_caches`): :func:`apply_cache` asks the network for it
(``network.hook_cache(config, calls)``).

:class:`OutputCache` wraps any :class:`~cogsample.sampling.denoiser.Network`: a reused call returns
the whole output of the last computed call. Call ``k`` is compared with call ``k-1``::

    d_k = |x_k - x_{k-1}|_1 / |x_{k-1}|_1 + |t_k - t_{k-1}|_1 / |t_{k-1}|_1

(``|.|_1`` sums absolute values; ``x`` the network input, ``t`` its timestep input). TeaCache-style,
the changes are summed since the last computed call, ``A_k = sum d_j``, and call ``k`` reuses iff
it is not among the first ``warmup`` calls, nothing but ``x`` and ``t`` changed (same shapes,
dtype, device, context and ``ofs``), ``A_k < threshold`` and fewer than ``max_skips`` calls in a
row were reused. Otherwise it computes and ``A`` restarts at 0. A threshold small enough that
nothing is reused gives results bit-identical to the uncached network. Call :meth:`OutputCache.reset`
between videos. Each call that could reuse reads its indicator to the host (one sync per call).

Scale of ``d`` (built-in model, 50 steps): the timestep term alone is 0.02 per step at t = 999,
0.1 at t = 179 and 0.5 at the last step; the input term is 0.01 to 0.09 per step for a
deterministic sampler (``vpode_dpmpp_2m``) but 0.2 to 1.4 for the default stochastic
``vpsde_dpmpp_2m``, whose fresh noise moves ``x`` far more: there the output cache reuses nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .denoiser import Network

Tensor = torch.Tensor

__all__ = [
    "OUTPUT_DEFAULTS",
    "CacheConfig",
    "CachedNetwork",
    "OutputCache",
    "apply_cache",
]

#: The ``output`` kind's settings and their defaults (``threshold`` has none: it must be given).
OUTPUT_DEFAULTS: dict[str, Any] = {"threshold": None, "max_skips": 3, "warmup": 1}


@dataclass(frozen=True)
class CacheConfig:
    """A step cache: ``kind`` (``"output"``, here; any other kind is a network's own, see
    :func:`apply_cache`) and its resolved settings ``params`` (JSON scalars, every key present).

    ``output``'s settings: ``threshold`` (> 0: reuse while the accumulated relative change stays
    below it), ``max_skips`` (>= 1 consecutive reuses at most), ``warmup`` (>= 0 first calls
    always computed). :meth:`spec` is the ``--cache`` text, :meth:`to_dict` the JSON;
    ``CacheConfig.from_dict(c.to_dict()) == c``.
    """

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"CacheConfig kind must be a non-empty string, got {self.kind!r}")
        if not isinstance(self.params, Mapping) or not all(isinstance(k, str) for k in self.params):
            raise ValueError(f"CacheConfig params must be a mapping of names to values, got {self.params!r}")
        params = dict(self.params)
        if self.kind == "output":
            params = _output_params(params)
        object.__setattr__(self, "params", params)

    @classmethod
    def output(cls, threshold: float, max_skips: int = 3, warmup: int = 1) -> CacheConfig:
        """The ``output`` kind (:class:`OutputCache`)."""
        return cls("output", {"threshold": threshold, "max_skips": max_skips, "warmup": warmup})

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(f"{type(self).__name__} of kind {self.__dict__.get('kind')!r} has no {name!r}")

    def spec(self) -> str:
        """``KIND[:key=value,...]``, what ``--cache`` takes back."""
        items = ",".join(f"{k}={_text(v)}" for k, v in self.params.items() if v is not None)
        return f"{self.kind}:{items}" if items else self.kind

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"kind": ..., **params}``."""
        return {"kind": self.kind, **self.params}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CacheConfig:
        """Back from :meth:`to_dict`."""
        data = dict(data)
        kind = data.pop("kind")
        if kind == "first-block":  # written before the hooks: the old cache's own rule's settings
            data.pop("max_skips", None), data.pop("warmup", None)
        return cls(kind, data)


def _text(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)


def _output_params(params: dict[str, Any]) -> dict[str, Any]:
    """``output``'s settings checked, defaults filled (``ValueError`` naming the setting)."""
    unknown = sorted(set(params) - set(OUTPUT_DEFAULTS))
    if unknown:
        raise ValueError(f"cache kind 'output' has no setting {unknown[0]!r}; allowed: {', '.join(OUTPUT_DEFAULTS)}")
    out = {**OUTPUT_DEFAULTS, **params}
    t = out["threshold"]
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t) or t <= 0:
        raise ValueError(f"cache 'output': threshold must be a finite number > 0, got {t!r}")
    out["threshold"] = float(t)
    for name, lo in (("max_skips", 1), ("warmup", 0)):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"cache 'output': {name} must be an integer >= {lo}, got {v!r}")
    return out


class CachedNetwork(Network, Protocol):
    """A network behind a step cache: ``calls`` (network calls since construction or the last
    reset), a per-video ``reset()``, and ``detach()`` (the uncached network back)."""

    calls: int

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
    """The output cache's reuse rule: counters, warmup, accumulation, max_skips."""

    def __init__(self, config: CacheConfig):
        if not isinstance(config, CacheConfig) or config.kind != "output":
            raise TypeError(f"config must be a CacheConfig of kind 'output', got {config!r}")
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
    in place (nothing in cogsample does).
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


def apply_cache(network: Network, config: CacheConfig, *, calls: int | None = None) -> CachedNetwork:
    """``network`` behind the step cache ``config`` names.

    ``"output"``: :class:`OutputCache` (any network). Any other kind is the network's own: what its
    ``hook_cache(config, calls)`` makes (a CogVideoX transformer's network has one; ``calls``: the
    most network calls one video makes, for the kinds that plan by step); TypeError for a network
    without one.
    """
    if not isinstance(config, CacheConfig):
        raise TypeError(f"config must be a CacheConfig, got {type(config).__name__}")
    if config.kind == "output":
        return OutputCache(network, config)
    make = getattr(network, "hook_cache", None)
    if not callable(make):
        raise TypeError(
            f"cache kind {config.kind!r} runs inside a transformer's blocks and needs a network with "
            f"hook_cache(config, calls), such as a CogVideoXTransformerNetwork, got {type(network).__name__}; "
            "use kind 'output' for any other network"
        )
    return make(config, calls)
