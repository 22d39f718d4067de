"""Step caches inside a diffusers transformer, through diffusers' own hooks (``diffusers.hooks``).

``--cache KIND[:key=value,...]``; each kind is one of diffusers' cache configs, applied with
``transformer.enable_cache(config)`` and removed with ``disable_cache()`` after the video:

============== ======================================= =================================================
kind           diffusers                               what a cached call does
============== ======================================= =================================================
``first-block`` ``FirstBlockCacheConfig``              block 0 runs; while ``mean|r_k - r_c| / mean|r_c|``
                                                       < threshold (``r`` block 0's residual, ``c`` the last
                                                       computed call) the other blocks' residual is reused
``faster``     ``FasterCacheConfig``                   attention every ``attn`` calls below timestep
                                                       ``attn_below`` (extrapolated between); the uncond
                                                       rows every ``uncond`` calls below ``uncond_below``
                                                       (approximated from the cond rows in frequency space)
``pab``        ``PyramidAttentionBroadcastConfig``     attention every ``attn`` calls for timesteps in
                                                       (``above``, ``below``), the last output reused between
``mag``        ``MagCacheConfig``                      after ``retention`` of the calls, skip all blocks while
                                                       ``sum |1 - prod ratio|`` <= threshold (calibrated
                                                       per-step residual magnitude ratios)
``taylorseer`` ``TaylorSeerCacheConfig``               attention and feed-forward (``lite``: the output
                                                       projection, blocks skipped) computed every
                                                       ``interval`` calls after ``warmup``,
                                                       predicted by a Taylor series of ``order`` between
``sea``        ``SeaCacheConfig``                      all blocks skipped while the accumulated relative
                                                       change of the spectrally filtered input < threshold
============== ======================================= =================================================

``dbcache`` is cache-dit's DBCache (an optional extra, ``cogsample[cachedit]``): blocks ``fn``
first and ``bn`` last always run, the others are reused while the first blocks' residual moves by
less than ``threshold``; its state is cache-dit's own, one per transformer.

Not caches, so not kinds: diffusers' ``LayerSkipConfig`` drops blocks on every call (a guidance
tool: nothing is reused), and ``TextKVCacheConfig`` serves NucleusMoE's text K/V only.

**Cache contexts.** diffusers keys a hook's state by the name of the ``transformer.cache_context``
the call runs in. :class:`HookCachedNetwork` names one per thing a cache must not mix: the context
window (:func:`~cogsample.sampling.calls.current_call`) and the row count (a batched ``[uncond;
cond]`` call of ``2B`` rows and a conditional-only call of ``B`` rows). CFG-parallel ranks are
separate processes, each with its own state. ``faster`` and ``pab`` keep one state per layer
whatever the context: they are refused under context windows, and their state is reset when the
row count changes. Under Ulysses every rank must take the same skip decision or the collectives
deadlock: ``first-block`` and ``sea`` decide from each rank's own shard and are refused there; the
other kinds decide from counters and timesteps alone, the same on every rank.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..sampling.cache import OUTPUT_DEFAULTS, CacheConfig
from ..sampling.calls import current_call

Tensor = torch.Tensor

__all__ = [
    "HOOK_KINDS",
    "KINDS",
    "MAG_RATIOS",
    "NOT_CACHES",
    "BlockCounter",
    "HookCachedNetwork",
    "check_cache",
    "parse_cache",
]


@dataclass(frozen=True)
class _Param:
    """One setting: its type (``float``, ``int``, ``bool``, ``str``), default, lowest value (or
    None; ``strict``: the value must exceed it), and whether None (unset) is allowed."""

    type: type
    default: Any
    low: float | None = None
    strict: bool = False
    optional: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class _Kind:
    """A kind: its settings, and what it needs. ``keyed``: diffusers keeps its state per cache
    context; ``batched_cfg``: it needs every call to hold ``[uncond; cond]`` rows; ``agrees``:
    its decisions are the same on every Ulysses rank."""

    params: dict[str, _Param]
    keyed: bool = True
    batched_cfg: bool = False
    agrees: bool = True


KINDS: dict[str, _Kind] = {
    "output": _Kind(
        {
            "threshold": _Param(float, None, 0.0, strict=True),
            "max_skips": _Param(int, 3, 1),
            "warmup": _Param(int, 1, 0),
        }
    ),
    "first-block": _Kind({"threshold": _Param(float, 0.05, 0.0, strict=True)}, agrees=False),
    "faster": _Kind(
        {
            "attn": _Param(int, 2, 1),
            "attn_below": _Param(int, 681),
            "uncond": _Param(int, 5, 1),
            "uncond_below": _Param(int, 641),
            "weight": _Param(float, 0.5),
        },
        keyed=False,
        batched_cfg=True,
    ),
    "pab": _Kind({"attn": _Param(int, 2, 1), "above": _Param(int, 100), "below": _Param(int, 800)}, keyed=False),
    "mag": _Kind(
        {
            "threshold": _Param(float, 0.06, 0.0, strict=True),
            "max_skips": _Param(int, 3, 1),
            "retention": _Param(float, 0.2, 0.0),
            "ratios": _Param(str, None, optional=True),
        }
    ),
    "taylorseer": _Kind(
        {
            "interval": _Param(int, 5, 1),
            "warmup": _Param(int, 3, 0),
            "order": _Param(int, 1, 1),
            "until": _Param(int, None, 1, optional=True),
            "lite": _Param(bool, False),
        }
    ),
    "sea": _Kind(
        {
            "threshold": _Param(float, 0.25, 0.0),
            "order": _Param(int, 1, choices=(0, 1)),
            "retention": _Param(int, 1, 0),
            "end": _Param(int, 1, 0),
            "max_skips": _Param(int, 2, 0),
            "power": _Param(float, 3.0, 0.0, strict=True),
        },
        agrees=False,
    ),
    # cache-dit's DBCache (optional: pip install 'cogsample[cachedit]'); its state is its own, per
    # transformer, not per diffusers cache context
    "dbcache": _Kind(
        {
            "threshold": _Param(float, 0.08, 0.0, strict=True),
            "fn": _Param(int, 1, 1),
            "bn": _Param(int, 0, 0),
            "warmup": _Param(int, 8, 0),
        },
        keyed=False,
        batched_cfg=True,
        agrees=False,
    ),
}
assert tuple(KINDS["output"].params) == tuple(OUTPUT_DEFAULTS)
#: The kinds that run in a transformer's blocks (every kind but ``output``).
HOOK_KINDS = tuple(k for k in KINDS if k != "output")
#: diffusers' hooks that are not step caches, and why they are not kinds.
NOT_CACHES = {
    "layer-skip": "diffusers' LayerSkipConfig drops blocks on every call (skip-layer guidance): it reuses nothing",
    "text-kv": "diffusers' TextKVCacheConfig caches NucleusMoE's text keys and values only, not CogVideoX's",
}
#: MagCache's per-call residual magnitude ratios ``mean |r_k| / |r_(k-1)|`` (``r`` the blocks' residual),
#: calibrated by ``mag:ratios=calibrate`` (diffusers prints them): the trained built-in model at its
#: reference default (vpsde_dpmpp_2m, 50 steps, DynamicCFG 6, batched CFG), "a red ball bouncing on a
#: black background", seed 42; other step counts take them by nearest index.
_TRAINED_RATIOS = (
    "1.0000 0.9256 0.9729 0.9252 0.9714 0.9516 0.9712 0.9276 0.9483 0.9415 0.9374 0.9215 0.9452 "
    "0.9268 0.9351 0.9467 0.9379 0.9507 0.9377 0.9504 0.9498 0.9462 0.9546 0.9491 0.9565 0.9525 "
    "0.9597 0.9563 0.9525 0.9596 0.9583 0.9585 0.9662 0.9600 0.9578 0.9715 0.9702 0.9706 0.9701 "
    "0.9742 0.9766 0.9826 0.9814 0.9845 0.9874 0.9874 0.9885 0.9935 0.9950 0.9962"
)
MAG_RATIOS: dict[str, tuple[float, ...]] = {"builtin-trained": tuple(map(float, _TRAINED_RATIOS.split()))}
MAG_RATIOS["builtin-trained-i2v"] = MAG_RATIOS["builtin-trained"]


def _value(kind: str, key: str, p: _Param, raw: Any) -> Any:
    """``raw`` (a string from the command line, or a JSON value) as setting ``key``'s type."""
    bad = ValueError(f"--cache {kind}: {key} must be {_describe(p)}, got {raw!r}")
    if raw is None or (isinstance(raw, str) and raw.lower() == "none"):
        if p.optional:
            return None
        raise bad
    if p.type is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.lower() in ("true", "1", "yes")
        raise bad
    if p.type is str:
        if not isinstance(raw, str) or not raw:
            raise bad
        return raw
    if isinstance(raw, bool):
        raise bad
    try:
        v = p.type(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise bad from None
    if p.type is int and (not isinstance(v, int) or isinstance(raw, float)):
        raise bad
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise bad
    if p.low is not None and (v <= p.low if p.strict else v < p.low):
        raise bad
    if p.choices and v not in p.choices:
        raise bad
    return p.type(v)


def _describe(p: _Param) -> str:
    if p.choices:
        return "one of " + ", ".join(map(str, p.choices))
    what = {int: "an integer", float: "a finite number", bool: "true or false", str: "a text"}[p.type]
    if p.low is not None:
        what += f" > {p.low:g}" if p.strict else f" >= {p.low:g}"
    return what + (" (or none)" if p.optional else "")


def _split(text: str) -> tuple[str, dict[str, str]]:
    """``"KIND[:key=value,...]"`` -> ``(KIND, {key: value})`` (``ValueError`` for a malformed item)."""
    kind, _, rest = text.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--cache {text!r}: settings go as key=value, got {item!r}")
        if key.strip() in params:
            raise ValueError(f"--cache {text!r}: {key.strip()!r} is given twice")
        params[key.strip()] = value.strip()
    return kind.strip(), params


def parse_cache(spec: Any, model: str, kind: str | None = None, exact: bool = False) -> CacheConfig:
    """``--cache`` (``spec``) for ``model``: ``KIND[:key=value,...]`` (:data:`KINDS`), or, as
    before the hooks, a number: the threshold of ``kind`` (``--cache-kind``; default ``output`` on
    a model without blocks, ``exact``, else ``first-block``). Settings left out take their
    defaults. ``ValueError`` naming the setting, value and what is allowed, before anything loads."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        kind = kind or ("output" if exact else "first-block")
        name, raw = kind, {"threshold": spec}
    elif isinstance(spec, str) and spec.strip():
        name, raw = _split(spec)
        if kind is not None and kind != name:
            raise ValueError(f"--cache-kind {kind!r} goes with a number (--cache 0.1); --cache {spec!r} names its kind")
    else:
        raise ValueError(f"--cache must be KIND[:key=value,...] or a threshold number, got {spec!r}")
    if name in NOT_CACHES:
        raise ValueError(f"--cache {name!r} is not a step cache: {NOT_CACHES[name]}; kinds: {', '.join(KINDS)}")
    if name not in KINDS:
        raise ValueError(f"--cache kind must be one of {', '.join(KINDS)}, got {name!r}")
    spec_ = KINDS[name]
    unknown = sorted(set(raw) - set(spec_.params))
    if unknown:
        raise ValueError(f"--cache {name} has no setting {unknown[0]!r}; allowed: {', '.join(spec_.params) or 'none'}")
    params = {k: (_value(name, k, p, raw[k]) if k in raw else p.default) for k, p in spec_.params.items()}
    if name == "output" and params["threshold"] is None:
        raise ValueError("--cache output needs a threshold (> 0): --cache output:threshold=0.1")
    if name != "output" and exact:
        raise ValueError(
            f"--cache {name} runs in a transformer's blocks; model {model!r} has none (its network is exact): "
            "use --cache output:threshold=T"
        )
    if name == "mag":
        params["ratios"] = _mag_ratios_name(params["ratios"], model)
    if name == "dbcache" and importlib.util.find_spec("cache_dit") is None:
        raise ValueError(
            "--cache dbcache is cache-dit's DBCache, which is not installed: pip install 'cogsample[cachedit]'"
        )
    return CacheConfig(name, params)


def _mag_ratios_name(ratios: str | None, model: str) -> str:
    """MagCache's ratios: ``calibrate``, a shipped calibration's model name, or a JSON file's path."""
    if ratios is None:
        if model in MAG_RATIOS:
            return model
        raise ValueError(
            f"--cache mag needs residual magnitude ratios calibrated on model {model!r}: none are shipped "
            f"(shipped: {', '.join(MAG_RATIOS) or 'none'}); run once with mag:ratios=calibrate, save the printed "
            "list as JSON and pass mag:ratios=FILE"
        )
    if ratios == "calibrate" or ratios in MAG_RATIOS:
        return ratios
    path = Path(ratios).expanduser()
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--cache mag: ratios {ratios!r} is not a readable JSON list of numbers ({e})") from e
    if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"--cache mag: ratios {ratios!r} must hold a JSON list of numbers")
    return str(path.resolve())


