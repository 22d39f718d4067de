"""``cogsample bench --sections quantize``: what ``--quantize`` costs and saves, per mode.

Two transformers, each mode in a fresh interpreter (so that its peak memory is its own):

* **trained**: the trained built-in model (``builtin-trained``, 9 frames of 64 x 96), 12 of the
  full captions of :data:`~cogsample.bench.truth.CAPTIONS` sampled together at the reference
  default (:data:`TRAINED_STEPS` steps, DynamicCFG) from the same noise in every mode: the latents'
  distance from the unquantized run (relative RMS, max abs) and the truth's attribute accuracy (the
  share of samples whose nearest family clip has the caption's colour, shape, motion, background);
* **2B**: a random-weight CogVideoX-2B-sized transformer (:data:`~cogsample.bench.speed.COGVIDEOX_2B_TRANSFORMER`,
  1694 M parameters, :func:`~cogsample.bench.speed._random_transformer`, seed 0: the same weights
  in every mode) on a tiny video (:data:`VIDEO_2B`) and a short prompt (:data:`TEXT_2B` tokens, the
  config's ``max_text_seq_length`` set to it: same parameters, fewer tokens) so that a CPU forward
  takes seconds: one forward's output distance from the unquantized one and its time.

Per mode: the transformer's weight bytes (quantized weights by what they hold: int8 data and
scales), the process's resident memory after loading and quantizing and its peak during sampling
(Linux ``VmRSS`` / ``VmHWM`` of the fresh process, above its RSS once torch, diffusers and torchao
are imported; ``VmHWM`` restarted after loading), and seconds per step (trained) or per forward (2B).
Modes that need hardware this machine lacks (fp8: a CUDA GPU of compute capability >= 8.9) are
recorded as not measured, with the reason.

Run it alone with ``python -m cogsample.bench.quantize OUT.json``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .harness import machine, quiet
from .truth import CAPTIONS

__all__ = ["RUNS_2B", "RUNS_TRAINED", "quantize_section", "table_rows"]

#: The trained model's sampling steps (the reference default: vpsde_dpmpp_2m with DynamicCFG).
TRAINED_STEPS = 20
#: Its captions: every 4th of :data:`~cogsample.bench.truth.CAPTIONS` (12 full captions; every
#: colour, shape, motion and background among them), one sample each.
TRAINED_CAPTIONS = 4
#: The 2B-sized transformer's video: 9 frames of 48 x 80 px (latents 3 x 6 x 10: 45 video tokens).
VIDEO_2B = {"frames": 9, "height": 48, "width": 80}
#: The 2B-sized transformer's text tokens (the released 226 would make a bfloat16 CPU forward minutes).
TEXT_2B = 16


@dataclasses.dataclass(frozen=True)
class Run:
    """One measured configuration: ``model`` (``trained`` or ``2b``), the weights' ``dtype`` and the
    ``--quantize`` ``mode``; ``baseline``: the unquantized run it is compared with."""

    model: str
    dtype: str
    mode: str

    @property
    def key(self) -> str:
        return f"{self.model}/{self.dtype}/{self.mode}"

    @property
    def baseline(self) -> str:
        return f"{self.model}/{self.dtype}/none"


#: bfloat16 first (the baseline asked for: what a GPU runs); float32 is cogsample's CPU default.
RUNS_TRAINED = (
    *(Run("trained", "bfloat16", m) for m in ("none", "int8", "int8-dynamic", "fp8")),
    *(Run("trained", "float32", m) for m in ("none", "int8")),
)
RUNS_2B = (
    *(Run("2b", "bfloat16", m) for m in ("none", "int8", "int8-dynamic", "fp8")),
    *(Run("2b", "float32", m) for m in ("none", "int8")),
)


# ----------------------------------------------------------------------------------------------
# the child: one run in a fresh interpreter


def _rss() -> dict[str, float]:
    from .speed import _status_mib

    return {"rss": _status_mib("VmRSS") or 0.0, "hwm": _status_mib("VmHWM") or 0.0}


def _imports() -> None:
    """What every run imports before its memory baseline: torch, diffusers' transformer, torchao."""
    from diffusers import CogVideoXTransformer3DModel  # noqa: F401

    from ..models.quantize import import_torchao, quiet_torchao

    quiet_torchao()
    import_torchao()


