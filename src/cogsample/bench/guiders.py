"""Each guidance combine rule (:mod:`cogsample.sampling.guiders`) at scales 3, 6 and 9, on the
exact built-in model and the trained one, with the bench's figures.

PAG and SLG (a third, perturbed call: :data:`RULES` holds diffusers' defaults, steps 1% to 20% of
the run, and a weaker perturbation over every step) run on the trained model only: the exact one
has no blocks to perturb. Every rule runs on the same scale schedule, the reference's guidance definition
(:class:`~cogsample.bench.solver.Definition` ``reference``: the shipped DynamicCFG scales carried by
noise level), with ``--fast``'s solver (DPM-Solver++(2M) on the log-SNR grid) at :data:`STEPS`
steps, from the same noise. Per model, rule and scale:

* ``distance`` / ``per_sample``: W2 and per-sample distance from the rule's own converged limit
  (the same rule and definition at :data:`LIMIT_STEPS` steps of the ODE solver; in units of the
  data's spread, :mod:`cogsample.bench.solver`), where the limit is defined: not for a rule whose
  result depends on the step count by construction (CFG-Zero*'s zeroed first step, APG's momentum
  over steps; :data:`STEP_DEPENDENT`);
* ``coverage`` and ``realism`` (:mod:`cogsample.bench.truth`): the share of each prompt's allowed
  clips reached, the mode TV, and the distance to the nearest true clip (about 1 for a true sample);
* on the trained model, ``truth``: adherence per attribute on the 48 full captions (the share of
  samples whose nearest clip has the caption's colour, shape, motion, background), realism;
* ``forwards`` per video and ``seconds`` of sampling (the batch, this machine).

Figures are ``[mean, lo, hi]`` with 95% bootstrap intervals. Each row is written to the output
json as it finishes; a rerun with the same settings skips the rows it finds. Run:
``python -m cogsample.bench.guiders docs/bench/guiders.json [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..pipeline.options import parse_guidance
from ..sampling.config import build_model, release
from ..sampling.noise import SeededNoise
from .harness import sq_distances
from .quality import TRAINED, Env, Setup
from .solver import Definition, Solver, bootstrap, distances, w2
from .truth import CAPTIONS, adherence, coverage

Tensor = torch.Tensor

__all__ = ["RULES", "SCALES", "main", "measure_rule", "run_rule"]

#: The rules compared (``cfg``: no rule, ``u + s (c - u)``), by their ``--guidance`` text.
RULES = (
    *("cfg", "cfg-zero-star", "apg", "tangential", "fdg", "mag"),
    *("pag", "slg", "pag:weight=1,end=1", "slg:weight=1,end=1"),
)
#: Measured in this order (every rule at 6 first, so a partial run compares them all at one scale).
SCALES = (6.0, 3.0, 9.0)
#: Rules whose result depends on the step count by construction: no converged limit.
STEP_DEPENDENT = ("cfg-zero-star", "apg")
SOLVER, STEPS = Solver("dpmpp_2m"), 20
LIMIT_SOLVER = Solver("vpode_dpmpp_2m", "reference")
#: Samples, sized for about 40 minutes on 2 shared cores: the distance and coverage setups (prompts
#: x seeds), their limits' steps, and the truth (captions x per caption, trained model only).
SETUPS = {
    "builtin": Setup(frames=9, height=64, width=96, seeds=16),
    "builtin-trained": dataclasses.replace(TRAINED, seeds=4),
}
LIMIT_STEPS = {"builtin": 100, "builtin-trained": 50}
QUICK_SETUPS = {
    "builtin": Setup(frames=5, height=64, width=96, seeds=2),
    "builtin-trained": dataclasses.replace(TRAINED, seeds=1),
}
TRUTH_PER_CAPTION, QUICK_TRUTH_PER_CAPTION = 2, 1


def run_rule(env: Env, rule: str, definition: Definition, solver: Solver, steps: int) -> tuple[Tensor, int, float]:
    """Sample ``env``'s rows with ``rule`` (a ``--guidance`` rule text) on ``definition``'s scales:
    the latents (float64), forwards per sample, seconds."""
    _, guider = parse_guidance(rule) if rule != "cfg" else ("cfg", None)
    config = dataclasses.replace(solver.config(steps, definition), guider=guider)
    model, grid = build_model(env.network, env.x_t, env.cond, config)
    seeds = [env.setup.seed + 10_000 + i for i in range(env.x_t.shape[0])]
    t = time.perf_counter()
    try:
        x = config.spec.fn(model, env.x_t, grid, SeededNoise(seeds), **config.options)
    finally:
        release(model)
    return x.double(), model.forwards, time.perf_counter() - t


def realism(env: Env, x: Tensor) -> list[float]:
    """``|x - mu_nearest| / (sqrt(d) tau)`` per sample, ``[mean, lo, hi]``."""
    flat = x.reshape(x.shape[0], -1).double()
    near = sq_distances(flat, env.mu).min(1).values.clamp_min(0)
    return bootstrap((near / (flat.shape[1] * env.setup.tau**2)).sqrt())


def measure_rule(env: Env, rule: str, scale: float, limit_steps: int, truth: Env | None) -> dict[str, Any]:
    """One row: the figures of the module docstring for ``rule`` at ``scale`` on ``env``."""
    definition = Definition("reference", scale)
    x, fwd, secs = run_rule(env, rule, definition, SOLVER, STEPS)
    row: dict[str, Any] = {"rule": rule, "scale": scale, "steps": STEPS, "forwards": fwd, "seconds": round(secs, 2)}
    row["samples"] = int(x.shape[0])
    if rule not in STEP_DEPENDENT:
        lim = run_rule(env, rule, definition, LIMIT_SOLVER, limit_steps)[0]
        tau = env.setup.tau
        row["distance"] = w2(x, lim, env.prompt_of, tau)
        row["per_sample"] = bootstrap(distances(x, lim, tau))
    cov = coverage(env, x)
    row["coverage"] = {"reached": cov["reached"], "mode_tv": cov["mode_tv"]}
    row["realism"] = realism(env, x)
    if truth is not None:
        tx, _, tsecs = run_rule(truth, rule, definition, SOLVER, STEPS)
        row["truth"] = {"samples": int(tx.shape[0]), "seconds": round(tsecs, 2), **adherence(truth, tx)}
    return row


def _truth_env(per_caption: int) -> Env:
    return Env.build(Setup(model="builtin-trained", frames=9, height=64, width=96, seeds=per_caption, prompts=CAPTIONS))


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _settings(quick: bool) -> dict[str, Any]:
    """What the rows of each model depend on (a stored row is kept where its model's settings match)."""
    setups = QUICK_SETUPS if quick else SETUPS
    per = QUICK_TRUTH_PER_CAPTION if quick else TRUTH_PER_CAPTION
    models = {
        m: {
            "setup": repr(s),
            "samples": s.seeds * len(s.prompts),
            "limit": {"solver": LIMIT_SOLVER.name, "steps": 40 if quick else LIMIT_STEPS[m]},
            "truth_samples": len(CAPTIONS) * per if m == "builtin-trained" else 0,
        }
        for m, s in setups.items()
    }
    return {
        "solver": SOLVER.name,
        "steps": STEPS,
        "definition": "reference (the shipped DynamicCFG scales carried by noise level)",
        "models": models,
        "rules": {r: "u + s (c - u)" if r == "cfg" else repr(parse_guidance(r)[1]) for r in RULES},
        "scales": list(SCALES),
    }


def bench(out: Path, quick: bool = False, say: Callable[[str], None] = print,
          rules: Sequence[str] = RULES, scales: Sequence[float] = SCALES) -> dict[str, Any]:  # fmt: skip
    """Every model x rule x scale, resuming from ``out`` when it holds rows of the same settings."""
    settings = _settings(quick)
    data: dict[str, Any] = {"settings": settings, "rows": {}}
    if out.is_file():
        stored = json.loads(out.read_text())
        old = stored.get("settings", {})
        same = {m for m, v in old.get("models", {}).items() if settings["models"].get(m) == v}
        unchanged = {r for r, v in old.get("rules", {}).items() if settings["rules"].get(r) == v}
        rows = stored.get("rows", {}).items()
        data["rows"] = {k: v for k, v in rows if k.split("/")[0] in same and k.split("/")[1] in unchanged}
    data["machine"] = {"cpus": os.cpu_count(), "threads": torch.get_num_threads(), "python": platform.python_version(),
                       "platform": platform.platform()}  # fmt: skip
    setups = QUICK_SETUPS if quick else SETUPS
    per = QUICK_TRUTH_PER_CAPTION if quick else TRUTH_PER_CAPTION
    for model, setup in setups.items():
        env = Env.build(setup)
        truth = _truth_env(per) if model == "builtin-trained" else None
        limit_steps = settings["models"][model]["limit"]["steps"]
        for scale in scales:
            for rule in rules:
                key = f"{model}/{rule}/{scale:g}"
                if key in data["rows"]:
                    say(f"[{key}] stored")
                    continue
                if _perturbs(rule) and getattr(env.network, "perturbable_blocks", None) is None:
                    continue  # PAG, SLG: a network without blocks has nothing to perturb
                row = measure_rule(env, rule, scale, limit_steps, truth)
                data["rows"][key] = row
                _write(out, data)
                say(f"[{key}] {_line(row)}")
    return data


def _perturbs(rule: str) -> bool:
    guider = parse_guidance(rule)[1] if rule != "cfg" else None
    return guider is not None and guider.perturbation is not None


def _ci(v: Sequence[float]) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def _line(row: dict[str, Any]) -> str:
    parts = [f"{row['forwards']} fwd, {row['seconds']:.1f} s"]
    if "distance" in row:
        parts.append(f"W2 {_ci(row['distance'])}")
    parts.append(f"reached {row['coverage']['reached']:.2f}, realism {_ci(row['realism'])}")
    if "truth" in row:
        t = row["truth"]
        parts.append(", ".join(f"{a} {t[a][0]:.0%}" for a in ("color", "shape", "motion", "background")))
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cogsample.bench.guiders", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the results json (rows are added as they finish; a rerun resumes)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = p.parse_args(argv)
    bench(args.out, args.quick, say=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