def check_cache(
    config: CacheConfig,
    *,
    windows: bool = False,
    cfg_parallel: bool = False,
    ulysses: bool = False,
    cond_only_calls: bool = False,
) -> None:
    """``ValueError`` where ``config`` cannot run as asked, saying why: ``windows`` (context
    windows), ``cfg_parallel`` (each CFG branch on its own rank), ``ulysses`` (tokens sharded over
    ranks), ``cond_only_calls`` (some calls hold only the conditional rows: no guidance, a guidance
    interval, ``--skip-unit-cfg``)."""
    if config.kind not in HOOK_KINDS:
        return
    k = KINDS[config.kind]
    if windows and not k.keyed:
        raise ValueError(
            f"--cache {config.kind} keeps one state per attention layer, not one per cache context: under "
            "context windows each window would reuse another window's attention; use --context off or another kind"
        )
    if ulysses and not k.agrees:
        raise ValueError(
            f"--cache {config.kind} decides from the tokens each rank holds: under --parallel ulysses the ranks "
            "would skip differently and their collectives deadlock; use pab, faster, mag or taylorseer"
        )
    if k.batched_cfg and (cfg_parallel or cond_only_calls):
        why = "each rank runs one branch" if cfg_parallel else "some calls hold the conditional rows only"
        raise ValueError(
            f"--cache {config.kind} approximates the unconditional rows from the conditional ones of one batched "
            f"[uncond; cond] call, but here {why}; use another kind"
        )


