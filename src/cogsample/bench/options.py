"""The forward-saving options' speed-up on a tiny random-weight diffusers CogVideoX transformer.

Same latents, prompt, seed and sampler config with and without each option; the transformer runs
through cogsample's adapter (:class:`~cogsample.models.cogvideox.CogVideoXTransformerNetwork`).
Random weights say nothing about quality (that is measured on the built-in exact model), only
about what each option saves in wall time on a real transformer's code path.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..sampling.cache import CacheConfig
from ..sampling.config import SamplingConfig, build_model, release
from ..sampling.guidance import Conditioning, GuidanceInterval
from ..sampling.noise import SeededNoise, latent_shape
from .common import BENCH_SIZE, BENCH_VIDEO, quiet
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
    model, grid = build_model(network, x, cond, config)
    noise = SeededNoise([7] * x.shape[0])
    start = time.perf_counter()
    try:
        out = config.spec.fn(model, x, grid, noise, **config.options)
    finally:
        cache = model.owned_cache
        release(model)
    seconds = time.perf_counter() - start
    if cache is None:
        return seconds, model.forwards, 0, out
    # forwards the network computed (every call here has the same rows)
    return seconds, round(model.forwards * cache.computed / max(cache.calls, 1)), cache.reused, out


def options_diffusers(quick: bool = False) -> dict[str, Any]:
    """Wall time of each option against no option, on a tiny diffusers transformer (min of repeats)."""
    from ..models.cogvideox import load_cogvideox
    from ..models.tiny import build_tiny_folder

    steps, repeats = (6, 1) if quick else (50, 2)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cogsample-options-") as tmp:
        with quiet():
            folder = build_tiny_folder(Path(tmp) / "tiny", "t2v", seed=0, size=BENCH_SIZE)
            model = load_cogvideox(folder, dtype=torch.float32, device="cpu")
        context = model.encode_prompts(["a red car drives through the city at night"])
        model.release_text_encoder()
        cond = Conditioning(context=context)
        shape = latent_shape(1, BENCH_VIDEO["frames"], BENCH_VIDEO["height"], BENCH_VIDEO["width"])
        x = SeededNoise([42]).initial(shape)
        shipped = reference_default().config(steps)
        bases = [
            (f"reference default ({steps} steps)", shipped),
            (f"vpode_dpmpp_2m, shipped grid ({steps} steps)", dataclasses.replace(shipped, sampler="vpode_dpmpp_2m")),
        ]
        for base_name, base in bases:
            variants = _variants(base)
            times: dict[str, list[float]] = {name: [] for name, _ in variants}
            info: dict[str, tuple[int, int, Any]] = {}
            _timed(model.network, x, cond, base)  # warm-up
            for _ in range(repeats):  # interleaved, so drift hits every variant alike
                for name, cfg in variants:
                    seconds, forwards, reused, out = _timed(model.network, x, cond, cfg)
                    times[name].append(seconds)
                    info[name] = (forwards, reused, out)
            t0 = min(times["none"])
            f0, _, out0 = info["none"]
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
                        "latent_rel_l2": float((out.double() - out0.double()).norm() / out0.double().norm()),
                    }
                )
    return {"device": "cpu", "steps": steps, "video": dict(BENCH_VIDEO), "repeats": repeats, "rows": rows}
