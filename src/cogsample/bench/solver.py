"""Solver error at equal guidance: how far a configuration's samples are from the converged limit
of the same guidance definition.

A *guidance definition* (:class:`Definition`) is the CFG scale as a function of the noise level, so
it means the same at every step count: the reference default's 50 per-step DynamicCFG scales carried
over by noise level (``reference``; the shipped step index ``k = 50 - t`` makes those scales a
near-random sequence between 1 and 7, well defined on the 50-step grid only, so each step of another
grid takes the mean of the reference steps' scales over its own noise interval:
:class:`~cogsample.sampling.guidance.LevelGuidance`), DynamicCFG's intended ramp on the noise level
(``ramp``), or a constant scale (``cfg``).

Its *converged limit* is the same definition solved with :data:`LIMIT_STEPS` steps from the same
initial noise: DPM-Solver++(2M) on the reference's trailing grid (which refines the 50-step anchor)
for the probability-flow ODE (every deterministic sampler tends to it), and the reference's own SDE
DPM-Solver++(2M) for stochastic
samplers, its draws taken from one Brownian path per sample
(:class:`~cogsample.sampling.brownian.BrownianNoise`) so that every step count samples the same
SDE solution. Distances are in units of the data's own spread ``tau`` per latent value
(``|x - y| / (sqrt(d) tau)``):

* ``distance`` (what presets are chosen by): the W2 distance between the configuration's samples
  and the limit's, per prompt, by optimal matching (:func:`w2`): distributional, so a deterministic
  and a stochastic configuration (the reference default is one) are held to the same measure, and
  samples that swap modes among themselves cost nothing where the mode balance is kept;
* ``per_sample``: the mean distance of each sample from the limit from the same noise (for an SDE
  under the Brownian coupling, its strong error); an upper bound of the above.

Both with 95% bootstrap intervals (over matched pairs, over samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..sampling.brownian import BrownianNoise
from ..sampling.config import SamplingConfig, build_model, release
from ..sampling.denoiser import DenoiserConfig
from ..sampling.guidance import CFG, DynamicCFG, Guidance, LevelGuidance
from ..sampling.noise import SeededNoise
from ..sampling.samplers import get_sampler
from ..sampling.scalings import VideoScaling
from ..sampling.schedules import Schedule, SpacedDDPM, ZeroSNRDDPM
from .quality import EXP, SCALE, Env

Tensor = torch.Tensor

__all__ = [
    "ANCHOR_STEPS",
    "LIMIT_STEPS",
    "REFERENCE",
    "Definition",
    "Solver",
    "bootstrap",
    "distances",
    "limit",
    "measure",
    "w2",
]

#: The reference default's step count: the grid the ``reference`` definition's scales live on.
ANCHOR_STEPS = 50
#: Steps of a converged limit (its own distance from the limit at half as many is reported). On the
#: trailing grid both 200 and 100 steps refine the 50-step anchor (4 and 2 steps per anchor step),
#: so no step of a limit straddles a change of the reference's scale.
LIMIT_STEPS = 200


def anchor() -> tuple[int, ...]:
    """The reference's 50 trailing ZeroSNR DDPM timesteps (999, 979, ..., 19)."""
    timesteps = ZeroSNRDDPM(1.0).grid(ANCHOR_STEPS).timesteps
    assert timesteps is not None
    return timesteps


@dataclass(frozen=True)
class Definition:
    """A guidance definition on the noise level: ``kind`` ``"reference"`` (the shipped DynamicCFG
    scales carried by level), ``"ramp"`` (DynamicCFG's intended ramp, ``k`` the anchor step, carried
    by level) or ``"cfg"`` (constant ``scale``)."""

    kind: str = "reference"
    scale: float = SCALE

    def __post_init__(self) -> None:
        if self.kind not in ("reference", "ramp", "cfg"):
            raise ValueError(f"definition kind must be 'reference', 'ramp' or 'cfg', got {self.kind!r}")

    @property
    def name(self) -> str:
        return f"cfg{self.scale:g}" if self.kind == "cfg" else f"{self.kind}{self.scale:g}"

    def guidance(self) -> Guidance:
        if self.kind == "cfg":
            return CFG(self.scale)
        index = "reference" if self.kind == "reference" else "loop"
        return LevelGuidance(DynamicCFG(self.scale, EXP, ANCHOR_STEPS, index), anchor())