# --------------------------------------------------------------------------- counting


class BlockCounter:
    """Counts what a transformer really evaluated, with forward hooks below diffusers' (those fire
    only when the real forward runs): ``blocks`` (a block's body: its ``norm1``), ``attention``
    (its attention's ``to_q``) and ``block_rows`` (block bodies times the rows they took)."""

    def __init__(self, transformer: torch.nn.Module):
        self.blocks = self.attention = self.block_rows = 0
        self.n_blocks = len(transformer.transformer_blocks)
        self._handles = []
        for block in transformer.transformer_blocks:
            self._handles.append(block.norm1.register_forward_hook(self._block))
            self._handles.append(block.attn1.to_q.register_forward_hook(self._attention))

    def _block(self, _m: Any, args: tuple[Any, ...], _out: Any) -> None:
        self.blocks += 1
        self.block_rows += int(args[0].shape[0])

    def _attention(self, *_: Any) -> None:
        self.attention += 1

    def reset(self) -> None:
        self.blocks = self.attention = self.block_rows = 0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


# --------------------------------------------------------------------------- the cached network


def _sigma(alpha: Tensor | None) -> float | None:
    """The flow-matching noise share of a VP level with the same SNR: ``sigma / (alpha + sigma)``,
    ``sigma = sqrt(1 - alpha^2)`` (what SeaCache's filter takes; None where the level is unknown)."""
    if alpha is None:
        return None
    a = float(alpha.reshape(-1)[0].clamp(0.0, 1.0))
    s = math.sqrt(max(0.0, 1.0 - a * a))
    return s / (a + s) if a + s > 0 else 1.0


