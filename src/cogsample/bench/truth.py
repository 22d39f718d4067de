"""Quality against the truth, on models whose true distribution is known (the clip family).

For samples ``x`` of a prompt (latents; the family's clip latents ``mu_k``, spread ``tau``):

* **adherence** per attribute (colour, shape, motion, background): the share of samples whose
  nearest clip ``argmin_k |x - mu_k|`` (over every clip) has the attribute the caption names, for
  captions that name all four (each allows one clip). Chance: 1/6 colours (18% with the
  background's colour excluded), 1/5 shapes, 1/6 motions (18%), 1/4 backgrounds.
* **realism**: ``|x - mu_nearest| / (sqrt(d) tau)``, the distance to the nearest true clip in units
  of the data's spread (a true sample scores about 1).
* **coverage**, for prompts that allow several clips: the share of the allowed clips some sample
  lands nearest to, and ``mode_tv``, the total variation between where the samples land and the
  true (uniform) weights.

Each figure is ``[mean, lo, hi]`` with a 95% bootstrap interval over samples
(:func:`~cogsample.bench.solver.bootstrap`).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..models.family import FAMILY
from .harness import sq_distances
from .quality import Env, Setup
from .solver import Definition, Solver, bootstrap, run

Tensor = torch.Tensor

__all__ = ["ATTRIBUTES", "CAPTIONS", "adherence", "coverage", "learning_curve", "score_captions"]

ATTRIBUTES = ("color", "shape", "motion", "background")
#: Every 13th clip's full caption (48 captions, each allowing one clip; every colour, shape, motion
#: and background among them).
CAPTIONS = tuple(c.caption for c in FAMILY[::13])


def adherence(env: Env, x: Tensor) -> dict[str, Any]:
    """Per attribute, the share of samples whose nearest clip has the caption's, and realism."""
    flat = x.reshape(x.shape[0], -1).double()
    dist2 = sq_distances(flat, env.mu)
    nearest = dist2.argmin(1)
    wanted = env.log_w.isfinite().double().argmax(1)  # the one clip each full caption allows
    out: dict[str, Any] = {}
    for attr in ATTRIBUTES:
        hit = torch.tensor(
            [
                getattr(FAMILY[int(n)], attr) == getattr(FAMILY[int(w)], attr)
                for n, w in zip(nearest, wanted, strict=True)
            ],
            dtype=torch.float64,
        )
        out[attr] = bootstrap(hit)
    near = dist2.gather(1, nearest.view(-1, 1)).squeeze(1).clamp_min(0)
    out["realism"] = bootstrap((near / (flat.shape[1] * env.setup.tau**2)).sqrt())
    out["exact_clip"] = bootstrap((nearest == wanted).double())
    return out


def coverage(env: Env, x: Tensor) -> dict[str, Any]:
    """Per prompt of ``env``: the share of its allowed clips reached, and ``mode_tv``; averaged."""
    flat = x.reshape(x.shape[0], -1).double()
    nearest = sq_distances(flat, env.mu).argmin(1)
    reached, tv = [], []
    for p in range(len(env.setup.prompts)):
        rows = [i for i, q in enumerate(env.prompt_of) if q == p]
        w = env.log_w[rows[0]].exp()
        freq = torch.bincount(nearest[rows], minlength=w.numel()).double() / len(rows)
        allowed = w > 0
        reached.append(float((freq[allowed] > 0).double().mean()))
        tv.append(0.5 * float((freq - w).abs().sum()))
    return {"reached": sum(reached) / len(reached), "mode_tv": sum(tv) / len(tv), "per_prompt_reached": reached}


def score_captions(
    model: str,
    solver: Solver,
    steps: int,
    definition: Definition,
    seeds: Sequence[int],
    per_caption: int,
    weights: str | None = None,
) -> dict[str, Any]:
    """Adherence of ``solver`` at ``steps`` under ``definition`` on :data:`CAPTIONS`,
    ``per_caption`` samples each, pooled over the noise ``seeds`` (``weights``: another trained
    transformer folder)."""
    xs, envs = [], []
    for seed in seeds:
        setup = Setup(model=model, frames=9, height=64, width=96, seeds=per_caption, prompts=CAPTIONS, seed=seed,
                      weights=weights)  # fmt: skip
        env = Env.build(setup)
        x, fwd = run(env, solver, steps, definition)
        xs.append(x)
        envs.append(env)
    env = dataclasses.replace(
        envs[0],
        x_t=torch.cat([e.x_t for e in envs]),
        log_w=torch.cat([e.log_w for e in envs]),
        prompt_of=[p for e in envs for p in e.prompt_of],
    )
    return {"samples": int(env.x_t.shape[0]), "forwards": fwd, **adherence(env, torch.cat(xs))}


def learning_curve(
    run: str | Path, seeds: Sequence[int] = (1234,), per_caption: int = 1, steps: int = 50
) -> list[dict[str, Any]]:
    """Adherence at the reference default (``steps``: 50) of each EMA snapshot a ``cogsample train-tiny`` run kept
    (``run/snapshots/ema-STEP.pt``; the transformer's config from ``run/config.json``, else the
    current one): the learning curve in what the model gets right, not only its loss."""
    from diffusers import CogVideoXTransformer3DModel

    from ..models.trained import TRANSFORMER_CONFIG
    from .solver import REFERENCE

    run = Path(run)
    config = json.loads((run / "config.json").read_text()) if (run / "config.json").is_file() else TRANSFORMER_CONFIG
    out = []
    for snap in sorted((run / "snapshots").glob("ema-*.pt")):
        model = CogVideoXTransformer3DModel.from_config(config)
        model.load_state_dict(torch.load(snap, map_location="cpu"))
        with tempfile.TemporaryDirectory(prefix="cogsample-snapshot-") as tmp:
            model.save_pretrained(tmp)
            r = score_captions("builtin-trained", REFERENCE, steps, Definition(), seeds, per_caption, weights=tmp)
        out.append({"step": int(snap.stem.split("-")[1]), **r})
    return out
