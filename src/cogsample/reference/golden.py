"""Replay golden vectors recorded from the SAT reference and compare every step bit for bit.

A case directory holds ``index.json`` (``{"cases": [...]}``), and per case ``NAME.json`` (the
reference's sampler / denoiser config blocks, the toy network's constants, dtype) and the tensors
it names (initial noise, every in-loop draw, every step). The replay builds the sampler, denoiser
and guider from the config blocks through :mod:`cogsample.reference.satconfig`, the toy network from its
``network`` block and the noise from the recorded draws; nothing depends on a case's name.

Bit-exactness holds only in the recording's math mode (:mod:`cogsample.reference.mathmode`): :func:`main`
checks the recording's probe first. Where the probe differs, a case whose results are not
identical is compared within :data:`~cogsample.reference.mathmode.REPLAY_RTOL` and counted as
``unverified``, never as passed.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ..sampling.config import build_model
from ..sampling.guidance import Conditioning
from ..sampling.noise import ReplayNoise
from . import mathmode, recordings
from .satconfig import from_sat

Tensor = torch.Tensor

__all__ = [
    "EXIT_FAILED",
    "EXIT_PASSED",
    "EXIT_UNVERIFIED",
    "CaseResult",
    "ToyNetwork",
    "check_math_mode",
    "choose_shipped",
    "main",
    "replay_case",
    "replay_dir",
]


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


Status = Literal["pass", "fail", "unverified"]


@dataclass
class CaseResult:
    """``pass``: every compared tensor identical to the recording; ``unverified``: not identical but
    within the replay tolerance, in a process whose math mode differs from the recording's (so
    bit-exactness could not be checked); ``fail``: anything else."""

    name: str
    status: Status
    max_abs_error: float | None
    detail: str

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def _draw_sequence(t: dict[str, Tensor]) -> list[Tensor]:
    """The single sequence of in-loop draws: sampler draws and sdedit prefix draws interleaved."""
    draws = list(t["noise_draws"]) if "noise_draws" in t else []
    if "prefix_noise_draws" not in t:
        return draws
    calls = [(int(c), d) for c, d in zip(t["noise_draw_call"], draws, strict=True)]
    calls += [(int(c), d) for c, d in zip(t["prefix_draw_call"], t["prefix_noise_draws"], strict=True)]
    return [d for _, d in sorted(calls, key=lambda cd: cd[0])]


def replay_case(directory: str | Path, name: str, *, exact_math: bool = True) -> CaseResult:
    """Replay one case; never raises (a case that cannot be built fails with the reason).

    ``exact_math``: this process runs in the recording's math mode (its probe matched), so any
    difference fails; False: a difference within the replay tolerance makes the case
    ``unverified``. Structure (shapes, dtypes, guidance scales, the number of draws) is always
    compared exactly."""
    try:
        return _replay(Path(directory), name, exact_math)
    except Exception as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        place = f"{Path(where.filename).name}:{where.lineno}"
        return CaseResult(name, "fail", None, f"error: {type(e).__name__}: {e} ({place})")


def _replay(directory: Path, name: str, exact_math: bool) -> CaseResult:
    meta = recordings.load_meta(directory, name)
    t = recordings.load_tensors(directory, name)
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

    compared = {
        "output": recordings.compare(out, t["output"], "output"),
        "x_steps": recordings.compare(torch.stack(steps), t["x_steps"], "x_steps"),
    }
    if out.dtype != t["output"].dtype:
        raise AssertionError(f"output dtype {out.dtype} != recorded {t['output'].dtype}")
    if "denoised_calls" in t:
        got = torch.stack(denoised_calls)
        compared["denoised_calls"] = recordings.compare(got, t["denoised_calls"], "denoised_calls")
    if "net_t" in t:
        got_t = torch.stack([c.to(t["net_t"].dtype) for c in network.calls])
        compared["net_t"] = recordings.compare(got_t, t["net_t"], "net_t")
    if "guidance_scale_calls" in t:
        want = t["guidance_scale_calls"].tolist()
        if want != scales:
            raise AssertionError(f"guidance scales {scales} != recorded {want}")
    if not noise.exhausted:
        raise AssertionError(f"used {noise.position} of {len(noise.draws)} recorded draws")
    return _verdict(
        name, compared, exact_math, f"{len(steps)} steps, {len(denoised_calls)} calls, {noise.position} draws"
    )


def _verdict(name: str, compared: dict[str, recordings.Comparison], exact_math: bool, counts: str) -> CaseResult:
    """pass: every tensor exact; unverified: not, but within tolerance where the math mode differs."""
    worst = max(c.error for c in compared.values())
    detail = ", ".join(f"{k} {c.error:.3g}" + (f" ({c.note})" if c.note else "") for k, c in compared.items())
    detail += f"; {counts}"
    if all(c.exact for c in compared.values()):
        return CaseResult(name, "pass", 0.0, detail)
    if not exact_math and all(c.within for c in compared.values()):
        return CaseResult(name, "unverified", worst, detail + f"; within {mathmode.REPLAY_RTOL:g} x max(1, |recorded|)")
    return CaseResult(name, "fail", worst, detail)


def check_math_mode(directory: str | Path) -> mathmode.ProbeResult | None:
    """The recording's probe recomputed here; None for a recording that states no math mode."""
    return recordings.probe(directory)


