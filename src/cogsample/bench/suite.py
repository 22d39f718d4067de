"""``cogsample bench``: every benchmark in one run, a JSON of results, PNG plots and a table.

Sections: ``quality`` (quality per forward on the built-in exact model, see
:mod:`cogsample.bench.quality`), ``options`` (each forward-saving option's speed-up and quality
change on the built-in model, and its speed-up on a tiny random-weight diffusers transformer) and
``speed`` (:mod:`cogsample.bench.speed`: cogsample vs diffusers at equal forwards, sampler
overhead, ``torch.compile``, peak memory). Figures are ratios from one run on one machine; the
machine is recorded with them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..cache import CacheConfig
from ..guidance import GuidanceInterval
from ..noise import SeededNoise
from ..samplers import SAMPLERS
from ..sampling import SamplingConfig, build_model, release
from .quality import QUICK, Candidate, Env, Setup, _metrics, reference_default, run_quality

__all__ = ["SECTIONS", "candidates", "machine", "run_bench", "table"]

SECTIONS = ("quality", "options", "speed")

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


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    import os

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


# ----------------------------------------------------------------------------------------------
# forward-saving options on the built-in model


class _Counting:
    """Counts the network's computed work in forwards per sample (rows / batch)."""

    def __init__(self, network: Any, batch: int):
        self.network, self.batch, self.forwards = network, batch, 0

    def __call__(self, x: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        self.forwards += x.shape[0] // self.batch
        return self.network(x, *args, **kw)


def _run(env: Env, config: SamplingConfig) -> tuple[torch.Tensor, int, float, dict[str, int]]:
    """Final latents, forwards per sample the network computed, seconds, cache counters."""
    counting = _Counting(env.network, env.x_t.shape[0])
    model, grid = build_model(counting, env.x_t, env.cond, config)
    noise = SeededNoise([env.setup.seed + 10_000 + i for i in range(env.x_t.shape[0])])
    start = time.perf_counter()
    try:
        x = config.spec.fn(model, env.x_t, grid, noise, **config.options)
    finally:
        release(model)
    seconds = time.perf_counter() - start
    net = model.denoiser.network
    counts = {k: getattr(net, k) for k in ("calls", "computed", "reused") if hasattr(net, k)}
    return x, counting.forwards, seconds, counts


def _variants(base: SamplingConfig, cache_thresholds: Sequence[float]) -> list[tuple[str, SamplingConfig]]:
    out = [
        ("guidance interval [0.4, 1)", dataclasses.replace(base, guidance=GuidanceInterval(base.guidance, 0.4, 1.0))),
        ("skip uncond where scale == 1", dataclasses.replace(base, skip_unit_cfg=True)),
    ]
    out += [
        (f"output cache, threshold {t:g}", dataclasses.replace(base, cache=CacheConfig(t, "output")))
        for t in cache_thresholds
    ]
    return out


def options_builtin(
    setup: Setup, bases: Sequence[tuple[str, SamplingConfig]], repeats: int, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Each option against its base on the built-in model: forwards and wall-time speed-up,
    change in the quality figures, relative L2 distance of the latents from the base run."""
    env = Env.build(setup)
    rows = []
    for base_name, base in bases:
        x0, f0, _, _ = _run(env, base)
        q0 = _metrics(env, x0)
        for name, cfg in _variants(base, (0.1, 0.3)):
            # base and option alternate, so drift and other load on the machine hit both alike
            base_t, opt_t = [], []
            for _ in range(repeats):
                base_t.append(_run(env, base)[2])
                x, f, t_opt, counts = _run(env, cfg)
                opt_t.append(t_opt)
            t0, t = min(base_t), min(opt_t)
            q = _metrics(env, x)
            rel = float((x.double() - x0.double()).norm() / x0.double().norm())
            row = {
                "base": base_name,
                "option": name,
                "forwards": f,
                "base_forwards": f0,
                "forward_speedup": f0 / f,
                "time_speedup": t0 / t,
                "delta_kl": q["kl"] - q0["kl"],
                "delta_mode_tv": q["mode_tv"] - q0["mode_tv"],
                "latent_rel_l2": rel,
                "max_abs_diff": float((x.double() - x0.double()).abs().max()),
                **({"network_calls_reused": counts["reused"]} if "reused" in counts else {}),
            }
            log(
                f"  {base_name:38s} {name:30s} forwards {f0:3d} -> {f:3d}  time x{row['time_speedup']:.2f}  "
                f"dkl {row['delta_kl']:+.4f}  rel L2 {rel:.2e}"
            )
            rows.append(row)
    return rows


def _fast_base(quality: dict[str, Any] | None, quick: bool) -> tuple[str, SamplingConfig]:
    """The fastest matching configuration with the options under test switched off."""
    best = (quality or {}).get("best")
    if best is not None:
        cfg = SamplingConfig.from_dict(best["config"])
        guidance = cfg.guidance.guidance if isinstance(cfg.guidance, GuidanceInterval) else cfg.guidance
        base = dataclasses.replace(cfg, guidance=guidance, skip_unit_cfg=False)
        return f"{best['sampler']}, log-SNR, {best['steps']} steps", base
    steps = 6 if quick else 15
    return f"vpode_dpmpp_2m, log-SNR, {steps} steps", Candidate("vpode_dpmpp_2m", skip_unit=False).config(steps)


# ----------------------------------------------------------------------------------------------
# the whole run


def _finite(obj: Any, path: str = "") -> list[str]:
    """Paths of non-finite numbers in a JSON-like tree."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _finite(v, f"{path}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in _finite(v, f"{path}[{i}]")]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [path]
    return []


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
    setup = QUICK if quick else Setup()
    steps = (4, 8) if quick else (5, 8, 10, 15, 20, 30, 50)
    quality = None
    if "quality" in sections:
        say(f"quality per forward ({'quick' if quick else 'default'} size)")
        t = time.perf_counter()
        quality = run_quality(candidates(quick), steps, setup, ode_steps=24 if quick else 120, log=say)
        quality["seconds"] = time.perf_counter() - t
        res["quality"] = quality
        best = quality["best"]
        res["forwards_to_match_reference"] = (
            None
            if best is None
            else {
                "forwards": best["forwards"],
                "reference_forwards": quality["reference"]["forwards"],
                "candidate": best["candidate"],
                "steps": best["steps"],
                "config": best["config"],
            }
        )
        from .plots import plot_ode_error, plot_quality

        res["plots"]["quality"] = str(plot_quality(quality, out / "quality_per_forward.png"))
        res["plots"]["ode_error"] = str(plot_ode_error(quality, out / "ode_error.png"))
    if "options" in sections:
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
            _fast_base(quality, quick),
        ]
        res["options"] = {"builtin": options_builtin(setup, bases, 1 if quick else 3, say)}
        try:
            import diffusers  # noqa: F401

            from .options import options_diffusers
        except ImportError as e:  # diffusers missing
            res["options"]["diffusers"] = {"skipped": f"needs diffusers ({e})"}
        else:
            say("forward-saving options on a tiny diffusers transformer")
            res["options"]["diffusers"] = options_diffusers(quick=quick)
        res["options"]["seconds"] = time.perf_counter() - t
    if "speed" in sections:
        say("speed and memory against diffusers")
        t = time.perf_counter()
        try:
            from .speed import run_speed
        except ImportError as e:
            res["speed"] = {"skipped": f"needs diffusers ({e})"}
        else:
            res["speed"] = run_speed(quick=quick)
        res["speed"]["seconds"] = time.perf_counter() - t
    res["seconds"] = time.perf_counter() - start
    bad = _finite(res)
    if bad:
        raise RuntimeError(f"non-finite figures in the bench results: {bad[:5]}")
    path = out / "bench.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str) + "\n")
    tmp.replace(path)
    res["json"] = str(path)
    return res