def _raw_vision(channels: int) -> Callable[..., list[Tensor]]:
    """SeaCache's view of a CogVideoX call: each row's noisy latent ``(C, T, h, w)`` (the first
    ``channels`` of ``(N, T, Cin, h, w)``: image channels are not part of the output)."""

    def raw(_module: Any, _args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Tensor]:
        h = kwargs["hidden_states"]
        return [row[:, :channels].transpose(0, 1) for row in h.unbind(0)]

    return raw


def _mag_values(name: str) -> list[float] | None:
    if name == "calibrate":
        return None
    if name in MAG_RATIOS:
        return list(MAG_RATIOS[name])
    return [float(v) for v in json.loads(Path(name).read_text())]


def diffusers_config(config: CacheConfig, calls: int, timestep: Callable[[], float], network: Any) -> Any:
    """The diffusers cache config of ``config`` (``calls``: the most calls one video makes,
    ``timestep``: the current call's timestep, ``network``: the CogVideoX network it goes in)."""
    from diffusers import hooks

    p = config.params
    if config.kind == "first-block":
        return hooks.FirstBlockCacheConfig(threshold=p["threshold"])
    if config.kind == "faster":
        return hooks.FasterCacheConfig(
            spatial_attention_block_skip_range=p["attn"],
            spatial_attention_timestep_skip_range=(-1, p["attn_below"]),
            unconditional_batch_skip_range=p["uncond"],
            unconditional_batch_timestep_skip_range=(-1, p["uncond_below"]),
            attention_weight_callback=lambda _m, w=p["weight"]: w,
            tensor_format="BFCHW",  # CogVideoX's (B, T, C, h, w)
            current_timestep_callback=timestep,
        )
    if config.kind == "pab":
        return hooks.PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=p["attn"],
            spatial_attention_timestep_skip_range=(p["above"], p["below"]),
            current_timestep_callback=timestep,
        )
    if config.kind == "mag":
        ratios = _mag_values(p["ratios"])
        return hooks.MagCacheConfig(
            threshold=p["threshold"],
            max_skip_steps=p["max_skips"],
            retention_ratio=p["retention"],
            num_inference_steps=calls,
            mag_ratios=ratios,
            calibrate=ratios is None,
        )
    if config.kind == "taylorseer":
        return hooks.TaylorSeerCacheConfig(
            cache_interval=p["interval"],
            disable_cache_before_step=p["warmup"],
            disable_cache_after_step=p["until"],
            max_order=p["order"],
            taylor_factors_dtype=network.dtype,
            # diffusers' default patterns (".*attn" at the end of the name) miss CogVideoX's attn1:
            # its attention and feed-forward, the two features TaylorSeer's paper forecasts
            cache_identifiers=[r"transformer_blocks\.\d+\.attn1", r"transformer_blocks\.\d+\.ff"],
            use_lite_mode=p["lite"],
        )
    if config.kind == "sea":
        return hooks.SeaCacheConfig(
            threshold=p["threshold"],
            residual_order=p["order"],
            retention_steps=p["retention"],
            cache_end_steps=p["end"],
            max_consecutive_cached=p["max_skips"],
            power_exp=p["power"],
            raw_vision_callback=_raw_vision(network.out_channels),
        )
    raise ValueError(f"cache kind {config.kind!r} is not one of diffusers' hooks ({', '.join(HOOK_KINDS)})")