def replay_dir(directory: str | Path, *, exact_math: bool | None = None) -> list[CaseResult]:
    """Replay every case listed in ``directory/index.json``. ``exact_math`` None: from the
    recording's probe (:func:`check_math_mode`)."""
    directory = Path(directory)
    try:
        index = json.loads((directory / "index.json").read_text())
        names = list(index["cases"])
    except Exception as e:
        return [CaseResult(str(directory), "fail", None, f"error: cannot read index.json: {e}")]
    if exact_math is None:
        probe = check_math_mode(directory)
        exact_math = probe is None or probe.exact
    return [replay_case(directory, n, exact_math=exact_math) for n in names]


#: ``main``'s exit codes: every case bit-exact; a case failed; none failed, but bit-exactness could
#: not be checked for some (math mode differs from the recording's).
EXIT_PASSED, EXIT_FAILED, EXIT_UNVERIFIED = 0, 1, 3


def choose_shipped(out=None) -> Path:
    """The shipped recording this machine reproduces (:func:`cogsample.reference.recordings.choose`), with a
    line per recording saying why it is or is not the one replayed."""
    import sys

    out = out or sys.stdout
    shipped = recordings.shipped()
    chosen, probes = recordings.choose(shipped)
    for rec in shipped:
        probe = probes[rec.name]
        if rec is chosen and (probe is None or probe.exact):
            why = "probe identical here: this machine computes as it did; replaying it"
        elif rec is chosen:
            why = (
                f"probe differs in {', '.join(probe.differing)}, and every other recording's in more: no shipped "
                "recording is this machine's (another processor family, or a torch without MKL); replaying the "
                "closest, within tolerance"
            )
        else:
            why = f"probe differs in {', '.join(probe.differing)}: another processor family's bits; not replayed"
        print(f"recording {rec.name}, made on an {rec.machine}: {why}", file=out)
    return chosen.directory


def main(directories: Sequence[str | Path] = (), out=None) -> int:
    """Print the math mode, one line per case and ``N passed, N failed`` (bit-exact passes only,
    then ``, N unverified`` where the math mode differs); exit 0 only if every case matched exactly,
    3 if none failed but some could not be checked bit for bit, 1 otherwise. No directories: the
    shipped recording this machine reproduces (:func:`choose_shipped`)."""
    import sys

    out = out or sys.stdout
    if not directories:
        directories = [choose_shipped(out)]
    results: list[CaseResult] = []
    for d in directories:
        probe = check_math_mode(d) if Path(d, "index.json").is_file() else None
        if probe is not None:
            print(probe.describe(), file=out)
        results += replay_dir(d, exact_math=probe is None or probe.exact)
    label = {"pass": "PASS", "fail": "FAIL", "unverified": "UNVERIFIED"}
    for r in results:
        err = "-" if r.max_abs_error is None else f"{r.max_abs_error:.3g}"
        print(f"{label[r.status]} {r.name}: max abs error {err} ({r.detail})", file=out)
    counts = {s: sum(r.status == s for r in results) for s in label}
    summary = f"{counts['pass']} passed, {counts['fail']} failed"
    if counts["unverified"]:
        summary += f", {counts['unverified']} unverified (math mode differs: not checkable bit for bit here)"
    print(summary, file=out)
    if not results or counts["fail"]:
        return EXIT_FAILED
    return EXIT_UNVERIFIED if counts["unverified"] else EXIT_PASSED
