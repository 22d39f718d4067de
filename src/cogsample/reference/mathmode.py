"""The CPU math mode a bit-exact replay runs in, and the probe that says whether this process is in it.

On x86-64, torch's CPU ``tanh``, ``exp``, ``log``, ``sqrt``, ``pow`` and matrix products go through
Intel MKL, whose code path (and so the last bits) depends on the processor unless MKL's
conditional numerical reproducibility mode is set: ``MKL_CBWR=COMPATIBLE``. MKL reads the variable
once, at its first call, so it must be in the environment before torch computes anything.

A recording states its mode (``index.json``: ``{"math": {"mkl_cbwr": ..., "probe": NAME}}``) and
ships a probe: fixed inputs and the outputs the recording machine got for each affected op. Equal
outputs here mean this process computes those ops as the recording did, so a replay may demand max
abs error 0. Where they differ (another MKL mode already initialised, a torch without MKL such as
an ARM build, or an MKL that ignores the mode for some op on this processor), no implementation
can reproduce the recorded bits, and a replay can only compare within rounding and must say so.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "ENV",
    "REPLAY_RTOL",
    "ProbeResult",
    "check_probe",
    "pin_mode",
    "recorded_mode",
    "reexec_in_mode",
    "within_tolerance",
]

#: MKL's conditional numerical reproducibility switch.
ENV = "MKL_CBWR"

#: Tolerance of a replay that cannot be bit-exact: ``max|got - recorded| <= REPLAY_RTOL * max(1, max|recorded|)``
#: per compared tensor. Two math libraries differ by at most 1-2 ulp per elementary op (2^-23 =
#: 1.2e-7 relative in float32, which every schedule scalar is, float64 cases included); a replay of
#: at most 50 steps with update multipliers bounded by 1 accumulates that at most linearly, about
#: 1e-5. Measured across MKL modes on the 27 public cases: at most 1.2e-6 (a 50-step case). The
#: reference quirks this still catches move outputs by 1e-3 (table snapping, VideoDDPM's timestep);
#: last-bit quirks (DynamicCFG's exact 1.0, the float32 cast of the f64 case) only an exact replay sees.
REPLAY_RTOL = 1e-5


def _probe_ops() -> dict[str, tuple[str, Callable[..., torch.Tensor]]]:
    """Probe op name -> (input key, op), as ``probe.json`` describes them."""
    return {
        "tanh": ("x", torch.tanh),
        "exp": ("x", torch.exp),
        "expm1": ("x", torch.expm1),
        "log": ("pos", torch.log),
        "sqrt": ("pos", torch.sqrt),
        "log1p": ("pos", torch.log1p),
        "pow_half": ("pos", lambda v: v**0.5),
    }


@dataclass(frozen=True)
class ProbeResult:
    """What the probe found: ``differing`` lists the ``dtype/op`` keys whose outputs were not bit-identical."""

    wanted: str | None  # the recording's MKL_CBWR
    mode: str | None  # MKL_CBWR in this process's environment
    differing: tuple[str, ...]
    mkl: bool

    @property
    def exact(self) -> bool:
        """True when a bit-exact comparison is meaningful in this process."""
        return not self.differing

    def describe(self) -> str:
        """One line for a user."""
        here = f"{ENV}={self.mode}" if self.mode else f"{ENV} unset"
        if self.exact:
            return f"math mode: {here}, the recording's ({self.wanted}); probe identical: bit-exact comparison"
        why = "torch has no MKL here" if not self.mkl else "MKL computes them otherwise on this processor or mode"
        return (
            f"math mode: {here} (recorded in {self.wanted}); probe differs in {', '.join(self.differing)} ({why}): "
            f"bit-exactness cannot be checked here; differing results are compared within "
            f"{REPLAY_RTOL:g} x max(1, |recorded|) and reported apart"
        )


def recorded_mode(directory: str | Path) -> tuple[str | None, str | None]:
    """``(MKL_CBWR value, probe name)`` a recording states in its ``index.json``; ``(None, None)`` if none."""
    try:
        index = json.loads((Path(directory) / "index.json").read_text())
    except (OSError, ValueError):
        return None, None
    math = index.get("math") if isinstance(index, Mapping) else None
    if not isinstance(math, Mapping):
        return None, None
    return math.get("mkl_cbwr"), math.get("probe")


def check_probe(tensors: Mapping[str, torch.Tensor], wanted: str | None = None) -> ProbeResult:
    """Recompute a probe's outputs from its inputs (``dtype/op`` and ``dtype/x``, ``dtype/pos``,
    ``dtype/a``, ``dtype/b`` keys, as a recording's ``probe.safetensors`` holds them) and compare
    every one bit for bit; ``wanted``: the recording's MKL_CBWR."""
    differing: list[str] = []
    for dt in sorted({k.split("/", 1)[0] for k in tensors}):
        for op, (arg, fn) in _probe_ops().items():
            key = f"{dt}/{op}"
            if key in tensors and not torch.equal(fn(tensors[f"{dt}/{arg}"]), tensors[key]):
                differing.append(key)
        if f"{dt}/mm" in tensors and not torch.equal(tensors[f"{dt}/a"] @ tensors[f"{dt}/b"], tensors[f"{dt}/mm"]):
            differing.append(f"{dt}/mm")
    return ProbeResult(
        wanted=wanted,
        mode=os.environ.get(ENV),
        differing=tuple(differing),
        mkl=torch.backends.mkl.is_available(),
    )


def within_tolerance(error: float, recorded_max: float, rtol: float = REPLAY_RTOL) -> bool:
    """The replay tolerance (:data:`REPLAY_RTOL`) for one tensor: ``error <= rtol * max(1, recorded_max)``."""
    return error <= rtol * max(1.0, recorded_max)


def pin_mode(mode: str) -> bool:
    """Put ``MKL_CBWR=mode`` into this process's environment; True if it changed. Takes effect only
    if MKL has not computed anything yet in this process (:func:`reexec_in_mode` otherwise)."""
    if os.environ.get(ENV) == mode:
        return False
    os.environ[ENV] = mode
    return True


def reexec_in_mode(mode: str) -> None:
    """Replace this process by the same command line with ``MKL_CBWR=mode`` (no return), unless it
    already runs in that mode. For program entry points only: MKL reads the variable once."""
    if os.environ.get(ENV) == mode:
        return
    env = dict(os.environ, **{ENV: mode})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