@dataclass(frozen=True)
class Solver:
    """A sampler on a grid (``"reference"``: the trailing ZeroSNR grid; else a :class:`SpacedDDPM`
    spacing), with sampler ``options``; :meth:`config` adds a step count and a definition."""

    sampler: str
    grid: str = "logsnr"
    rho: float = 2.0
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        grid = f"power{self.rho:g}" if self.grid == "power" else self.grid
        return "/".join([self.sampler, grid, *(f"{k}={v}" for k, v in self.options)])

    @property
    def stochastic(self) -> bool:
        return get_sampler(self.sampler).stochastic

    def schedule(self) -> Schedule:
        if self.grid == "reference":
            return ZeroSNRDDPM(1.0)
        # sigma-space samplers cannot start at alpha = 0 (infinite sigma): one step below it
        t_max = 998 if get_sampler(self.sampler).space == "sigma" else None
        return SpacedDDPM(ZeroSNRDDPM(1.0), self.grid, self.rho, t_max=t_max)

    def config(self, steps: int, definition: Definition) -> SamplingConfig:
        return SamplingConfig(
            sampler=self.sampler,
            steps=steps,
            schedule=self.schedule(),
            denoiser=DenoiserConfig(VideoScaling(), table=ZeroSNRDDPM(1.0)),
            guidance=definition.guidance(),
            options=dict(self.options),
        )


#: The reference default: CogVideoX's VPSDEDPMPP2M on its trailing grid (at 50 steps).
REFERENCE = Solver("vpsde_dpmpp_2m", grid="reference")
ODE_LIMIT, SDE_LIMIT = Solver("vpode_dpmpp_2m", grid="reference"), REFERENCE


def run(env: Env, solver: Solver, steps: int, definition: Definition) -> tuple[Tensor, int]:
    """Sample every row of ``env``: the final latents (float64) and the forwards per sample."""
    config = solver.config(steps, definition)
    model, grid = build_model(env.network, env.x_t, env.cond, config)
    seeds = [env.setup.seed + 10_000 + i for i in range(env.x_t.shape[0])]
    noise = BrownianNoise(seeds, grid.alphas()) if solver.stochastic else SeededNoise(seeds)
    try:
        x = config.spec.fn(model, env.x_t, grid, noise, **config.options)
    finally:
        release(model)
    if solver.stochastic and noise.draws != grid.num_steps - 1:
        raise ValueError(f"{solver.name} made {noise.draws} draws over {grid.num_steps} steps: not one per step")
    return x.double(), model.forwards


def limit(env: Env, definition: Definition, stochastic: bool, steps: int = LIMIT_STEPS) -> Tensor:
    """The converged limit of ``definition`` from ``env``'s noise (ODE, or the Brownian-coupled SDE)."""
    return run(env, SDE_LIMIT if stochastic else ODE_LIMIT, steps, definition)[0]


def distances(x: Tensor, ref: Tensor, tau: float) -> Tensor:
    """Per-sample ``|x - ref| / (sqrt(d) tau)``, ``(N,)`` float64."""
    diff = (x.double() - ref.double()).reshape(x.shape[0], -1)
    return diff.pow(2).mean(1).sqrt() / tau


