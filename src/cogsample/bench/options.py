"""The forward-saving options (guidance interval, skipping the uncond forward where the scale is
1, step caches): what each saves against the same sampler without it.

* :func:`options_builtin`: on the built-in models, forwards and wall-time speed-up and the change
  in the quality figures (:mod:`cogsample.bench.quality`);
* :func:`options_diffusers`: the speed-up on a tiny random-weight diffusers CogVideoX transformer,
  through cogsample's adapter (:class:`~cogsample.models.cogvideox.CogVideoXTransformerNetwork`).
  Random weights say nothing about quality (that is measured on the built-in exact model), only
  about what each option saves in wall time on a real transformer's code path.

Same latents, prompt, seed and sampler config with and without each option.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..sampling.cache import CacheConfig
from ..sampling.config import SamplingConfig, build_model
from ..sampling.guidance import Conditioning, GuidanceInterval
from ..sampling.noise import SeededNoise, latent_shape
from .harness import BENCH_VIDEO, PROMPT, SEED, initial_noise, rel_l2, sample_noise, timed_sample, tiny_model
from .quality import Env, Setup, _metrics, reference_default

__all__ = ["options_builtin", "options_diffusers", "variants"]


def variants(base: SamplingConfig, caches: Sequence[tuple[str, float]]) -> list[tuple[str, SamplingConfig]]:
    """``base`` with each option on: the guidance interval [0.4, 1), skipping the uncond forward
    where the scale is 1, and each step cache of ``caches`` (kind, threshold)."""
    out = [
        ("guidance interval [0.4, 1)", dataclasses.replace(base, guidance=GuidanceInterval(base.guidance, 0.4, 1.0))),
        ("skip uncond where scale == 1", dataclasses.replace(base, skip_unit_cfg=True)),
    ]
    out += [
        (f"{kind} cache, threshold {t:g}", dataclasses.replace(base, cache=CacheConfig(kind, {"threshold": t})))
        for kind, t in caches
    ]
    return out


# ----------------------------------------------------------------------------------------------
# on the built-in models


class _Counting:
    """Counts the network's computed work in forwards per sample (rows / batch)."""

    def __init__(self, network: Any, batch: int):
        self.network, self.batch, self.forwards = network, batch, 0

    def __call__(self, x: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        self.forwards += x.shape[0] // self.batch
        return self.network(x, *args, **kw)


def _run(env: Env, config: SamplingConfig) -> tuple[torch.Tensor, int, float, dict[str, int]]:
    """Final latents, forwards per sample the network computed, seconds, cache counters."""
    counting = _Counting(env.network, env.x_t.shape[0])
    model, grid = build_model(counting, env.x_t, env.cond, config)
    x, seconds = timed_sample(config, model, env.x_t, grid, sample_noise(env.setup.seed, env.x_t.shape[0]))
    net = model.denoiser.network
    counts = {k: getattr(net, k) for k in ("calls", "computed", "reused") if hasattr(net, k)}
    return x, counting.forwards, seconds, counts


def options_builtin(
    setup: Setup, bases: Sequence[tuple[str, SamplingConfig]], repeats: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Each option against its base on the built-in model: forwards and wall-time speed-up,
    change in the quality figures, relative L2 distance of the latents from the base run."""
    env = Env.build(setup)
    rows = []
    for base_name, base in bases:
        x0, f0, _, _ = _run(env, base)
        q0 = _metrics(env, x0)
        # the transformer's caches are measured on a diffusers transformer (options_diffusers, caches)
        for name, cfg in variants(base, [("output", 0.1), ("output", 0.3)]):
            # base and option alternate, so drift and other load on the machine hit both alike
            base_t, opt_t = [], []
            for _ in range(repeats):
                base_t.append(_run(env, base)[2])
                x, f, t_opt, counts = _run(env, cfg)
                opt_t.append(t_opt)
            t0, t = min(base_t), min(opt_t)
            q = _metrics(env, x)
            rel = rel_l2(x, x0)
            row = {
                "base": base_name,
                "option": name,
                "forwards": f,
                "base_forwards": f0,
                "forward_speedup": f0 / f,
                "time_speedup": t0 / t,
                "delta_kl": q["kl"] - q0["kl"],
                "delta_mode_tv": q["mode_tv"] - q0["mode_tv"],
                "latent_rel_l2": rel,
                "max_abs_diff": float((x.double() - x0.double()).abs().max()),
                **({"network_calls_reused": counts["reused"]} if "reused" in counts else {}),
            }
            log(
                f"  {base_name:38s} {name:30s} forwards {f0:3d} -> {f:3d}  time x{row['time_speedup']:.2f}  "
                f"dkl {row['delta_kl']:+.4f}  rel L2 {rel:.2e}"
            )
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# on a tiny diffusers transformer


def _timed(network: Any, x: torch.Tensor, cond: Conditioning, config: SamplingConfig) -> tuple[float, int, int, Any]:
    """Seconds, forwards the network computed, network calls a step cache answered, final latents."""
    model, grid = build_model(network, x, cond, config)
    cache = model.owned_cache
    out, seconds = timed_sample(config, model, x, grid, SeededNoise([7] * x.shape[0]))
    if cache is None:
        return seconds, model.forwards, 0, out
    # forwards the network computed (every call here has the same rows)
    return seconds, round(model.forwards * cache.computed / max(cache.calls, 1)), cache.reused, out


def options_diffusers(quick: bool = False) -> dict[str, Any]:
    """Wall time of each option against no option, on a tiny diffusers transformer (min of repeats)."""
    steps, repeats = (6, 1) if quick else (50, 2)
    rows: list[dict[str, Any]] = []
    with tiny_model() as (_, model):
        context = model.encode_prompts([PROMPT])
        model.release_text_encoder()
        cond = Conditioning(context=context)
        x = initial_noise(SEED, latent_shape(1, BENCH_VIDEO["frames"], BENCH_VIDEO["height"], BENCH_VIDEO["width"]))
        shipped = reference_default().config(steps)
        bases = [
            (f"reference default ({steps} steps)", shipped),
            (f"vpode_dpmpp_2m, shipped grid ({steps} steps)", dataclasses.replace(shipped, sampler="vpode_dpmpp_2m")),
        ]
        for base_name, base in bases:
            rows += _option_rows(model.network, x, cond, base_name, base, repeats)
    return {"device": "cpu", "steps": steps, "video": dict(BENCH_VIDEO), "repeats": repeats, "rows": rows}


def _option_rows(
    network: Any, x: torch.Tensor, cond: Conditioning, base_name: str, base: SamplingConfig, repeats: int
) -> list[dict[str, Any]]:
    """Each option against ``base``: the fastest of ``repeats`` interleaved runs."""
    options = [("none", base), *variants(base, [("first-block", 0.1), ("first-block", 0.3), ("output", 0.3)])]
    times: dict[str, list[float]] = {name: [] for name, _ in options}
    info: dict[str, tuple[int, int, Any]] = {}
    _timed(network, x, cond, base)  # warm-up
    for _ in range(repeats):  # interleaved, so drift hits every variant alike
        for name, cfg in options:
            seconds, forwards, reused, out = _timed(network, x, cond, cfg)
            times[name].append(seconds)
            info[name] = (forwards, reused, out)
    t0 = min(times["none"])
    f0, _, out0 = info["none"]
    rows = []
    for name, _cfg in options[1:]:
        forwards, reused, out = info[name]
        t = min(times[name])
        rows.append(
            {
                "base": base_name,
                "option": name,
                "base_s": t0,
                "option_s": t,
                "time_speedup": t0 / t,
                "base_forwards": f0,
                "forwards": forwards,
                "network_calls_reused": reused,
                "latent_rel_l2": rel_l2(out, out0),
            }
        )
    return rows
