"""The presets chosen by rule: solver error at equal guidance on every model, then the prompt on the
trained one.

``--fast`` keeps the reference's guidance definition (:class:`~cogsample.bench.solver.Definition`
``reference``). It is the cheapest :data:`SOLVERS` entry and step count whose W2 distance from the
definition's converged limit is no larger than the reference default's own (mean against mean) on
every model of :data:`MODELS`, at every seed set, at that step count and every costlier one
measured, and whose samples on the trained model keep each attribute of the caption at least at
the lower end of the reference default's 95% interval. Each model's measurements are stored per
seed set under ``out/presets/`` as they finish, so a run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .quality import HELD_OUT, TRAINED, Env, Setup
from .solver import ANCHOR_STEPS, LIMIT_STEPS, REFERENCE, Definition, Solver, measure
from .truth import ATTRIBUTES, coverage, score_captions

__all__ = ["MODELS", "SOLVERS", "choose", "first_holding", "presets_section"]

#: The models the rule must hold on: the exact built-in one, the trained one, the held-out family.
MODELS: dict[str, Setup] = {"builtin": Setup(seeds=32), "builtin-trained": dataclasses.replace(TRAINED, seeds=16),
                            "family-exact": dataclasses.replace(HELD_OUT, seeds=32)}  # fmt: skip
QUICK_MODELS: dict[str, Setup] = {
    "builtin": Setup(frames=5, height=32, width=48, seeds=2),
    "builtin-trained": dataclasses.replace(TRAINED, seeds=1),
    "family-exact": dataclasses.replace(HELD_OUT, seeds=2),
}
SOLVERS = (Solver("vpode_dpmpp_2m"), Solver("video_ddim"), Solver("dpmpp_2m"), Solver("vpode_dpmpp_2m", "reference"),
           Solver("vpsde_dpmpp_2m", "reference"))  # fmt: skip
STEPS, QUICK_STEPS = (6, 8, 10, 12, 16, 20, 25), (4, 8)
SEEDS, QUICK_SEEDS = (1234, 4321), (1234,)


def first_holding(rows: Sequence[dict[str, Any]], reference: float, solver: str) -> dict[str, Any] | None:
    """The cheapest row of ``solver`` whose distance, and every costlier row's, is <= ``reference``."""
    mine = sorted((r for r in rows if r["solver"] == solver), key=lambda r: r["steps"])
    best = None
    for r in reversed(mine):
        if r["distance"][0] > reference:
            break
        best = r
    return best


def choose(runs: dict[str, list[dict[str, Any]]], solvers: Sequence[Solver] = SOLVERS) -> list[dict[str, Any]]:
    """Per solver, the step count from which it holds on every model and seed set (the largest of
    each run's :func:`first_holding`), cheapest first; solvers that never hold are left out."""
    options = []
    for solver in solvers:
        need = []
        for measured in runs.values():
            for m in measured:
                row = first_holding(m["rows"], m["reference"]["distance"][0], solver.name)
                need.append(row["steps"] if row else None)
        if need and None not in need:
            steps = max(n for n in need if n is not None)
            fwd = max(r["forwards"] for ms in runs.values() for m in ms for r in m["rows"]
                      if r["solver"] == solver.name and r["steps"] == steps)  # fmt: skip
            options.append({"solver": solver.name, "steps": steps, "forwards": fwd})
    return sorted(options, key=lambda o: (o["forwards"], o["solver"]))


def _measured(out: Path, model: str, setup: Setup, seed: int, opts: dict[str, Any], say: Callable) -> dict[str, Any]:
    """One model and seed set, from ``out/presets/`` when a run with the same settings stored it."""
    path = out / "presets" / f"{model}-{opts['definition'].name}-{seed}.json"
    key = {"setup": repr(dataclasses.replace(setup, seed=seed)), "steps": list(opts["steps"]),
           "solvers": [s.name for s in opts["solvers"]], "limit_steps": opts["limit_steps"],
           "weights": _weights_id(model)}  # fmt: skip
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("key") == key:
            say(f"[{model} seed {seed}] stored in {path}")
            return stored["result"]
    env = Env.build(dataclasses.replace(setup, seed=seed))
    t = time.perf_counter()
    result = measure(
        env,
        opts["solvers"],
        opts["steps"],
        opts["definition"],
        limit_steps=opts["limit_steps"],
        say=say,
        extra=_coverage,
    )
    result["seconds"] = time.perf_counter() - t
    _atomic_json(path, {"key": key, "result": result})
    return result


def _coverage(env: Env, x: Any) -> dict[str, Any]:
    return {"coverage": coverage(env, x)}


