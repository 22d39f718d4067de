"""Long videos in temporal context windows, on the trained model, scored against the true long clips.

The trained built-in model learned 9-frame clips (3 latent frames) at 64 x 96 px. Its data family
renders any clip over normalized time, so the true distribution at any length is known: at
``T`` latent frames, ``p(x0 | prompt) = sum_k w_k N(mu_k, tau^2 I)`` with ``mu_k`` the clip latents
at ``T`` (``d`` values each) and ``w`` uniform over the clips the prompt allows. This section
samples text-to-video at :data:`LENGTH` = 12 latent frames (45 frames, 4x the native length) with
the reference default sampler (:func:`~cogsample.bench.quality.reference_default`, DynamicCFG) in
each configuration:

* ``whole``: no windows, the network sees all 12 latent frames at once;
* ``overlap{o}``: windows of the native 3 frames, neighbours sharing ``o`` = 0, 1, 2 of them
  (:class:`~cogsample.sampling.context_windows.ContextWindows`); ``overlap{o}/noise_repeat`` the same with
  FreeNoise's repeated noise (:class:`~cogsample.sampling.context_windows.RepeatedNoise` over the same
  draws: the initial latent and every in-loop draw);

and scores two calibration rows alike: ``data`` (true samples ``mu_k + tau z``, ``k ~ w``) and
``native`` (the model at its own 3 frames, scored against the 3-frame clips: what it does at home).
For samples ``x`` the figures are (``k* = argmin_k |x - mu_k|^2`` over all clips):

* ``on_clip``: the share of samples whose ``k*`` is a clip the prompt allows;
* ``within_clip``: ``mean sqrt(|x - mu_k*|^2 / (d tau^2))``, the RMS distance to the nearest clip in
  units of ``tau`` (about 1 for a true sample; above it: off any clip, below: too little noise);
* ``seam_agreement``: the 12 frames split into native-length segments ``[0, 3), [3, 6), ...``; each
  segment's nearest clip ``k*_s`` is found on that segment's frames alone; the share of adjacent
  segment pairs (over samples and the 3 seams) with ``k*_s = k*_{s+1}``: do neighbouring windows tell
  the same long clip (null where there is one segment);
* ``seam_gap`` (windows with overlap only, else null): at the run's last network call, for each
  pair of neighbouring windows ``j, j+1`` and the frames they share, the raw outputs ``o_j, o_{j+1}``
  (both CFG branches); ``sqrt(sum |o_j - o_{j+1}|^2 / sum (|o_j|^2 + |o_{j+1}|^2) / 2)`` pooled over
  the pairs: their disagreement across the seam relative to the outputs' RMS;
* ``forwards``: network evaluations per sample (:attr:`~cogsample.sampling.guidance.GuidedModel.forwards`,
  one per window), ``seconds``: the sampling wall time.

Everything runs on two seed sets (:data:`SEED_SETS`, independent noise) and, for the windowed and
whole configurations, with a second sampler (``--fast``: a deterministic ODE sampler on 12 steps,
``fast``); the recommendation (:func:`recommend`, :data:`RULE`) is made on all four runs, and
:func:`holds` checks that it and every costlier overlap beat sampling whole on each.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..sampling.config import build_model
from ..sampling.context_windows import ContextWindows, RepeatedNoise, WindowedNetwork
from ..sampling.guidance import Conditioning
from ..sampling.noise import latent_shape
from .harness import cell, initial_noise, nearest_clip, sample_noise, sq_distances, timed_sample
from .quality import TRAINED, Candidate, Env, fast_candidate, prompt_rows, reference_default

Tensor = torch.Tensor

__all__ = [
    "CONFIGS",
    "LENGTH",
    "NATIVE",
    "OVERLAPS",
    "SEED_SETS",
    "figures",
    "holds",
    "lines",
    "long_video",
    "recommend",
    "seam_gap",
]

#: Latent frames of the long video (45 frames) and of the native clip (9 frames, one window).
LENGTH, NATIVE = 12, 3
#: The windows' overlaps (latent frames neighbours share), of the native 3.
OVERLAPS = (0, 1, 2)
#: The base noise seeds of the two independent seed sets.
SEED_SETS = (1234, 4321)
#: The sampled configurations: (name, overlap or None for no windows, FreeNoise).
CONFIGS: tuple[tuple[str, int | None, bool], ...] = (
    ("whole", None, False),
    *((f"overlap{o}{'/noise_repeat' if r else ''}", o, r) for o in OVERLAPS for r in (False, True)),
)
#: The rule of :func:`recommend`, in words.
RULE = (
    "runs: both seed sets of both samplers (the reference default and --fast); a windowed configuration "
    "is acceptable when on every run its on_clip is at least 'whole''s and its within_clip at most "
    "'whole''s; first what the video shows: keep the acceptable configurations whose mean on_clip is "
    "within one binomial standard error sqrt(p (1 - p) / n) of the best (n: all samples); then coherence: "
    "of those, the ones whose mean seam_agreement is within one standard error of their best (n: all seam "
    "pairs); recommend the cheapest of these (fewest forwards, then higher seam_agreement); none when no "
    "configuration is acceptable"
)


def _frames(latent: int) -> int:
    return 4 * (latent - 1) + 1


def _env(trained: Any, family: Any, latent: int, seeds: int, seed: int) -> Env:
    """The trained model's :class:`Env` at ``latent`` frames (any length: the family renders at
    every length; ``Env.build`` holds the model to its native one). Row ``i`` is prompt
    ``i // seeds`` with initial noise seed ``seed + i``, as ``Env.build``."""
    from ..models.family import family_weights

    setup = dataclasses.replace(TRAINED, frames=_frames(latent), seeds=seeds, seed=seed)
    prompt_of = prompt_rows(setup)
    shape = latent_shape(len(prompt_of), setup.frames, setup.height, setup.width)
    x_t = initial_noise(seed, shape)
    prompts = [setup.prompts[p] for p in prompt_of]
    weights = torch.tensor([family_weights(p) for p in prompts], dtype=torch.float64)
    mu = family.means(shape[1], shape[3], shape[4]).mu
    cond = Conditioning(context=trained.encode_prompts(prompts))
    return Env(setup, trained.network, cond, x_t, mu, weights.log(), prompt_of)


