"""``cogsample bench``: every benchmark in one run, a JSON of results, PNG plots and a table.

Sections: ``presets`` (:mod:`cogsample.bench.presets`: solver error at equal guidance on the exact
built-in, trained and held-out family models, the truth on the trained one, and ``--fast`` chosen
by rule), ``options`` (each forward-saving option's speed-up and quality change on the built-in
models, and its speed-up on a tiny random-weight diffusers transformer), ``speed``
(:mod:`cogsample.bench.speed`: cogsample vs diffusers at equal forwards, sampler overhead, a
CogVideoX-2B-sized transformer on the CPU, ``torch.compile``, peak memory) and ``long_video``
(:mod:`cogsample.bench.long_video`: the trained model at 4x its native length, whole or in context
windows, scored against the true long clips). Figures are ratios from one run on one machine; the
machine is recorded with them. A run updates the sections it ran in an existing ``bench.json`` and
keeps the others (each section records when and on what machine it was measured).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..models import installed as models_installed
from .harness import machine, needs_diffusers, non_finite
from .options import options_builtin, options_diffusers
from .quality import QUICK, TRAINED, Setup, fast_candidate, reference_default

__all__ = ["SECTIONS", "machine", "run_bench", "table"]

SECTIONS = ("presets", "options", "speed", "cpu_2b", "long_video", "quantize")


def _trained_missing() -> str | None:
    missing = needs_diffusers()
    if missing:
        return missing
    from ..models.trained import WEIGHTS

    if not (WEIGHTS / "config.json").is_file():
        return f"no trained weights in {WEIGHTS}"
    return None


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
    """Run ``sections``, write ``bench.json`` (keeping the other sections of one already there,
    for a run of the same size) and the plots into ``out``; returns the results."""
    say = log or (lambda _m: None)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"sections must be among {list(SECTIONS)}, got {unknown}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    res = _previous(out, quick)
    steps = {"presets": _presets_step, "options": _options_step, "speed": _speed_step, "cpu_2b": _cpu_2b_step,
             "long_video": _long_video_step, "quantize": _quantize_step}  # fmt: skip
    for name in SECTIONS:
        if name in sections:
            t = time.perf_counter()
            steps[name](res, quick, out, say)
            res["measured"][name] = {"machine": machine(), "seconds": time.perf_counter() - t, "at": time.time()}
            _write(out, res)  # what is done so far survives a later section's failure
    res["seconds"] = time.perf_counter() - start
    bad = _finite(res)
    if bad:
        raise RuntimeError(f"non-finite figures in the bench results: {bad[:5]}")
    res["json"] = str(_write(out, res))
    return res


def _previous(out: Path, quick: bool) -> dict[str, Any]:
    """``out/bench.json`` of a run of the same size, to update; else a fresh record."""
    size = "quick" if quick else "default"
    path = out / "bench.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("size") == size:
            old.setdefault("measured", {})
            old["machine"] = machine()
            return old
    return {"size": size, "machine": machine(), "plots": {}, "measured": {}}


def _presets_step(res: dict[str, Any], quick: bool, out: Path, say: Callable[[str], None]) -> None:
    """``presets`` (:func:`~cogsample.bench.presets.presets_section`) and its plots."""
    from .plots import plot_distance, plot_truth
    from .presets import presets_section

    say(f"presets: solver error at equal guidance and the truth ({'quick' if quick else 'default'} size)")
    # the old "match the reference" rule and its figures
    for stale in ("quality", "models", "fast_choice", "quality_seconds", "forwards_to_match_reference", "note"):
        res.pop(stale, None)
    for stale in ("quality", "ode_error", "quality_trained"):
        res["plots"].pop(stale, None)
    res["presets"] = presets_section(out, quick, say, trained=_trained_missing() is None)
    res["plots"]["distance"] = str(plot_distance(res["presets"], out / "distance_to_limit.png"))
    if res["presets"]["truth"]:
        res["plots"]["truth"] = str(plot_truth(res["presets"], out / "truth_per_forward.png"))


def _options_step(res: dict[str, Any], quick: bool, out: Path, say: Callable[[str], None]) -> None:
    """Each forward-saving option on the built-in model, the trained one and a tiny diffusers
    transformer, against the shipped default, its ODE sibling and ``--fast``."""
    say("forward-saving options on the built-in model")
    t = time.perf_counter()
    n = 10 if quick else 50
    fast, fast_steps = fast_candidate()
    bases = [
        (f"reference default ({n} steps)", reference_default().config(n)),
        # deterministic, so a step cache has something to reuse
        (
            f"vpode_dpmpp_2m, shipped grid ({n} steps)",
            dataclasses.replace(reference_default().config(n), sampler="vpode_dpmpp_2m"),
        ),
        (f"--fast ({fast.sampler}, {fast.grid}, {fast_steps} steps)", fast.config(fast_steps)),
    ]
    options: dict[str, Any] = {"builtin": options_builtin(QUICK if quick else Setup(), bases, 1 if quick else 3, say)}
    missing = _trained_missing()
    if missing:
        options["builtin-trained"] = {"skipped": missing}
    else:
        say("forward-saving options on the trained built-in model")
        trained = dataclasses.replace(TRAINED, seeds=2) if quick else TRAINED
        options["builtin-trained"] = options_builtin(trained, bases, 1, say)
    missing = needs_diffusers()
    if missing:
        options["diffusers"] = {"skipped": missing}
    else:
        say("forward-saving options on a tiny diffusers transformer")
        options["diffusers"] = options_diffusers(quick=quick)
    options["seconds"] = time.perf_counter() - t
    res["options"] = options


def _speed_step(res: dict[str, Any], quick: bool, out: Path, say: Callable[[str], None]) -> None:
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
    res["speed"] = speed


def _cpu_2b_step(res: dict[str, Any], quick: bool, out: Path, say: Callable[[str], None]) -> None:
    """:func:`~cogsample.bench.speed.cpu_2b`: a CogVideoX-2B-sized transformer on the CPU."""
    say("a CogVideoX-2B-sized transformer on the CPU: cogsample against diffusers, overhead per step")
    missing = needs_diffusers()
    if missing:
        res["cpu_2b"] = {"skipped": missing}
        return
    from .speed import cpu_2b

    res["cpu_2b"] = cpu_2b(quick)


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


def _quantize_step(res: dict[str, Any], quick: bool, out: Path, say: Callable[[str], None]) -> None:
    """``quantize`` (:func:`~cogsample.bench.quantize.quantize_section`): ``--quantize``'s weight bytes,
    memory, time and latent distance per mode; also written alone to ``quantize.json``."""
    say("quantized transformer weights (torchao) on the trained model and a CogVideoX-2B-sized one")
    missing = _trained_missing()
    if missing or not models_installed("torchao"):
        res["quantize"] = {"skipped": missing or "needs torchao: pip install 'cogsample[quantize]'"}
        return
    from .quantize import quantize_section

    res["quantize"] = quantize_section(quick=quick, say=say)
    (out / "quantize.json").write_text(json.dumps(res["quantize"], indent=1) + "\n")


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
    if "presets" in res:
        lines += _presets_lines(res["presets"])
    if "options" in res:
        lines += _options_lines(res["options"])
    lines += _speed_lines(res.get("speed", {})) + _cpu_2b_lines(res.get("cpu_2b", {}))
    lines += _long_video_lines(res.get("long_video", {}))
    if "runs" in res.get("quantize", {}):
        from .quantize import table_rows

        lines += ["", "--quantize (torchao):", *table_rows(res["quantize"])]
    lines.append(f"total {res['seconds']:.0f} s; results in {res.get('json', '?')}")
    return "\n".join(lines)


def _machine_line(m: dict[str, Any]) -> str:
    cuda = f", {m['cuda_device']}" if "cuda_device" in m else ""
    return f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}{cuda}"


def _presets_lines(p: dict[str, Any]) -> list[str]:
    """``--fast`` per model against the reference default; the trained model's attributes."""
    from .truth import ATTRIBUTES

    fast, lines = p["fast"], [""]
    choice = fast.get("choice")
    if not choice:
        return [*lines, f"--fast: no configuration holds the rule ({p['definition']})"]
    lines.append(f"--fast ({p['definition']}, W2 distance to the converged limit in tau, 95%, worst seed set): "
                 f"{choice['solver']} at {choice['steps']} steps, {choice['forwards']} forwards")  # fmt: skip
    for model in p["solver"]:
        m = fast[model]
        d, r = m["distance"], m["reference_distance"]
        lines.append(f"  {model:16s} fast {d[0]:.3f} [{d[1]:.3f}, {d[2]:.3f}]  reference ({m['reference_forwards']}) "
                     f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]")  # fmt: skip
    truth = p.get("truth", {})
    for name, t in truth.items():
        if isinstance(t, dict) and "color" in t:
            cells = ", ".join(f"{a} {t[a][0]:.0%} [{t[a][1]:.0%}, {t[a][2]:.0%}]" for a in ATTRIBUTES)
            lines.append(f"  trained, {name} ({t['forwards']} fwd, {t['samples']} samples): {cells}")
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


def _cpu_2b_lines(c: dict[str, Any]) -> list[str]:
    if "cogsample" not in c:
        return []
    v, cog, dif = c["video"], c["cogsample"]["s_per_step"]["median"], c["diffusers"]["s_per_step"]["median"]
    return [
        f"CogVideoX-2B-sized transformer ({c['transformer_params_m']:.0f} M, bf16, CPU, {v['frames']} frames at "
        f"{v['height']}x{v['width']}): cogsample {cog:.1f} s per step, diffusers {dif:.1f} s "
        f"(x{c['ratio_cogsample_over_diffusers']:.3f}); overhead outside the transformer "
        f"{c['overhead_ms']['median']:.1f} ms ({c['overhead_pct_of_step']:.3f}% of a step)"
    ]


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