def _weights_id(model: str) -> str | None:
    """The trained model's weights file hash (a retrained model is measured again); None for exact ones."""
    if model != "builtin-trained":
        return None
    import hashlib

    from ..models.trained import WEIGHTS

    return hashlib.sha256((WEIGHTS / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()[:16]


def _atomic_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _model_summary(choice: dict[str, Any], measured: list[dict[str, Any]]) -> dict[str, Any]:
    """``presets.fast.<model>``: the choice's distance and the reference's, worst seed set first."""
    rows = [next(r for r in m["rows"] if r["solver"] == choice["solver"] and r["steps"] == choice["steps"])
            for m in measured]  # fmt: skip
    worst = max(range(len(rows)), key=lambda i: rows[i]["distance"][0] - measured[i]["reference"]["distance"][0])
    return {
        "forwards": rows[worst]["forwards"],
        "distance": rows[worst]["distance"],
        "reference_distance": measured[worst]["reference"]["distance"],
        "reference_forwards": measured[worst]["reference"]["forwards"],
        "per_sample": rows[worst]["per_sample"],
        "reference_per_sample": measured[worst]["reference"]["per_sample"],
        "seed": measured[worst]["seed"],
        "per_seed": [
            {"seed": m["seed"], "distance": r["distance"], "reference_distance": m["reference"]["distance"]}
            for m, r in zip(measured, rows, strict=True)
        ],
    }


def keeps_prompt(fast: dict[str, Any], reference: dict[str, Any]) -> bool:
    """Each attribute's share at least the lower end of the reference default's 95% interval."""
    return all(fast[a][0] >= reference[a][1] for a in ATTRIBUTES)


def presets_section(out: Path, quick: bool, say: Callable[[str], None], trained: bool = True) -> dict[str, Any]:
    """Measure every model (resuming from ``out/presets/``), choose ``--fast`` by the rule, check
    the prompt on the trained model; ``{"fast": {...}, "solver": {model: [per seed]}, "truth": ...}``."""
    models = QUICK_MODELS if quick else MODELS
    if not trained:
        models = {k: v for k, v in models.items() if k != "builtin-trained"}
    opts = {"solvers": SOLVERS, "steps": QUICK_STEPS if quick else STEPS, "definition": Definition(),
            "limit_steps": 40 if quick else LIMIT_STEPS}  # fmt: skip
    seeds = QUICK_SEEDS if quick else SEEDS
    runs = {model: [_measured(out, model, setup, seed, opts, say) for seed in seeds] for model, setup in models.items()}
    ranked = choose(runs)
    truth = _truth(ranked, quick, say) if trained else {}
    choice = next((o for o in ranked if truth.get(o["solver"], {}).get("keeps_prompt", not trained)), None)
    fast: dict[str, Any] = {"rule": __doc__.split("\n\n")[1].replace("\n", " "), "choice": choice, "ranked": ranked}
    if choice:
        fast.update({model: _model_summary(choice, measured) for model, measured in runs.items()})
        if trained:
            truth["curve"] = _truth_curve(choice, opts["steps"], quick, say)
            truth["definitions"] = _definitions(choice, quick, say)
    return {"definition": opts["definition"].name, "fast": fast, "solver": runs, "truth": truth}


def _solver(name: str) -> Solver:
    return next(s for s in SOLVERS if s.name == name)


def _truth_curve(choice: dict[str, Any], steps: Sequence[int], quick: bool, say: Callable) -> list[dict[str, Any]]:
    """The chosen solver's adherence on the trained model at every step count of the sweep."""
    seeds, per = (QUICK_SEEDS, 1) if quick else (SEEDS, 2)
    out = []
    for n in steps:
        r = score_captions("builtin-trained", _solver(choice["solver"]), n, Definition(), seeds, per)
        say(f"[builtin-trained] {choice['solver']} at {n} steps: {_shares(r)}")
        out.append({"steps": n, **r})
    return out


#: Guidance definitions the truth is measured under (besides the reference's): DynamicCFG's intended
#: ramp on the noise level and constant scales.
DEFINITIONS = (Definition("ramp"), *(Definition("cfg", s) for s in (1.0, 3.0, 5.0, 7.0)))


def _definitions(choice: dict[str, Any], quick: bool, say: Callable) -> dict[str, Any]:
    """Adherence under each of :data:`DEFINITIONS` (and the reference's), near converged (the ODE
    at 50 steps) and at the chosen solver's step count."""
    seeds, per = (QUICK_SEEDS, 1) if quick else (SEEDS, 2)
    cheap = _solver(choice["solver"])
    out: dict[str, Any] = {}
    for d in (Definition(), *DEFINITIONS):
        out[d.name] = {}
        for label, solver, n in (("converged", Solver("vpode_dpmpp_2m"), 50), ("cheap", cheap, choice["steps"])):
            r = score_captions("builtin-trained", solver, n, d, seeds, per)
            say(f"[builtin-trained] {d.name} {label} ({solver.name}, {n} steps): {_shares(r)}")
            out[d.name][label] = {"solver": solver.name, "steps": n, **r}
    return out


def _truth(ranked: list[dict[str, Any]], quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """Adherence on the trained model: the reference default, and each ranked option (cheapest
    first) until one keeps the prompt."""
    seeds, per = (QUICK_SEEDS, 1) if quick else (SEEDS, 2)
    ref = score_captions("builtin-trained", REFERENCE, ANCHOR_STEPS, Definition(), seeds, per)
    say(f"[builtin-trained] reference default: {_shares(ref)}")
    out: dict[str, Any] = {"reference": ref}
    for o in ranked:
        solver = _solver(o["solver"])
        r = score_captions("builtin-trained", solver, o["steps"], Definition(), seeds, per)
        r["keeps_prompt"] = keeps_prompt(r, ref)
        say(f"[builtin-trained] {o['solver']} at {o['steps']} steps: {_shares(r)}; keeps it: {r['keeps_prompt']}")
        out[o["solver"]] = r
        if r["keeps_prompt"]:
            break
    return out


def _shares(r: dict[str, Any]) -> str:
    return ", ".join(f"{a} {r[a][0]:.0%} [{r[a][1]:.0%}, {r[a][2]:.0%}]" for a in ATTRIBUTES)
