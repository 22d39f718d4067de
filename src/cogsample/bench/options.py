"""The forward-saving options' speed-up on a tiny random-weight diffusers CogVideoX transformer.

Same latents, prompt, seed and sampler config with and without each option; the transformer runs
through cogsample's adapter (:class:`~cogsample.models.cogvideox.CogVideoXTransformerNetwork`).
Random weights say nothing about quality (that is measured on the built-in exact model), only
about what each option saves in wall time on a real transformer's code path.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..sampling.cache import CacheConfig
from ..sampling.config import SamplingConfig, build_model
from ..sampling.guidance import Conditioning, GuidanceInterval
from ..sampling.noise import SeededNoise, latent_shape
from .harness import BENCH_VIDEO, PROMPT, SEED, initial_noise, rel_l2, timed_sample, tiny_model
from .quality import reference_default

__all__ = ["options_diffusers"]


def _variants(base: SamplingConfig) -> list[tuple[str, SamplingConfig]]:
    return [
        ("none", base),
        ("guidance interval [0.4, 1)", dataclasses.replace(base, guidance=GuidanceInterval(base.guidance, 0.4, 1.0))),
        ("skip uncond where scale == 1", dataclasses.replace(base, skip_unit_cfg=True)),
        ("first-block cache, threshold 0.1", dataclasses.replace(base, cache=CacheConfig(0.1, "first-block"))),
        ("first-block cache, threshold 0.3", dataclasses.replace(base, cache=CacheConfig(0.3, "first-block"))),
        ("output cache, threshold 0.3", dataclasses.replace(base, cache=CacheConfig(0.3, "output"))),
    ]


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
    """Each option of :func:`_variants` against ``base``: the fastest of ``repeats`` interleaved runs."""
    variants = _variants(base)
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    info: dict[str, tuple[int, int, Any]] = {}
    _timed(network, x, cond, base)  # warm-up
    for _ in range(repeats):  # interleaved, so drift hits every variant alike
        for name, cfg in variants:
            seconds, forwards, reused, out = _timed(network, x, cond, cfg)
            times[name].append(seconds)
            info[name] = (forwards, reused, out)
    t0 = min(times["none"])
    f0, _, out0 = info["none"]
    rows = []
    for name, _cfg in variants[1:]:
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
