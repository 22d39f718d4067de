"""Replay golden vectors recorded from the SAT reference and compare every step bit for bit.

A case directory holds ``index.json`` (``{"cases": [...]}``), and per case ``NAME.json`` (the
reference's sampler / denoiser config blocks, the toy network's constants, dtype) and the tensors
it names (initial noise, every in-loop draw, every step). The replay builds the sampler, denoiser
and guider from the config blocks through :mod:`cogsample.satconfig`, the toy network from its
``network`` block and the noise from the recorded draws; nothing depends on a case's name.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .guidance import Conditioning
from .noise import ReplayNoise
from .sampling import build_model
from .satconfig import from_sat

Tensor = torch.Tensor

__all__ = ["CaseResult", "ToyNetwork", "main", "replay_case", "replay_dir"]


@dataclass(frozen=True)
class ToyNetwork:
    """The goldens' closed-form network, evaluated in the input's dtype:
    ``tanh(X[:, :, :16]) (1 + a_t t) + a_ctx mean_l(ctx) + a_img mean_k(X[:, :, 16+k]) + a_ofs ofs``."""

    a_t: float
    a_ctx: float
    a_img: float
    a_ofs: float
    calls: list[Tensor] = field(default_factory=list, compare=False)

    @classmethod
    def from_block(cls, block: dict[str, Any]) -> ToyNetwork:
        return cls(float(block["a_t"]), float(block["a_ctx"]), float(block["a_img"]), float(block["a_ofs"]))

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        self.calls.append(t.detach().clone())
        n = x.shape[0]
        out = torch.tanh(x[:, :, :16]) * (1 + self.a_t * t.to(x.dtype)).view(n, 1, 1, 1, 1)
        out = out + self.a_ctx * context.mean(dim=1).view(n, 1, -1, 1, 1)
        if x.shape[2] > 16:
            out = out + self.a_img * x[:, :, 16:].mean(dim=2, keepdim=True)
        if ofs is not None:
            out = out + self.a_ofs * ofs
        return out


@dataclass
class CaseResult:
    name: str
    passed: bool
    max_abs_error: float | None
    detail: str


def _max_abs(a: Tensor, b: Tensor, what: str) -> float:
    if tuple(a.shape) != tuple(b.shape):
        raise AssertionError(f"{what}: shape {tuple(a.shape)} != recorded {tuple(b.shape)}")
    if a.numel() == 0:
        return 0.0
    a64, b64 = a.detach().to(torch.float64), b.to(torch.float64)
    same = (a64 == b64) | (torch.isnan(a64) & torch.isnan(b64))
    if bool(same.all()):
        return 0.0
    diff = (a64 - b64).abs()
    return float(torch.where(same, torch.zeros_like(diff), diff).nan_to_num(float("inf")).max())


def _draw_sequence(t: dict[str, Tensor]) -> list[Tensor]:
    """The single sequence of in-loop draws: sampler draws and sdedit prefix draws interleaved."""
    draws = list(t["noise_draws"]) if "noise_draws" in t else []
    if "prefix_noise_draws" not in t:
        return draws
    calls = [(int(c), d) for c, d in zip(t["noise_draw_call"], draws, strict=True)]
    calls += [(int(c), d) for c, d in zip(t["prefix_draw_call"], t["prefix_noise_draws"], strict=True)]
    return [d for _, d in sorted(calls, key=lambda cd: cd[0])]


def replay_case(directory: str | Path, name: str) -> CaseResult:
    """Replay one case; never raises (a case that cannot be built fails with the reason)."""
    try:
        return _replay(Path(directory), name)
    except Exception as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        place = f"{Path(where.filename).name}:{where.lineno}"
        return CaseResult(name, False, None, f"error: {type(e).__name__}: {e} ({place})")


def _replay(directory: Path, name: str) -> CaseResult:
    from safetensors.torch import load_file

    meta = json.loads((directory / f"{name}.json").read_text())
    t = load_file(str(directory / meta.get("tensor_file", f"{name}.safetensors")))
    sampler_block = {k: meta["sampler"][k] for k in ("class", "target", "params") if k in meta["sampler"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parameters the reference accepts and ignores are expected here
        config = from_sat(sampler_block, meta.get("denoiser"))
    if "lms_coeffs" in t:
        # the reference integrates these numerically; its stored values make the replay exact
        order = int(config.options.get("order", 4))
        options = dict(config.options)
        options["coefficients"] = [row[:order].tolist() for row in t["lms_coeffs"].to(torch.float64)]
        config = dataclasses.replace(config, options=options)

    network = ToyNetwork.from_block(meta["network"])
    x = t["x_init"]
    if "prefix" in t:
        p = t["prefix"].shape[1]
        x = torch.cat([t["prefix"].to(x.dtype), x[:, p:]], dim=1)
    cond = Conditioning(
        context=t["cond_crossattn"],
        uncond_context=t.get("uncond_crossattn"),
        image_latents=t.get("concat"),
        ofs=t.get("ofs"),
    )
    model, grid = build_model(network, x, cond, config)

    denoised_calls: list[Tensor] = []
    scales: list[float | None] = []

    def recording_model(x_: Tensor, level) -> Tensor:
        out = model(x_, level)
        denoised_calls.append(out)
        scales.append(model.step_scales[level.step])
        return out

    steps: list[Tensor] = []
    noise = ReplayNoise(_draw_sequence(t))
    extra = {"image": t["image"]} if "image" in config.spec.needs else {}
    out = config.spec.fn(
        recording_model, x, grid, noise, callback=lambda i, xi, d: steps.append(xi), **config.options, **extra
    )

    errors = {
        "output": _max_abs(out, t["output"], "output"),
        "x_steps": _max_abs(torch.stack(steps), t["x_steps"], "x_steps"),
    }
    if out.dtype != t["output"].dtype:
        raise AssertionError(f"output dtype {out.dtype} != recorded {t['output'].dtype}")
    if "denoised_calls" in t:
        errors["denoised_calls"] = _max_abs(torch.stack(denoised_calls), t["denoised_calls"], "denoised_calls")
    if "net_t" in t:
        got_t = torch.stack([c.to(t["net_t"].dtype) for c in network.calls])
        errors["net_t"] = _max_abs(got_t, t["net_t"], "net_t")
    if "guidance_scale_calls" in t:
        want = t["guidance_scale_calls"].tolist()
        if want != scales:
            raise AssertionError(f"guidance scales {scales} != recorded {want}")
    if not noise.exhausted:
        raise AssertionError(f"used {noise.position} of {len(noise.draws)} recorded draws")
    worst = max(errors.values())
    detail = ", ".join(f"{k} {v:.3g}" for k, v in errors.items())
    detail += f"; {len(steps)} steps, {len(denoised_calls)} calls, {noise.position} draws"
    return CaseResult(name, worst == 0.0, worst, detail)


def replay_dir(directory: str | Path) -> list[CaseResult]:
    """Replay every case listed in ``directory/index.json``."""
    directory = Path(directory)
    try:
        index = json.loads((directory / "index.json").read_text())
        names = list(index["cases"])
    except Exception as e:
        return [CaseResult(str(directory), False, None, f"error: cannot read index.json: {e}")]
    return [replay_case(directory, n) for n in names]


def main(directories: Sequence[str | Path], out=None) -> int:
    """Print one line per case and ``N passed, N failed``; 0 only if every case matched exactly."""
    import sys

    out = out or sys.stdout
    results = [r for d in directories for r in replay_dir(d)]
    for r in results:
        err = "-" if r.max_abs_error is None else f"{r.max_abs_error:.3g}"
        print(f"{'PASS' if r.passed else 'FAIL'} {r.name}: max abs error {err} ({r.detail})", file=out)
    passed = sum(r.passed for r in results)
    print(f"{passed} passed, {len(results) - passed} failed", file=out)
    return 0 if results and passed == len(results) else 1
