"""Step caches on the trained built-in model: each kind at its documented settings and two cheaper
ones, against no cache, at the reference default (vpsde_dpmpp_2m, 50 steps, DynamicCFG 6, CFG
batched).

``python -m cogsample.bench.caches OUT.json [--captions N] [--steps S]``: per configuration,
network calls, calls whose every block ran (``computed``), transformer block evaluations (block
bodies run, and block bodies times their rows: the work), attention evaluations, sampling seconds
(one run; the load average beside it), the relative L2 distance of the latents from the uncached
run's, and the truth (:mod:`cogsample.bench.truth`: adherence per attribute, realism and the exact
clip, each ``[mean, lo, hi]`` with a 95% bootstrap interval) over one sample per caption of
:data:`~cogsample.bench.truth.CAPTIONS`. Resumable: OUT.json is rewritten after each configuration
and the ones it holds are skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..models.hook_caches import BlockCounter, parse_cache
from ..sampling.config import build_model
from .harness import loadavg, machine, rel_l2, sample_noise, timed_sample
from .quality import Env, Setup, fast_candidate, reference_default
from .truth import CAPTIONS, adherence

__all__ = ["CONFIGS", "FAST_CANDIDATES", "fast_w2", "main", "measure", "table"]

#: Each kind: its documented settings (diffusers' defaults; ``output``: the TeaCache-like 0.1 the
#: earlier bench used), then two cheaper ones (more reuse).
CONFIGS: dict[str, tuple[str, str, str]] = {
    "output": ("output:threshold=0.1", "output:threshold=0.3", "output:threshold=1.0"),
    "first-block": ("first-block", "first-block:threshold=0.15", "first-block:threshold=0.3"),
    "faster": ("faster", "faster:attn=3", "faster:attn=3,attn_below=1000,uncond_below=1000"),
    "pab": ("pab", "pab:attn=3", "pab:attn=4,above=0,below=1000"),
    "mag": ("mag", "mag:threshold=0.12", "mag:threshold=0.24,max_skips=5"),
    "taylorseer": ("taylorseer", "taylorseer:interval=8", "taylorseer:lite=true"),
    "sea": ("sea", "sea:threshold=0.5", "sea:threshold=1.0"),
    # cache-dit's DBCache (fn=1: its default 8 first blocks exceed the trained model's 4)
    "dbcache": ("dbcache", "dbcache:threshold=0.16", "dbcache:threshold=0.32,warmup=4"),
}
MODEL = "builtin-trained"
SAMPLERS = {
    "reference": "reference default (vpsde_dpmpp_2m, DynamicCFG 6, batched CFG)",
    "fast": "--fast (dpmpp_2m, log-SNR grid, DynamicCFG 6 carried by level, batched CFG)",
}


def measure(
    env: Env, spec: str | None, steps: int, baseline: torch.Tensor | None, preset: str = "reference"
) -> tuple[dict[str, Any], torch.Tensor]:
    """One configuration on ``env``'s samples: counts, seconds, distance from ``baseline``, truth;
    and the latents. ``preset``: the reference default's sampler, or ``--fast``'s."""
    base = (reference_default() if preset == "reference" else fast_candidate()[0]).config(steps)
    cache = None if spec is None else parse_cache(spec, MODEL)
    config = dataclasses.replace(base, cache=cache)
    counter = BlockCounter(env.network.transformer)
    try:
        model, grid = build_model(env.network, env.x_t, env.cond, config)
        load = loadavg()
        with torch.inference_mode():
            x, seconds = timed_sample(config, model, env.x_t, grid, sample_noise(env.setup.seed, env.x_t.shape[0]))
        owned = model.owned_cache
    finally:
        counter.remove()
    calls = model.forwards // 2  # batched CFG: one call holds both branches
    row: dict[str, Any] = {
        "cache": None if cache is None else cache.spec(),
        "kind": None if cache is None else cache.kind,
        "network_calls": calls,
        "computed_calls": calls if owned is None else getattr(owned, "computed", calls),
        "blocks": counter.blocks,
        "block_rows": counter.block_rows,
        "attention": counter.attention,
        "seconds": seconds,
        "loadavg_before": load,
        "latent_rel_l2": 0.0 if baseline is None else rel_l2(x, baseline),
        **adherence(env, x),
    }
    return row, x


def main(argv: list[str] | None = None) -> int:
    """Run (or resume) the cache bench into ``out``."""
    ap = argparse.ArgumentParser(prog="python -m cogsample.bench.caches", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--captions", type=int, default=24, help="captions of truth.CAPTIONS, one sample each")
    ap.add_argument("--steps", type=int, default=None, help="default: the preset's (50; --fast's 20)")
    ap.add_argument("--preset", choices=("reference", "fast"), default="reference", help="the sampler cached")
    ap.add_argument("--kinds", nargs="*", default=None, help="only these kinds (default: every installed one)")
    ap.add_argument("--table", action="store_true", help="print OUT.json's table (markdown) and stop")
    ap.add_argument("--fast-w2", action="store_true", help="--fast with caches against the preset rule, into OUT")
    args = ap.parse_args(argv)
    if args.fast_w2:
        fast_w2(args.out)
        return 0
    args.steps = args.steps or (50 if args.preset == "reference" else fast_candidate()[1])
    data: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.table:
        print(table(data), end="")
        return 0
    setup = Setup(model=MODEL, frames=9, height=64, width=96, seeds=1, prompts=CAPTIONS[: args.captions], seed=2024)
    data.setdefault("setup", {"model": MODEL, "samples": args.captions, "steps": args.steps, "seed": setup.seed,
                              "sampler": SAMPLERS[args.preset], "preset": args.preset,
                              "machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")})  # fmt: skip
    rows: dict[str, Any] = data.setdefault("rows", {})
    env = Env.build(setup)
    keep = Path(tempfile.gettempdir()) / f"cogsample-caches-{args.preset}-{args.captions}-{args.steps}.baseline.pt"
    baseline = torch.load(keep) if keep.is_file() and "none" in rows else None
    kinds = args.kinds or [k for k in CONFIGS if k != "dbcache" or importlib.util.find_spec("cache_dit")]
    todo = [("none", None)] + [(spec, spec) for k in kinds for spec in CONFIGS[k]]
    for name, spec in todo:
        if name in rows and (name != "none" or baseline is not None):
            continue
        row, x = measure(env, spec, args.steps, baseline, args.preset)
        if spec is None:
            baseline = x
            torch.save(x, keep)
        rows[name] = row
        print(f"{name:50s} calls {row['network_calls']:3d} computed {row['computed_calls']:3d} blocks "
              f"{row['blocks']:4d} attn {row['attention']:4d} {row['seconds']:7.1f} s rel {row['latent_rel_l2']:.3f} "
              f"bg {row['background'][0]:.2f} exact {row['exact_clip'][0]:.2f}", flush=True)  # fmt: skip
        _save(args.out, data)
    return 0


def table(data: dict[str, Any]) -> str:
    """``data``'s rows as a markdown table: work against no cache, distance, truth with intervals."""
    rows = data["rows"]
    none = rows["none"]
    head = (
        "| cache | calls computed | block evals | block work | attention evals | seconds | latent rel. L2 | background "
        "| shape | colour | exact clip | realism |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )

    def ci(v: list[float]) -> str:
        return f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"

    lines = []
    for name, r in rows.items():
        lines.append(
            f"| {'none' if name == 'none' else '`' + name + '`'} | {r['computed_calls']}/{r['network_calls']} "
            f"| {r['blocks']}/{none['blocks']} | {r['block_rows'] / none['block_rows']:.2f} "
            f"| {r['attention']}/{none['attention']} | {r['seconds']:.1f} "
            f"| {r['latent_rel_l2']:.3f} | {ci(r['background'])} | {ci(r['shape'])} | {ci(r['color'])} "
            f"| {ci(r['exact_clip'])} | {ci(r['realism'])} |"
        )
    return head + "\n".join(lines) + "\n"


def _save(out: Path, data: dict[str, Any]) -> None:
    """``data`` to ``out`` atomically (a partial run is a valid file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out)


#: The caches tried on ``--fast`` by the preset rule (W2 from the converged limit at equal guidance).
FAST_CANDIDATES = (None, "first-block", "first-block:threshold=0.15", "first-block:threshold=0.3", "mag", "pab")


def fast_w2(out: Path, candidates: tuple[str | None, ...] = FAST_CANDIDATES) -> dict[str, Any]:
    """``--fast`` with each cache on the trained model, per seed set of the preset rule: its W2
    distance from the reference guidance's converged ODE limit (:mod:`cogsample.bench.solver`),
    block evaluations, next to the reference default's distance that the rule holds it to (stored
    by ``cogsample bench --sections presets`` in ``docs/bench/presets/``). Resumable into ``out``."""
    from ..sampling.config import release
    from ..sampling.noise import SeededNoise
    from .presets import MODELS, SEEDS
    from .solver import Definition, Solver, limit, w2

    data: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {"machine": machine(), "runs": {}}
    solver, steps = Solver("dpmpp_2m"), fast_candidate()[1]
    for seed in SEEDS:
        stored = Path("docs/bench/presets") / f"{MODEL}-reference6-{seed}.json"
        reference = json.loads(stored.read_text())["result"]["reference"]["distance"]
        runs = data["runs"].setdefault(str(seed), {"reference_default": reference, "rows": {}})
        todo = [c for c in candidates if str(c) not in runs["rows"]]
        if not todo:
            continue
        env = Env.build(dataclasses.replace(MODELS[MODEL], seed=seed))
        lim = limit(env, Definition(), stochastic=False)
        for spec in todo:
            config = dataclasses.replace(
                solver.config(steps, Definition()), cache=None if spec is None else parse_cache(spec, MODEL)
            )
            counter = BlockCounter(env.network.transformer)
            model, grid = build_model(env.network, env.x_t, env.cond, config)
            seeds = [env.setup.seed + 10_000 + i for i in range(env.x_t.shape[0])]
            try:
                x = config.spec.fn(model, env.x_t, grid, SeededNoise(seeds), **config.options)
            finally:
                release(model)
                counter.remove()
            row = {"distance": w2(x.double(), lim, env.prompt_of, env.setup.tau), "blocks": counter.blocks,
                   "block_rows": counter.block_rows, "forwards": model.forwards}  # fmt: skip
            runs["rows"][str(spec)] = row
            d = row["distance"]
            print(f"[seed {seed}] {spec!s:30s} W2 {d[0]:.3f} [{d[1]:.3f}, {d[2]:.3f}] blocks {row['blocks']} "
                  f"(reference default {reference[0]:.3f})", flush=True)  # fmt: skip
            _save(out, data)
    return data


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