def _enable_dbcache(transformer: Any, config: CacheConfig, calls: int) -> None:
    """cache-dit's DBCache on ``transformer``: blocks ``fn`` first and ``bn`` last always run; the
    middle ones are reused while the first blocks' residual changes by less than ``threshold``
    (relative L1), after ``warmup`` calls; the batched ``[uncond; cond]`` rows as one."""
    import cache_dit

    p = config.params
    if p["fn"] + p["bn"] > len(transformer.transformer_blocks):
        raise ValueError(
            f"--cache dbcache: fn + bn = {p['fn'] + p['bn']} blocks always run, more than the transformer's "
            f"{len(transformer.transformer_blocks)}"
        )
    cache_dit.enable_cache(
        transformer,
        cache_config=cache_dit.DBCacheConfig(
            Fn_compute_blocks=p["fn"],
            Bn_compute_blocks=p["bn"],
            residual_diff_threshold=p["threshold"],
            max_warmup_steps=p["warmup"],
            num_inference_steps=calls,
            enable_separate_cfg=False,
        ),
    )


class HookCachedNetwork:
    """A CogVideoX network whose transformer carries diffusers' cache hooks for ``config`` until
    :meth:`detach`: called like the network, each call inside ``transformer.cache_context(name,
    step_index, num_inference_steps, sigma, timestep)`` with one ``name`` per window and row count
    (module docstring); ``step_index`` counts that context's calls, ``num_inference_steps`` is
    ``calls``. Counters: ``calls``, ``computed`` (calls whose every block ran), ``reused`` (the
    rest), and the :class:`BlockCounter`'s ``blocks``, ``attention``, ``block_rows``."""

    def __init__(self, network: Any, config: CacheConfig, calls: int | None = None):
        if config.kind not in HOOK_KINDS:
            raise ValueError(f"HookCachedNetwork takes one of {', '.join(HOOK_KINDS)}, got {config.kind!r}")
        self.network = network
        self.transformer = network.transformer
        self.config = config
        self.steps = max(1, int(calls or 50))
        self._t: Tensor | None = None
        self.counter = BlockCounter(self.transformer)
        if config.kind == "dbcache":
            _enable_dbcache(self.transformer, config, self.steps)
        else:
            self.transformer.enable_cache(diffusers_config(config, self.steps, self._timestep, network))
        self.attached = True
        self.reset()

    def _timestep(self) -> float:
        return 0.0 if self._t is None else float(self._t.reshape(-1)[0])

    def reset(self) -> None:
        """Forget every context's state and the counters (a new video)."""
        self.transformer._reset_stateful_cache()
        self._contexts: dict[str, int] = {}
        self._last: str | None = None
        self.calls = self.computed = 0
        self.counter.reset()

    @property
    def reused(self) -> int:
        return self.calls - self.computed

    def __getattr__(self, name: str) -> Any:
        if name in ("blocks", "attention", "block_rows"):
            return getattr(self.__dict__["counter"], name)
        raise AttributeError(name)

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        if not self.attached:
            raise RuntimeError("this cached network was detached: call the network detach() returned")
        call = current_call()
        name = f"window{call.window}:rows{x.shape[0]}"
        if not KINDS[self.config.kind].keyed and self._last not in (None, name):
            self.transformer._reset_stateful_cache()  # one state per layer: it must not see other rows
        index = self._contexts.get(name, 0)
        self._contexts[name], self._last = index + 1, name
        self._t = torch.as_tensor(t)
        sigma = _sigma(call.alpha) if self.config.kind == "sea" else None
        before = self.counter.blocks
        with self.transformer.cache_context(
            name, step_index=index, num_inference_steps=self.steps, sigma=sigma, timestep=None
        ):
            out = self.network(x, t, context, ofs=ofs)
        self.calls += 1
        self.computed += int(self.counter.blocks - before >= self.counter.n_blocks)
        return out

    def detach(self) -> Any:
        """Remove the hooks and the counters' hooks (once); returns the plain network."""
        if self.attached:
            if self.config.kind == "dbcache":
                import cache_dit

                cache_dit.disable_cache(self.transformer)
            else:
                self.transformer.disable_cache()
            self.counter.remove()
            self.attached = False
        return self.network