def _brief(d: Any, depth: int = 0) -> Any:
    """A dict's numbers rounded, for the table."""
    if isinstance(d, dict):
        return {k: _brief(v, depth + 1) for k, v in d.items() if depth < 2}
    if isinstance(d, float):
        return round(d, 4)
    return d


def table(res: dict[str, Any]) -> str:
    """The headline figures as a plain-text table."""
    lines = []
    m = res["machine"]
    lines.append(
        f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}"
        + (f", {m['cuda_device']}" if "cuda_device" in m else "")
    )
    match = res.get("forwards_to_match_reference")
    if "quality" in res:
        q = res["quality"]
        ref = q["reference"]
        lines.append(
            f"reference default (vpsde_dpmpp_2m, 50 steps, DynamicCFG 6): {ref['forwards']} forwards, "
            f"kl {ref['kl']:.4f}, mode_tv {ref['mode_tv']:.3f}, on_prompt {ref['on_prompt']:.2f}"
        )
        if match:
            r = q["best"]
            lines.append(
                f"forwards_to_match_reference: {match['forwards']} ({match['candidate']}, {match['steps']} steps; "
                f"kl {r['kl']:.4f}, mode_tv {r['mode_tv']:.3f}, on_prompt {r['on_prompt']:.2f})"
            )
        else:
            lines.append("forwards_to_match_reference: no configuration matched")
        lines.append("")
        lines.append(f"{'configuration':50s} {'fewest fwd matching':>20s} {'kl @ ~30 fwd':>14s}")
        names = sorted({r["candidate"] for r in q["results"]})
        for name in names:
            rs = [r for r in q["results"] if r["candidate"] == name]
            ok = [r["forwards"] for r in rs if r["matches"]]
            near30 = min(rs, key=lambda r: abs(r["forwards"] - 30))
            lines.append(f"{name:50s} {min(ok) if ok else '-':>20} {near30['kl']:>14.4f}")
    if "options" in res:
        lines.append("")
        head = (
            f"{'option (built-in model)':30s} {'base':38s} {'fwd':>9s} {'time x':>7s} {'d kl':>8s} "
            f"{'d tv':>7s} {'rel L2':>9s}"
        )
        lines.append(head)
        for r in res["options"]["builtin"]:
            lines.append(
                f"{r['option']:30s} {r['base']:38s} {r['base_forwards']:>4d}->{r['forwards']:<4d} "
                f"{r['time_speedup']:>7.2f} {r['delta_kl']:>+8.4f} {r['delta_mode_tv']:>+7.3f} "
                f"{r['latent_rel_l2']:>9.2e}"
            )
        dif = res["options"].get("diffusers", {})
        for r in dif.get("rows", []):
            lines.append(
                f"{r['option']:30s} {r['base'] + ', tiny diffusers':38s} {r['base_forwards']:>4d}->{r['forwards']:<4d} "
                f"{r['time_speedup']:>7.2f}"
            )
    speed = res.get("speed", {})
    if "compare_diffusers" in speed:
        c = speed["compare_diffusers"]
        ratio = c["ratio_cogsample_over_diffusers"]
        lines.append("")
        lines.append(
            f"cogsample / diffusers wall time, equal forwards ({c['setup']['steps']} steps, tiny transformer, "
            f"bit-identical latents: {c['latents_identical']}): loop {ratio['loop']:.3f}, "
            f"whole video {ratio['video']:.3f}"
        )
    over = speed.get("sampler_overhead", {})
    if "tiny" in over:
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
    lines.append(f"total {res['seconds']:.0f} s; results in {res.get('json', '?')}")
    return "\n".join(lines)