def _dist2(flat: Tensor, mu: Tensor) -> Tensor:
    """``(N, K)`` squared distances ``|x_n - mu_k|^2``, rounding below 0 clamped."""
    return sq_distances(flat, mu).clamp_min(0)


def figures(x: Tensor, mu: Tensor, log_w: Tensor, tau: float, segment: int = NATIVE) -> dict[str, float | None]:
    """``on_clip``, ``within_clip`` and ``seam_agreement`` (module docstring) of latents
    ``x (N, T, C, h, w)`` against clips ``mu (K, T*C*h*w)`` with log weights ``log_w (N, K)``
    (``-inf``: not allowed); segments of ``segment`` frames (no seams where ``T <= segment``)."""
    n, length = x.shape[0], x.shape[1]
    flat = x.reshape(n, -1).to(torch.float64)
    d = flat.shape[1]
    _, near2, allowed = nearest_clip(_dist2(flat, mu), log_w)
    within = (near2 / (d * tau**2)).sqrt()
    out: dict[str, float | None] = {"on_clip": float(allowed.double().mean()), "within_clip": float(within.mean())}
    if length <= segment:
        out["seam_agreement"] = None
        return out
    per_frame = flat.view(n, length, -1)
    mu_frames = mu.view(mu.shape[0], length, -1)
    picks = []
    for a in range(0, length, segment):
        b = min(a + segment, length)
        picks.append(_dist2(per_frame[:, a:b].reshape(n, -1), mu_frames[:, a:b].reshape(mu.shape[0], -1)).argmin(1))
    same = torch.stack([p == q for p, q in itertools.pairwise(picks)])
    out["seam_agreement"] = float(same.double().mean())
    return out


def seam_gap(spans: Sequence[tuple[int, int]], outputs: Sequence[Tensor]) -> float | None:
    """Neighbouring windows' relative disagreement on their shared frames (module docstring):
    ``sqrt(sum |o_j - o_{j+1}|^2 / sum (|o_j|^2 + |o_{j+1}|^2) / 2)`` over adjacent pairs; None
    where no neighbours share a frame."""
    num = den = 0.0
    for ((a0, b0), o0), ((a1, b1), o1) in itertools.pairwise(zip(spans, outputs, strict=True)):
        lo, hi = a1, min(b0, b1)
        if hi <= lo:
            continue
        p, q = o0[:, lo - a0 : hi - a0].double(), o1[:, lo - a1 : hi - a1].double()
        num += float((p - q).pow(2).sum())
        den += 0.5 * float(p.pow(2).sum() + q.pow(2).sum())
    return math.sqrt(num / den) if den > 0 else None


