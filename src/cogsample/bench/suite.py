"""``cogsample bench``: every benchmark in one run, a JSON of results, PNG plots and a table.

Sections: ``quality`` (quality per forward on the built-in exact model, see
:mod:`cogsample.bench.quality`), ``options`` (each forward-saving option's speed-up and quality
change on the built-in model, and its speed-up on a tiny random-weight diffusers transformer) and
``speed`` (:mod:`cogsample.bench.speed`: cogsample vs diffusers at equal forwards, sampler
overhead, ``torch.compile``, peak memory); ``long_video`` (:mod:`cogsample.bench.long_video`:
the trained model at 4x its native length, whole or in context windows, scored against the true
long clips, :func:`~cogsample.bench.long_video.recommend`'s choice). Figures are ratios from one run on one machine; the
machine is recorded with them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..sampling.config import SamplingConfig
from ..sampling.guidance import GuidanceInterval
from ..sampling.samplers import SAMPLERS
from .harness import machine, needs_diffusers, non_finite
from .options import options_builtin, options_diffusers
from .quality import (
    HELD_OUT,
    QUICK,
    SCALE,
    TRAINED,
    Candidate,
    Env,
    Setup,
    evaluate,
    fast_candidate,
    reference_default,
    run_quality,
    stable_match,
)

__all__ = ["SECTIONS", "candidates", "machine", "run_bench", "table"]

SECTIONS = ("quality", "options", "speed", "long_video")

ALPHA = ("vpsde_dpmpp_2m", "vpode_dpmpp_2m", "video_ddim", "video_ddpm", "vpsde_dpmpp_3m", "vpode_dpmpp_3m", "vp_unipc")
SIGMA = ("euler", "heun", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2s_ancestral", "lms", "ddim")


def candidates(quick: bool) -> list[Candidate]:
    """The configurations the quality section scores (every sampler on the log-SNR grid, the
    shipped default's family on its own grid, and the guidance interval)."""
    if quick:
        return [
            Candidate("vpsde_dpmpp_2m", grid="reference", cfg="reference", skip_unit=False),
            Candidate("vpsde_dpmpp_2m"),
            Candidate("vpode_dpmpp_2m"),
            Candidate("euler"),
        ]
    out = [
        Candidate("vpsde_dpmpp_2m", grid="reference", cfg="reference", skip_unit=False),
        Candidate("vpode_dpmpp_2m", grid="reference", cfg="reference", skip_unit=False),
        Candidate("vpsde_dpmpp_2m", grid="reference", cfg="loop"),
    ]
    out += [Candidate(name) for name in (*ALPHA, *SIGMA) if name in SAMPLERS]
    out += [Candidate("vpsde_dpmpp_2m", interval=0.4), Candidate("vpode_dpmpp_2m", interval=0.4)]
    return out


# ----------------------------------------------------------------------------------------------
# the options section's bases


def _fast_base(quality: dict[str, Any] | None, quick: bool) -> tuple[str, SamplingConfig]:
    """The fastest matching configuration with the options under test switched off."""
    best = (quality or {}).get("best")
    if best is not None:
        base = _options_off(SamplingConfig.from_dict(best["config"]))
        return f"{best['sampler']}, log-SNR, {best['steps']} steps", base
    steps = 6 if quick else 15
    return f"vpode_dpmpp_2m, log-SNR, {steps} steps", Candidate("vpode_dpmpp_2m", skip_unit=False).config(steps)


# ----------------------------------------------------------------------------------------------
# quality on every model, and the --fast choice

#: Step counts of the sweep, and the noise seeds of its repeats (a choice must hold on each).
STEPS, QUICK_STEPS = (4, 6, 8, 10, 12, 15, 20, 30, 50), (4, 8)
SEEDS, QUICK_SEEDS = (1234, 4321), (1234,)


def model_setups(quick: bool) -> dict[str, Setup]:
    """The models the choice is made on (the exact built-in one and the trained one)."""
    if quick:
        return {"builtin": QUICK, "builtin-trained": dataclasses.replace(TRAINED, seeds=2)}
    return {"builtin": Setup(), "builtin-trained": TRAINED}


def _sweep(
    setup: Setup, cands: Sequence[Candidate], steps: Sequence[int], seeds: Sequence[int], ode_steps: int, say: Callable
) -> list[dict[str, Any]]:
    """``run_quality`` for each seed; after the first, only what could still match at every seed
    (a candidate with a stable match so far, at its stable step count and above)."""
    env = Env.build(dataclasses.replace(setup, seed=seeds[0]))
    runs = [run_quality(cands, steps, env=env, ode_steps=ode_steps, log=say)]
    for seed in seeds[1:]:
        env = Env.build(dataclasses.replace(setup, seed=seed))
        keep = {c.name: stable_match(runs, c.name) for c in cands}
        per = {name: [n for n in steps if n >= st["steps"]] for name, st in keep.items() if st}
        runs.append(run_quality([c for c in cands if c.name in per], per, env=env, log=say))
    return runs


def _options_off(cfg: SamplingConfig) -> SamplingConfig:
    """``cfg`` with the options under test switched off (no guidance interval, no unit-scale skip)."""
    guidance = cfg.guidance.guidance if isinstance(cfg.guidance, GuidanceInterval) else cfg.guidance
    return dataclasses.replace(cfg, guidance=guidance, skip_unit_cfg=False)


def _trained_missing() -> str | None:
    missing = needs_diffusers()
    if missing:
        return missing
    from ..models.trained import WEIGHTS

    if not (WEIGHTS / "config.json").is_file():
        return f"no trained weights in {WEIGHTS}"
    return None


def quality_section(quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Every candidate on every model of :func:`model_setups` at every step count and seed; then
    the candidates that matched on both, on the held-out model; and guidance at scale 1 vs 6."""
    cands = candidates(quick)
    fast, _ = fast_candidate()
    if fast.name not in {c.name for c in cands}:
        cands.append(fast)
    steps, seeds = (QUICK_STEPS, QUICK_SEEDS) if quick else (STEPS, SEEDS)
    models: dict[str, Any] = {}
    for key, setup in model_setups(quick).items():
        missing = _trained_missing() if key == "builtin-trained" else None
        if missing:
            models[key] = {"skipped": missing}
            continue
        t = time.perf_counter()
        ode = (24 if quick else 120) if key == "builtin" else 0  # the trained one: too slow, and no exact ODE
        runs = _sweep(setup, cands, steps, seeds, ode, say)
        models[key] = {"setup": runs[0]["setup"], "runs": runs, "guidance": guidance_effect(setup, say)}
        models[key]["seconds"] = time.perf_counter() - t
    # the held-out model sees only what could be chosen: candidates stable on every model above
    ran = [m for m in models.values() if "runs" in m]
    both = [c for c in cands if ran and all(stable_match(m["runs"], c.name) for m in ran)]
    if fast not in both:
        both.append(fast)
    held = dataclasses.replace(HELD_OUT, seeds=2) if quick else HELD_OUT
    t = time.perf_counter()
    models["family-exact"] = {"held_out": True, "setup": None, "runs": _sweep(held, both, steps, seeds, 0, say)}
    models["family-exact"]["setup"] = models["family-exact"]["runs"][0]["setup"]
    models["family-exact"]["seconds"] = time.perf_counter() - t
    return models


def guidance_effect(setup: Setup, say: Callable[[str], None]) -> dict[str, Any]:
    """The reference default (50 steps) at guidance scale 1 and 6: what guidance does to
    ``on_prompt`` and the mode balance on this model."""
    env = Env.build(setup)
    out = {}
    for scale in (1.0, SCALE):
        cand = dataclasses.replace(reference_default(), scale=scale)
        r = evaluate(env, cand, 50)
        out[f"scale {scale:g}"] = {k: r[k] for k in ("forwards", "on_prompt", "mode_tv", "kl", "var_ratio")}
        say(f"[{setup.model}] guidance scale {scale:g}: on_prompt {r['on_prompt']:.2f}, mode_tv {r['mode_tv']:.3f}")
    return out


def choose_fast(models: dict[str, Any]) -> dict[str, Any] | None:
    """The cheapest candidate whose stable match (:func:`stable_match`) holds on every swept model
    except the held-out one: its step count is the largest of theirs, forwards the most spent there."""
    swept = {k: m for k, m in models.items() if m.get("runs") and not m.get("held_out")}
    if not swept:
        return None
    names = {r["candidate"] for m in swept.values() for r in m["runs"][0]["results"]}
    options = []
    for name in sorted(names):
        per = {k: stable_match(m["runs"], name) for k, m in swept.items()}
        if not all(per.values()):
            continue
        n = max(p["steps"] for p in per.values())
        fwd = max(
            r["forwards"] for m in swept.values() for run in m["runs"] for r in run["results"]
            if r["candidate"] == name and r["steps"] == n
        )  # fmt: skip
        options.append({"candidate": name, "steps": n, "forwards": fwd, "per_model": per})
    return min(options, key=lambda o: (o["forwards"], o["steps"], o["candidate"]), default=None)


def summarize(res: dict[str, Any]) -> None:
    """Per model: ``forwards_to_match_reference`` (the fewest forwards of a stable match) and
    ``fast_matches_reference`` (``--fast`` matches at its step count and every larger one, at every
    seed). A pure function of the stored runs and :data:`~cogsample.pipeline.pipeline.FAST`."""
    fast, fast_steps = fast_candidate()
    for m in res["models"].values():
        if "runs" not in m:
            continue
        runs = m["runs"]
        names = {r["candidate"] for run in runs for r in run["results"]}
        stable = [s for s in (stable_match(runs, n) for n in sorted(names)) if s]
        m["stable_matches"] = sorted(stable, key=lambda s: (s["forwards"], s["candidate"]))
        m["forwards_to_match_reference"] = m["stable_matches"][0] if stable else None
        if m["forwards_to_match_reference"]:
            m["forwards_to_match_reference"]["reference_forwards"] = runs[0]["reference"]["forwards"]
        st = stable_match(runs, fast.name)
        m["fast"] = {"candidate": fast.name, "steps": fast_steps, "stable_from_steps": st and st["steps"]}
        m["fast_matches_reference"] = bool(st and st["steps"] <= fast_steps)
    best = res["models"]["builtin"].get("forwards_to_match_reference")
    if best:
        cand = next(c for c in [*candidates(False), *candidates(True), fast] if c.name == best["candidate"])
        best = {**best, "config": cand.config(best["steps"]).to_dict()}
    res["forwards_to_match_reference"] = best


# ----------------------------------------------------------------------------------------------
# the whole run


def _finite(obj: Any, path: str = "") -> list[str]:
    """Paths of non-finite numbers in a JSON-like tree."""
    return [p for p, _ in non_finite(obj, path)]


def run_bench(
    out: str | Path,
    *,
    quick: bool = False,
    sections: Sequence[str] = SECTIONS,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``sections``, write ``bench.json`` and the plots into ``out``; returns the results."""
    say = log or (lambda _m: None)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"sections must be among {list(SECTIONS)}, got {unknown}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    res: dict[str, Any] = {"size": "quick" if quick else "default", "machine": machine(), "plots": {}}
    if "quality" in sections:
        _quality_step(res, quick, out, say)
    _write(out, res)  # what is done so far survives a later section's failure
    if "options" in sections:
        res["options"] = _options_step(res, quick, say)
    _write(out, res)
    if "speed" in sections:
        res["speed"] = _speed_step(quick, say)
    _write(out, res)
    if "long_video" in sections:
        _long_video_step(res, quick, out, say)
    res["seconds"] = time.perf_counter() - start
    bad = _finite(res)
    if bad:
        raise RuntimeError(f"non-finite figures in the bench results: {bad[:5]}")
    res["json"] = str(_write(out, res))
    return res


def _quality_step(res: dict[str, Any], quick: bool, out: Path, say: Callable[[str], None]) -> None:
    """``models`` (:func:`quality_section`), the ``fast_choice``, the summaries, the built-in model's
    first run as ``quality``, and its plots."""
    say(f"quality per forward ({'quick' if quick else 'default'} size)")
    t = time.perf_counter()
    res["models"] = quality_section(quick, say)
    res["fast_choice"] = choose_fast(res["models"])
    summarize(res)
    quality = res["models"]["builtin"]["runs"][0]
    res["quality"] = quality
    res["quality_seconds"] = time.perf_counter() - t
    from .plots import plot_ode_error, plot_quality

    res["plots"]["quality"] = str(plot_quality(quality, out / "quality_per_forward.png"))
    res["plots"]["ode_error"] = str(plot_ode_error(quality, out / "ode_error.png"))
    trained = res["models"].get("builtin-trained", {})
    if trained.get("runs"):
        path = out / "quality_per_forward_trained.png"
        res["plots"]["quality_trained"] = str(plot_quality(trained["runs"][0], path))


def _options_step(res: dict[str, Any], quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Each forward-saving option on the built-in model, the trained one and a tiny diffusers
    transformer, against the shipped default, its ODE sibling and the fastest matching configuration."""
    say("forward-saving options on the built-in model")
    t = time.perf_counter()
    n = 10 if quick else 50
    bases = [
        (f"reference default ({n} steps)", reference_default().config(n)),
        # deterministic, so a step cache has something to reuse
        (
            f"vpode_dpmpp_2m, shipped grid ({n} steps)",
            dataclasses.replace(reference_default().config(n), sampler="vpode_dpmpp_2m"),
        ),
        _fast_base(res.get("quality"), quick),
    ]
    options: dict[str, Any] = {"builtin": options_builtin(QUICK if quick else Setup(), bases, 1 if quick else 3, say)}
    missing = _trained_missing()
    if missing:
        options["builtin-trained"] = {"skipped": missing}
    else:
        say("forward-saving options on the trained built-in model")
        trained_bases = [*bases[:2], *_trained_fast_base(res.get("models"))]
        options["builtin-trained"] = options_builtin(model_setups(quick)["builtin-trained"], trained_bases, 1, say)
    missing = needs_diffusers()
    if missing:
        options["diffusers"] = {"skipped": missing}
    else:
        say("forward-saving options on a tiny diffusers transformer")
        options["diffusers"] = options_diffusers(quick=quick)
    options["seconds"] = time.perf_counter() - t
    return options


def _trained_fast_base(models: dict[str, Any] | None) -> list[tuple[str, SamplingConfig]]:
    """The trained model's cheapest stable match with the options under test off, as a base (none
    where nothing matched)."""
    fast = (models or {}).get("builtin-trained", {}).get("forwards_to_match_reference")
    if not fast:
        return []
    cand = next(c for c in [*candidates(False), *candidates(True)] if c.name == fast["candidate"])
    return [(f"{cand.sampler}, {cand.grid}, {fast['steps']} steps", _options_off(cand.config(fast["steps"])))]


def _speed_step(quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """:func:`~cogsample.bench.speed.run_speed` and the time per step against ranks."""
    say("speed and memory against diffusers")
    t = time.perf_counter()
    try:
        from .speed import run_speed
    except ImportError as e:
        speed: dict[str, Any] = {"skipped": f"needs diffusers ({e})"}
    else:
        from .parallel import parallel_speed

        speed = run_speed(quick=quick)
        say("time per step against ranks (--parallel, torchrun)")
        speed["parallel"] = parallel_speed(quick=quick)
    speed["seconds"] = time.perf_counter() - t
    return speed


def _long_video_step(res: dict[str, Any], quick: bool, out: Path, say: Callable[[str], None]) -> None:
    """``long_video`` (:func:`~cogsample.bench.long_video.long_video`) and its plot."""
    say("long videos in context windows on the trained model")
    missing = _trained_missing()
    if missing:
        res["long_video"] = {"skipped": missing}
        return
    from .long_video import long_video
    from .plots import plot_long_video

    res["long_video"] = long_video(quick=quick, log=say)
    res["plots"]["long_video"] = str(plot_long_video(res["long_video"], out / "long_video.png"))


def _write(out: Path, res: dict[str, Any]) -> Path:
    path = out / "bench.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
    tmp.replace(path)
    return path


# ----------------------------------------------------------------------------------------------
# the table: one block of lines per section


def table(res: dict[str, Any]) -> str:
    """The headline figures as a plain-text table."""
    lines = [_machine_line(res["machine"])]
    if "models" in res:
        lines += _quality_lines(res["models"], res.get("fast_choice"))
    if "options" in res:
        lines += _options_lines(res["options"])
    lines += _speed_lines(res.get("speed", {}))
    lines += _long_video_lines(res.get("long_video", {}))
    lines.append(f"total {res['seconds']:.0f} s; results in {res.get('json', '?')}")
    return "\n".join(lines)


def _machine_line(m: dict[str, Any]) -> str:
    cuda = f", {m['cuda_device']}" if "cuda_device" in m else ""
    return f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}{cuda}"


def _quality_lines(models: dict[str, Any], choice: dict[str, Any] | None) -> list[str]:
    """Each model's reference, best match, ``--fast`` and guidance lines; the fast choice; the
    fewest forwards of a stable match per configuration and model."""
    lines = [line for key, m in models.items() for line in _model_lines(key, m)]
    lines.append(
        "fast choice (cheapest stable match on every swept model): "
        + (f"{choice['candidate']} at {choice['steps']} steps, {choice['forwards']} forwards" if choice else "none")
    )
    lines.append("")
    keys = [k for k, m in models.items() if "runs" in m]
    lines.append(f"{'configuration: fewest forwards of a stable match':56s}" + "".join(f"{k:>18s}" for k in keys))
    names = sorted({r["candidate"] for k in keys for r in models[k]["runs"][0]["results"]})
    for name in names:
        cells = []
        for k in keys:
            st = next((x for x in models[k].get("stable_matches", []) if x["candidate"] == name), None)
            cells.append(f"{st['forwards']} ({st['steps']} st)" if st else "-")
        lines.append(f"{name:56s}" + "".join(f"{c:>18s}" for c in cells))
    return lines


def _model_lines(key: str, m: dict[str, Any]) -> list[str]:
    if "skipped" in m:
        return [f"[{key}] skipped: {m['skipped']}"]
    ref, su, f = m["runs"][0]["reference"], m["setup"], m["fast"]
    best = m.get("forwards_to_match_reference")
    lines = [
        f"[{key}{' (held out)' if m.get('held_out') else ''}] {su['samples']} samples x {len(m['runs'])} seeds; "
        f"reference default (vpsde_dpmpp_2m, 50 steps, DynamicCFG 6): {ref['forwards']} forwards, "
        f"kl {ref['kl']:.4f}, mode_tv {ref['mode_tv']:.3f}, on_prompt {ref['on_prompt']:.2f}",
        "  forwards_to_match_reference: "
        + (f"{best['forwards']} ({best['candidate']}, {best['steps']} steps)" if best else "none matched"),
        f"  fast_matches_reference: {m['fast_matches_reference']} (--fast at {f['steps']} steps; "
        f"matches from {f['stable_from_steps'] or '-'} steps on)",
    ]
    for scale, g in m.get("guidance", {}).items():
        lines.append(
            f"  guidance {scale}: on_prompt {g['on_prompt']:.2f}, mode_tv {g['mode_tv']:.3f}, kl {g['kl']:.4f}"
        )
    return lines


def _options_lines(options: dict[str, Any]) -> list[str]:
    """One row per option and base: forwards, time speed-up, quality change (the built-in models),
    then the tiny diffusers transformer's rows."""
    lines = [""]
    for key in ("builtin", "builtin-trained"):
        rows = options.get(key)
        if not isinstance(rows, list):
            continue
        lines.append(
            f"{'option (' + key + ' model)':30s} {'base':38s} {'fwd':>9s} {'time x':>7s} {'d kl':>8s} "
            f"{'d tv':>7s} {'rel L2':>9s}"
        )
        for r in rows:
            lines.append(
                f"{r['option']:30s} {r['base']:38s} {r['base_forwards']:>4d}->{r['forwards']:<4d} "
                f"{r['time_speedup']:>7.2f} {r['delta_kl']:>+8.4f} {r['delta_mode_tv']:>+7.3f} "
                f"{r['latent_rel_l2']:>9.2e}"
            )
    for r in options.get("diffusers", {}).get("rows", []):
        lines.append(
            f"{r['option']:30s} {r['base'] + ', tiny diffusers':38s} {r['base_forwards']:>4d}->{r['forwards']:<4d} "
            f"{r['time_speedup']:>7.2f}"
        )
    return lines


def _speed_lines(speed: dict[str, Any]) -> list[str]:
    """cogsample against diffusers, the sampler's overhead, ranks, ``torch.compile``, peak memory."""
    lines = _compare_lines(speed) + _overhead_lines(speed.get("sampler_overhead", {}))
    lines += _parallel_lines(speed.get("parallel", {}))
    comp = speed.get("compile", {})
    if "speedup" in comp:
        lines.append(f"torch.compile (tiny transformer): x{comp['speedup']:.2f} per step")
    mem = speed.get("peak_memory", {})
    if "cogsample" in mem:
        lines.append(
            "peak memory of a generation above the loaded model: "
            f"cogsample {mem['cogsample']['generation_above_loaded_mib']:.0f} MiB, "
            f"diffusers {mem['diffusers']['generation_above_loaded_mib']:.0f} MiB"
        )
    return lines


def _compare_lines(speed: dict[str, Any]) -> list[str]:
    if "compare_diffusers" not in speed:
        return []
    c = speed["compare_diffusers"]
    ratio = c["ratio_cogsample_over_diffusers"]
    return [
        "",
        f"cogsample / diffusers wall time, equal forwards ({c['setup']['steps']} steps, tiny transformer, "
        f"bit-identical latents: {c['latents_identical']}): loop {ratio['loop']:.3f}, "
        f"whole video {ratio['video']:.3f}",
    ]


def _overhead_lines(over: dict[str, Any]) -> list[str]:
    if "tiny" not in over:
        return []
    lines = []
    for prof in ("diffusers", "sat"):
        o = over["tiny"][prof]
        lines.append(
            f"sampler overhead ({prof} profile, tiny transformer): {o['overhead_ms']['median']:.3f} ms of a "
            f"{o['real_step_ms']['median']:.2f} ms step ({o['overhead_pct_of_real_step']:.1f}%); "
            f"diffusers' own loop {over['tiny']['diffusers_overhead_ms']['median']:.3f} ms"
        )
    big = over["cogvideox_5b_shapes"]
    lines.append(
        f"sampler overhead at CogVideoX-5B latent shapes ({big['device']}): "
        f"sat {big['sat']['overhead_ms']['median']:.1f} ms, "
        f"diffusers profile {big['diffusers']['overhead_ms']['median']:.1f} ms, diffusers' own loop "
        f"{big['diffusers_overhead_ms']['median']:.1f} ms per step"
    )
    return lines


def _parallel_lines(par: dict[str, Any]) -> list[str]:
    if "rows" not in par:
        return []
    lines = [f"time per step against ranks ({par['setup']['what']}, {par['setup']['device']}):"]
    for r in par["rows"]:
        if "ms_per_step" in r:
            lines.append(
                f"  {r['ranks']} rank(s) {r['parallel'] or 'one process':16s} {r['ms_per_step']['median']:8.1f} ms "
                f"(x{r['speedup']:.2f}), latents within {r['max_rel_diff']:.1e} of one rank's"
            )
    return lines


def _long_video_lines(lv: dict[str, Any]) -> list[str]:
    if "skipped" in lv:
        return [f"long video skipped: {lv['skipped']}"]
    if "runs" not in lv:
        return []
    from .long_video import lines

    return ["", *lines(lv)]