def _trained_child(run: Run, out: Path) -> dict[str, Any]:
    from .. import models
    from ..models.quantize import weight_bytes
    from ..models.trained import FRAMES, HEIGHT, WIDTH
    from ..sampling.config import build_model
    from ..sampling.guidance import Conditioning
    from ..sampling.noise import SeededNoise, latent_shape
    from .quality import reference_default
    from .speed import _reset_peak_rss

    base = _rss()
    model = models.load("builtin-trained", device=torch.device("cpu"), dtype=getattr(torch, run.dtype),
                        quantize=run.mode)  # fmt: skip
    loaded = _rss()
    _reset_peak_rss()
    prompts = list(CAPTIONS[::TRAINED_CAPTIONS])
    shape = latent_shape(len(prompts), FRAMES, HEIGHT, WIDTH)
    x = SeededNoise(list(range(len(prompts)))).initial(shape)
    cfg = reference_default().config(TRAINED_STEPS)
    cond = Conditioning(context=model.encode_prompts(prompts))
    t0 = time.perf_counter()
    with torch.inference_mode():
        m, grid = build_model(model.network, x, cond, cfg)
        latents = cfg.spec.fn(m, x, grid, SeededNoise([100 + i for i in range(len(prompts))]), **cfg.options)
    seconds = time.perf_counter() - t0
    torch.save(latents.float(), out)
    return {
        "weight_bytes": weight_bytes(model.transformer),
        "resident_mib": loaded["rss"] - base["rss"],
        "peak_sampling_mib": _rss()["hwm"] - base["rss"],
        "s_per_step": seconds / TRAINED_STEPS,
        "batch": len(prompts),
        "steps": TRAINED_STEPS,
        "accuracy": _accuracy(latents.float()),
    }


def _accuracy(latents: torch.Tensor) -> dict[str, float]:
    """Per attribute, the share of the captions' samples whose nearest family clip has the caption's."""
    from ..models.builtin import MixtureNetwork
    from ..models.family import FAMILY
    from .truth import ATTRIBUTES

    mu = MixtureNetwork(FAMILY).means(latents.shape[1], latents.shape[3], latents.shape[4]).mu
    nearest = torch.cdist(latents.reshape(latents.shape[0], -1).double(), mu).argmin(1).tolist()
    wanted = [next(c for c in FAMILY if c.caption == caption) for caption in CAPTIONS[::TRAINED_CAPTIONS]]
    return {
        a: sum(getattr(FAMILY[n], a) == getattr(w, a) for n, w in zip(nearest, wanted, strict=True)) / len(wanted)
        for a in ATTRIBUTES
    }