def _sample(
    env: Env, steps: int, overlap: int | None, noise_repeat: bool, sampler: Candidate | None = None
) -> dict[str, Any]:
    """One configuration on every row of ``env`` with ``sampler`` (default: the reference default)
    at ``steps``: its figures, forwards, seconds, seam gap."""
    config = (sampler or reference_default()).config(steps)
    x_t = env.x_t
    if overlap is not None:
        windows = ContextWindows(NATIVE, overlap)
        config = dataclasses.replace(config, context=windows)
    model, grid = build_model(env.network, x_t, env.cond, config)
    last: dict[str, Any] = {}
    net = model.denoiser.network
    if isinstance(net, WindowedNetwork):
        net.observe = lambda spans, outputs: last.update(spans=spans, outputs=outputs)
    noise: Any = sample_noise(env.setup.seed, x_t.shape[0])
    if overlap is not None and noise_repeat:
        # the start and every in-loop draw through one frame map: from zero SNR the SDE sampler
        # keeps nothing of the initial noise past its first step, so repeating that alone does nothing
        noise = RepeatedNoise(noise, windows, torch.Generator().manual_seed(env.setup.seed))
        x_t = noise.repeat(x_t)
    x, seconds = timed_sample(config, model, x_t, grid, noise)
    gap = seam_gap(last["spans"], last["outputs"]) if overlap and last else None
    return {
        "overlap": overlap,
        "noise_repeat": noise_repeat,
        "windows": 1 if overlap is None else ContextWindows(NATIVE, overlap).count(x.shape[1]),
        "forwards": model.forwards,
        "seconds": seconds,
        **figures(x, env.mu, env.log_w, env.setup.tau),
        "seam_gap": gap,
    }


def _data(env: Env) -> dict[str, Any]:
    """True samples, one per row: ``mu_k + tau z`` with ``k`` drawn from the row's weights."""
    gen = torch.Generator().manual_seed(env.setup.seed)
    ks = torch.multinomial(env.log_w.exp(), 1, generator=gen).squeeze(1)
    z = torch.randn(len(ks), env.mu.shape[1], generator=gen, dtype=torch.float64)
    x = (env.mu[ks] + env.setup.tau * z).reshape(env.x_t.shape)
    return {
        "overlap": None,
        "noise_repeat": False,
        "windows": None,
        "forwards": None,
        "seconds": 0.0,
        **figures(x, env.mu, env.log_w, env.setup.tau),
        "seam_gap": None,
    }


def _beats_whole(by: Sequence[dict[str, dict[str, Any]]], name: str) -> bool:
    """On every seed set (``by``: rows by configuration name), ``name`` has on_clip no lower and
    within_clip no higher than ``whole``."""
    return all(
        b[name]["on_clip"] >= b["whole"]["on_clip"] and b[name]["within_clip"] <= b["whole"]["within_clip"] for b in by
    )


def _within_noise(score: dict[str, float], names: Sequence[str], n: int) -> tuple[str, float, list[str]]:
    """The best of ``names`` by ``score`` (a share over ``n`` draws), one binomial standard error
    ``sqrt(p (1 - p) / n)`` at it, and the names scoring within that error of it."""
    best = max(names, key=lambda c: score[c])
    p = score[best]
    se = math.sqrt(max(p * (1 - p), 1e-12) / n)
    return best, se, [c for c in names if score[c] >= p - se]