def w2(x: Tensor, ref: Tensor, prompt_of: Sequence[int], tau: float) -> list[float]:
    """``[W2, lo, hi]``: ``sqrt(mean |x_i - ref_pi(i)|^2 / (d tau^2))`` under the optimal matching
    ``pi`` of each prompt's samples to the limit's samples of the same prompt (scipy's
    ``linear_sum_assignment``), and the 95% bootstrap interval over the matched pairs."""
    from scipy.optimize import linear_sum_assignment

    a, b = x.double().reshape(x.shape[0], -1), ref.double().reshape(ref.shape[0], -1)
    d = a.shape[1]
    pairs = []
    for p in sorted(set(prompt_of)):
        rows = torch.tensor([i for i, q in enumerate(prompt_of) if q == p])
        cost = torch.cdist(a[rows], b[rows]).pow(2)
        r, c = linear_sum_assignment(cost.numpy())
        pairs.append(cost[torch.as_tensor(r), torch.as_tensor(c)])
    sq = torch.cat(pairs) / (d * tau**2)
    mean, lo, hi = bootstrap(sq)
    return [math.sqrt(mean), math.sqrt(max(lo, 0.0)), math.sqrt(hi)]


def bootstrap(values: Tensor, draws: int = 2000, seed: int = 0) -> list[float]:
    """``[mean, lo, hi]``: the mean of ``values`` and its 95% percentile-bootstrap interval."""
    v = values.double().flatten()
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(v.numel(), (draws, v.numel()), generator=gen)
    means = v[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return [float(v.mean()), lo, hi]


def measure(
    env: Env,
    solvers: Sequence[Solver],
    steps: Sequence[int],
    definition: Definition = Definition(),
    *,
    limit_steps: int = LIMIT_STEPS,
    say: Callable[[str], None] = lambda _m: None,
    extra: Callable[[Env, Tensor], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every solver at every step count, and the reference default at 50, against ``definition``'s
    converged limits on one setup (one seed set): distances per row ``[mean, lo, hi]``, and what
    ``extra(env, samples)`` adds to each row (and to the limits)."""
    more = extra or (lambda _e, _x: {})
    limits = {kind: limit(env, definition, kind, limit_steps) for kind in (False, True)}
    check = {
        ("sde" if kind else "ode"): _scores(env, limit(env, definition, kind, limit_steps // 2), lim)["distance"]
        for kind, lim in limits.items()
    }
    x, fwd = run(env, REFERENCE, ANCHOR_STEPS, definition)
    reference = {"steps": ANCHOR_STEPS, "forwards": fwd, **_scores(env, x, limits[True]), **more(env, x)}
    say(f"[{env.setup.model} seed {env.setup.seed} {definition.name}] reference: {_fmt(reference['distance'])}; "
        f"limit at half the steps: ode {_fmt(check['ode'])}, sde {_fmt(check['sde'])}")  # fmt: skip
    rows = []
    for solver in solvers:
        for n in steps:
            x, fwd = run(env, solver, n, definition)
            row = {"solver": solver.name, "steps": n, "forwards": fwd, **_scores(env, x, limits[solver.stochastic])}
            row.update(more(env, x))
            rows.append(row)
            say(f"  {solver.name:36s} {n:3d} steps {fwd:4d} fwd  W2 {_fmt(row['distance'])}  "
                f"per sample {_fmt(row['per_sample'])}")  # fmt: skip
    return {
        "definition": definition.name,
        "seed": env.setup.seed,
        "samples": env.x_t.shape[0],
        "limit_steps": limit_steps,
        "limit_check": check,
        "limits": {("sde" if kind else "ode"): more(env, lim) for kind, lim in limits.items()},
        "reference": reference,
        "rows": rows,
    }


def _scores(env: Env, x: Tensor, lim: Tensor) -> dict[str, list[float]]:
    tau = env.setup.tau
    return {"distance": w2(x, lim, env.prompt_of, tau), "per_sample": bootstrap(distances(x, lim, tau))}


def _fmt(ci: Sequence[float]) -> str:
    return f"{ci[0]:.3f} [{ci[1]:.3f}, {ci[2]:.3f}]" if all(map(math.isfinite, ci)) else str(ci)