def _2b_child(run: Run, out: Path) -> dict[str, Any]:
    from ..models.quantize import quantize_transformer, weight_bytes
    from ..sampling.noise import latent_shape
    from .speed import COGVIDEOX_2B_TRANSFORMER, _random_transformer, _reset_peak_rss

    base = _rss()
    config = {**COGVIDEOX_2B_TRANSFORMER, "max_text_seq_length": TEXT_2B}
    dtype = getattr(torch, run.dtype)
    transformer = _random_transformer(config, torch.device("cpu"), dtype)
    built = _rss()
    t0 = time.perf_counter()
    quantize_transformer(transformer, run.mode)
    quantize_s = time.perf_counter() - t0
    loaded = _rss()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(latent_shape(1, **VIDEO_2B), generator=g).to(dtype)
    text = torch.randn(1, TEXT_2B, config["text_embed_dim"], generator=g).to(dtype)
    _reset_peak_rss()
    t0 = time.perf_counter()
    with torch.inference_mode():
        y = transformer(hidden_states=x, encoder_hidden_states=text, timestep=torch.tensor([500]), return_dict=False)[0]
    seconds = time.perf_counter() - t0
    torch.save(y.float(), out)
    return {
        "weight_bytes": weight_bytes(transformer),
        "built_mib": built["rss"] - base["rss"],
        "resident_mib": loaded["rss"] - base["rss"],
        "peak_forward_mib": _rss()["hwm"] - base["rss"],
        "quantize_s": quantize_s,
        "s_per_forward": seconds,
        "tokens": TEXT_2B + x.shape[1] * (x.shape[3] // 2) * (x.shape[4] // 2),
    }


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    run = Run(**spec["run"])
    torch.set_num_threads(spec["threads"])
    with quiet():
        _imports()
        fn = _trained_child if run.model == "trained" else _2b_child
        return fn(run, Path(spec["latents"]))


# ----------------------------------------------------------------------------------------------
# the parent


def _unsupported(run: Run) -> str | None:
    """Why ``run`` cannot be measured here (None where it can)."""
    from ..models.quantize import check_quantize

    try:
        check_quantize(run.mode, "cuda" if torch.cuda.is_available() else "cpu")
    except ValueError as e:
        return f"not measured: {e}"
    return None


def _measure(run: Run, folder: Path, threads: int, timeout_s: float) -> dict[str, Any]:
    why = _unsupported(run)
    if why is not None:
        return {"skipped": why}
    spec = {
        "run": dataclasses.asdict(run),
        "threads": threads,
        "latents": str(folder / f"{run.key.replace('/', '-')}.pt"),
    }
    cmd = [sys.executable, "-m", "cogsample.bench.quantize", "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout)[-800:]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = time.perf_counter() - t0
    result["latents"] = spec["latents"]
    return result


def _distance(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    d = a - b
    return {"rel_rms": float(d.pow(2).mean().sqrt() / b.pow(2).mean().sqrt()), "max_abs": float(d.abs().max())}


def _distances(results: dict[str, dict[str, Any]], runs: tuple[Run, ...]) -> None:
    """Each run's distance from its dtype's unquantized run and from the float32 unquantized run
    (``runs`` in :func:`_ordered` order: the references come first)."""
    kept: dict[str, torch.Tensor] = {}
    for run in runs:
        r = results[run.key]
        if "latents" not in r:
            continue
        mine = torch.load(r.pop("latents"), weights_only=True)
        for name, ref in (("vs_unquantized", run.baseline), ("vs_float32", f"{run.model}/float32/none")):
            if ref in kept and ref != run.key:
                r[name] = _distance(mine, kept[ref])
        if run.mode == "none":
            kept[run.key] = mine


def _ordered(runs: tuple[Run, ...]) -> tuple[Run, ...]:
    """The float32 and unquantized runs first: every distance has its reference when computed."""
    return tuple(sorted(runs, key=lambda r: (r.dtype != "float32" or r.mode != "none", r.mode != "none")))


def quantize_section(
    *, quick: bool = False, threads: int | None = None, say: Callable[[str], None] = lambda _m: None,
    timeout_s: float = 1200.0,
) -> dict[str, Any]:  # fmt: skip
    """Every run of :data:`RUNS_TRAINED` and (unless ``quick``) :data:`RUNS_2B`, one fresh process
    each, with the distances between their latents; the figures as :mod:`cogsample.bench.quantize` says."""
    runs = _ordered(RUNS_TRAINED + (() if quick else RUNS_2B))
    threads = threads or torch.get_num_threads()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in runs:
            say(f"quantize: {run.key}")
            results[run.key] = _measure(run, Path(tmp), threads, timeout_s)
            say(f"  {json.dumps({k: v for k, v in results[run.key].items() if k != 'latents'})[:300]}")
        _distances(results, runs)
    for run in runs:
        r, base = results[run.key], results.get(run.baseline, {})
        for key in ("s_per_step", "s_per_forward"):
            if key in r and key in base:
                r[f"{key}_ratio"] = r[key] / base[key]
    return {
        "machine": machine(),
        "threads": threads,
        "trained": {
            "steps": TRAINED_STEPS,
            "captions": len(CAPTIONS[::TRAINED_CAPTIONS]),
            "video": {"frames": 9, "height": 64, "width": 96},
        },
        "2b": {"video": dict(VIDEO_2B), "text_tokens": TEXT_2B},
        "runs": {run.key: results[run.key] for run in runs},
    }


def table_rows(section: dict[str, Any]) -> list[str]:
    """Markdown rows: model, dtype, mode, weights MiB, resident / peak MiB, time (x baseline), distances."""
    rows = [
        "| model | weights | --quantize | transformer weights | resident / peak RSS above imports | time "
        "| vs unquantized, rel. RMS / max abs | vs float32 unquantized, rel. RMS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in section["runs"].items():
        model, dtype, mode = key.split("/")
        name = "builtin-trained" if model == "trained" else "2B-sized"
        if "skipped" in r or "error" in r:
            rows.append(f"| {name} | {dtype} | {mode} | {r.get('skipped') or 'failed: ' + r['error'][-120:]} | | | | |")
            continue
        peak = r.get("peak_sampling_mib", r.get("peak_forward_mib"))
        if "s_per_step" in r:
            t = f"{r['s_per_step']:.2f} s/step (x{r.get('s_per_step_ratio', 1):.2f})"
        else:
            t = f"{r['s_per_forward']:.1f} s/forward (x{r.get('s_per_forward_ratio', 1):.2f})"
        d, f = r.get("vs_unquantized"), r.get("vs_float32")
        dist = "-" if mode == "none" else f"{d['rel_rms']:.4f} / {d['max_abs']:.3f}" if d else "?"
        f32 = "-" if f is None or (dtype == "float32" and mode == "none") else f"{f['rel_rms']:.4f}"
        rows.append(
            f"| {name} | {dtype} | {mode} | {r['weight_bytes'] / 2**20:.1f} MiB "
            f"| {r['resident_mib']:.0f} / {peak:.0f} MiB | {t} | {dist} | {f32} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m cogsample.bench.quantize")
    ap.add_argument("out", nargs="?", help="where the section's JSON goes")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="the trained model only")
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))), flush=True)
        return
    section = quantize_section(quick=args.quick, threads=args.threads, say=lambda m: print(m, flush=True))
    if args.out:
        Path(args.out).write_text(json.dumps(section, indent=1) + "\n")
    print("\n".join(table_rows(section)))


if __name__ == "__main__":
    main()