def recommend(runs: Sequence[dict[str, Any]], samples: int, pairs: int) -> dict[str, Any]:
    """The recommendation of :data:`RULE` from runs (``{"seed", "rows": [{"config", ...}]}``: every
    seed set of every sampler; ``samples`` and ``pairs``: samples and seam pairs per run):
    ``config`` (a name or None), the ``rule``, the ``reason``, both bars, each acceptable
    configuration's mean figures, and per overlap whether FreeNoise raised seam agreement (and
    lowered on_clip) on every run."""
    names = [r["config"] for r in runs[0]["rows"] if r["overlap"] is not None]
    by = [{r["config"]: r for r in run["rows"]} for run in runs]

    def mean(key: str) -> dict[str, float]:
        return {n: sum(b[n][key] for b in by) / len(by) for n in names}

    on_clip, agree = mean("on_clip"), mean("seam_agreement")
    ok = [n for n in names if _beats_whole(by, n)]
    plain = [r for r in runs[0]["rows"] if r["overlap"] is not None and not r["noise_repeat"]]

    def every(name: str, key: str, sign: int) -> bool:
        return all(sign * (b[name + "/noise_repeat"][key] - b[name][key]) > 0 for b in by)

    freenoise = {
        str(r["overlap"]): {
            "raises_seam_agreement": every(r["config"], "seam_agreement", 1),
            "lowers_on_clip": every(r["config"], "on_clip", -1),
        }
        for r in plain
    }
    out: dict[str, Any] = {
        "rule": RULE,
        "acceptable": {n: {"on_clip": on_clip[n], "seam_agreement": agree[n]} for n in ok},
        "noise_repeat": freenoise,
    }
    if not ok:
        return {**out, "config": None, "bars": None, "reason": "no windowed configuration beats 'whole' on every run"}
    top, se_clip, faithful = _within_noise(on_clip, ok, samples * len(runs))
    best, se_seam, coherent = _within_noise(agree, faithful, pairs * len(runs))
    choice = min(coherent, key=lambda c: (by[0][c]["forwards"], -agree[c]))
    reason = (
        f"{choice}: beats 'whole' on all {len(runs)} runs; mean on_clip {on_clip[choice]:.3f} (best {top} "
        f"{on_clip[top]:.3f}, standard error {se_clip:.3f}); among those within it, mean seam_agreement "
        f"{agree[choice]:.3f} (best {best} {agree[best]:.3f}, standard error {se_seam:.3f}); the cheapest there, "
        f"{by[0][choice]['forwards']} forwards"
    )
    bars = {
        "on_clip": {"config": top, "value": on_clip[top], "standard_error": se_clip, "within": faithful},
        "seam_agreement": {"config": best, "value": agree[best], "standard_error": se_seam, "within": coherent},
    }
    return {**out, "config": choice, "bars": bars, "reason": reason}


def holds(config: str | None, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Whether the recommended ``config`` and every costlier overlap (the same noise option) beat
    sampling whole (on_clip no lower, within_clip no higher) on every one of ``runs`` (every seed
    set of every sampler): ``{"holds", "checked", "beats_whole": {config: bool}}``."""
    by = [{r["config"]: r for r in run["rows"]} for run in runs]
    beats = {n: _beats_whole(by, n) for n, r in by[0].items() if r["overlap"] is not None}
    if config is None:
        return {"holds": None, "beats_whole": beats}
    overlap, repeat = by[0][config]["overlap"], by[0][config]["noise_repeat"]
    costlier = [n for n, r in by[0].items() if r["overlap"] is not None and r["overlap"] >= overlap
                and r["noise_repeat"] == repeat]  # fmt: skip
    return {"holds": all(beats[n] for n in costlier), "checked": costlier, "beats_whole": beats}


def long_video(
    quick: bool = False,
    log: Callable[[str], None] | None = None,
    *,
    seeds: int | None = None,
    steps: int | None = None,
    seed_sets: Sequence[int] = SEED_SETS,
) -> dict[str, Any]:
    """Every configuration of :data:`CONFIGS` and the ``data`` and ``native`` rows on each seed set
    (``seeds`` samples per prompt: 16, quick 1; ``steps``: 50, quick 4: the tests' size, a fifth of
    the forwards of the earlier quick 2 x 10, which made this section most of ``bench --quick``'s
    time), and :func:`recommend`."""
    from ..models.builtin import MixtureNetwork
    from ..models.family import FAMILY
    from ..models.trained import TrainedModel

    say = log or (lambda _m: None)
    seeds = seeds if seeds is not None else (1 if quick else 16)
    steps = steps if steps is not None else (4 if quick else 50)
    start = time.perf_counter()
    trained = TrainedModel()
    family = MixtureNetwork(FAMILY, TRAINED.tau)
    runs = []
    for seed in seed_sets:
        env = _env(trained, family, LENGTH, seeds, seed)
        native = _env(trained, family, NATIVE, seeds, seed)
        rows = [{"config": "data", **_data(env)}, {"config": "native", **_sample(native, steps, None, False)}]
        for name, overlap, noise_repeat in CONFIGS:
            rows.append({"config": name, **_sample(env, steps, overlap, noise_repeat)})
        for r in rows:
            say(
                f"  [seed {seed}] {r['config']:22s} fwd {cell(r['forwards']):>5s}  on_clip {r['on_clip']:.3f}  "
                f"within_clip {r['within_clip']:.3f}  seam_agreement {cell(r['seam_agreement'], '.3f')}  "
                f"seam_gap {cell(r['seam_gap'], '.3f')}  {r['seconds']:.1f} s"
            )
        runs.append({"seed": seed, "rows": rows})
    # the same comparison with another sampler: --fast (a deterministic ODE sampler, 12 steps)
    fast, fast_steps = fast_candidate()
    fast_steps = min(fast_steps, steps)
    variant = []
    for seed in seed_sets:
        env = _env(trained, family, LENGTH, seeds, seed)
        rows = [{"config": n, **_sample(env, fast_steps, o, r, fast)} for n, o, r in CONFIGS]
        for r in rows:
            say(f"  [--fast, seed {seed}] {r['config']:22s} fwd {r['forwards']:5d}  on_clip {r['on_clip']:.3f}  "
                f"within_clip {r['within_clip']:.3f}  seam_agreement {r['seam_agreement']:.3f}")  # fmt: skip
        variant.append({"seed": seed, "rows": rows})
    samples = seeds * len(TRAINED.prompts)
    rec = recommend([*runs, *variant], samples, samples * (LENGTH // NATIVE - 1))
    rec["holds"] = holds(rec["config"], [*runs, *variant])
    say(f"  recommendation: {rec['config']} ({rec['reason']}); at every costlier overlap: {rec['holds']['holds']}")
    return {
        "setup": {
            "model": TRAINED.model,
            "frames": _frames(LENGTH),
            "latent_frames": LENGTH,
            "native_latent_frames": NATIVE,
            "height": TRAINED.height,
            "width": TRAINED.width,
            "window": NATIVE,
            "overlaps": list(OVERLAPS),
            "prompts": list(TRAINED.prompts),
            "seeds_per_prompt": seeds,
            "samples": seeds * len(TRAINED.prompts),
            "steps": steps,
            "sampler": reference_default().name,
            "tau": TRAINED.tau,
            "seed_sets": list(seed_sets),
        },
        "runs": runs,
        "fast": {"sampler": fast.name, "steps": fast_steps, "runs": variant},
        "recommendation": rec,
        "seconds": time.perf_counter() - start,
    }


def lines(section: dict[str, Any]) -> list[str]:
    """The section as plain-text table lines (one block per seed set, then the recommendation)."""
    su = section["setup"]
    out = [
        f"long video: {su['frames']} frames ({su['latent_frames']} latent) of {su['height']}x{su['width']}, "
        f"windows of {su['window']} latent frames, {su['samples']} samples, {su['sampler']} {su['steps']} steps"
    ]
    head = f"  {'configuration':22s} {'fwd':>5s} {'on_clip':>8s} {'within':>8s} {'seam_agr':>9s} {'seam_gap':>9s}"
    head += f" {'s':>7s}"
    for run in section["runs"]:
        out.append(f" seed set {run['seed']}:")
        out.append(head)
        for r in run["rows"]:
            agree, gap = cell(r["seam_agreement"], ".3f"), cell(r["seam_gap"], ".3f")
            out.append(
                f"  {r['config']:22s} {cell(r['forwards']):>5s} {r['on_clip']:8.3f} {r['within_clip']:8.3f} "
                f"{agree:>9s} {gap:>9s} {r['seconds']:7.1f}"
            )
    fast = section.get("fast")
    if fast:
        out.append(f" with --fast ({fast['sampler']}, {fast['steps']} steps):")
        for run in fast["runs"]:
            cells = [f"{r['config']} {r['on_clip']:.2f}/{r['within_clip']:.2f}" for r in run["rows"]]
            out.append(f"  seed set {run['seed']} (on_clip/within_clip): " + ", ".join(cells))
    rec = section["recommendation"]
    out.append(f" recommendation: {rec['config'] or 'none'} ({rec['reason']})")
    if "holds" in rec:
        out.append(f" it and every costlier overlap beat whole on every run: {rec['holds']['holds']}")
    return out
