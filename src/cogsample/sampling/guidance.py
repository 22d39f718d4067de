"""Classifier-free guidance, wrapped around a denoiser so that samplers never see cond/uncond.

With guidance the network runs once on ``2B`` rows: rows ``[0:B]`` unconditional, rows
``[B:2B]`` conditional (the reference's order, and diffusers'), and the guided prediction is
``u + scale * (c - u)``, evaluated in full even where ``scale == 1`` (as the reference does; with
``skip_unit_scale`` such steps run the conditional rows only, half the network work).
It is applied to the denoised x0 (``GuidedModel.__call__``, SAT) or to the raw network output
(``GuidedModel.prediction``, diffusers' v); the two agree up to rounding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .calls import network_call
from .denoiser import Denoiser, Level
from .schedules import ZeroSNRDDPM

Tensor = torch.Tensor

__all__ = [
    "CFG",
    "BatchedBranches",
    "Branches",
    "Conditioning",
    "DynamicCFG",
    "Guidance",
    "GuidanceInterval",
    "GuidedModel",
    "LevelGuidance",
    "NoGuidance",
    "guidance_scales",
]


class Guidance:
    """A guidance rule: the CFG scale for each denoiser call, or None for conditional-only."""

    def scale_at(self, step: int, timestep: int | None, num_steps: int) -> float | None:  # pragma: no cover
        raise NotImplementedError

    def check(self, timesteps: Sequence[int] | None, num_steps: int) -> None:
        """Raise ``ValueError`` before sampling if this rule cannot run on the given grid."""

    def scales(self, timesteps: Sequence[int] | None, num_steps: int, requested_steps: int) -> list[float | None]:
        """The scale of each of ``num_steps`` steps (``requested_steps``: what step-count formulas see)."""
        ts = [None] * num_steps if timesteps is None else timesteps
        return [self.scale_at(i, ts[i], requested_steps) for i in range(num_steps)]


@dataclass(frozen=True)
class NoGuidance(Guidance):
    """Conditional branch only (the reference's ``IdentityGuider``): one row per sample."""

    def scale_at(self, step: int, timestep: int | None, num_steps: int) -> float | None:
        return None


@dataclass(frozen=True)
class CFG(Guidance):
    """Constant scale (the reference's ``VanillaCFG``): ``u + scale * (c - u)``."""

    scale: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.scale):
            raise ValueError(f"scale must be a finite number, got {self.scale!r}")

    def scale_at(self, step: int, timestep: int | None, num_steps: int) -> float | None:
        return self.scale


@dataclass(frozen=True)
class DynamicCFG(Guidance):
    """CogVideoX's cosine ramp: ``1 + scale * (1 - cos(pi * (k / num_steps) ** exp)) / 2``.

    ``step_index="reference"`` (the default, what SAT configs get) uses the reference's
    ``k = sampler_steps - timestep`` with the DDPM timestep (999, 979, ...), which makes ``k``
    negative and the scale jump between 1 and 1 + scale. ``step_index="loop"`` uses the loop
    counter ``k = i``, the ramp from 1 to 1 + scale that the formula evidently intends.
    Evaluated in Python float64, exactly as the reference.
    """

    scale: float
    exp: float
    num_steps: int
    step_index: Literal["reference", "loop"] = "reference"

    def __post_init__(self) -> None:
        if not math.isfinite(self.scale):
            raise ValueError(f"scale must be a finite number, got {self.scale!r}")
        if not math.isfinite(self.exp):
            raise ValueError(f"exp must be a finite number, got {self.exp!r}")
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"DynamicCFG num_steps must be an integer >= 1, got {self.num_steps!r}")
        if self.step_index not in ("reference", "loop"):
            raise ValueError(f"step_index must be 'reference' or 'loop', got {self.step_index!r}")

    def index(self, step: int, timestep: int | None, num_steps: int) -> int:
        if self.step_index == "loop":
            return step
        if timestep is None:
            raise ValueError(
                "DynamicCFG(step_index='reference') needs DDPM timesteps (k = num_steps - timestep); "
                "this grid has none: use step_index='loop'"
            )
        return num_steps - timestep

    def scale_at(self, step: int, timestep: int | None, num_steps: int) -> float | None:
        k = self.index(step, timestep, num_steps)
        ramp = (k / self.num_steps) ** self.exp
        if isinstance(ramp, complex):
            raise ValueError(
                f"DynamicCFG exp must be an integer when the step index is negative (k={k}), got exp={self.exp!r}"
            )
        return 1 + self.scale * (1 - math.cos(math.pi * ramp)) / 2

    def check(self, timesteps: Sequence[int] | None, num_steps: int) -> None:
        for i in range(num_steps):
            self.scale_at(i, None if timesteps is None else timesteps[i], num_steps)


@dataclass(frozen=True)
class GuidanceInterval(Guidance):
    """``guidance`` on the steps with ``start <= i / num_steps < end``, conditional only elsewhere:
    outside the interval no unconditional forward runs (CFG truncation / limited-interval guidance).
    ``start``/``end`` are fractions of the step count, so the interval keeps its place on the
    trajectory whatever the number of steps."""

    guidance: Guidance
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.guidance, Guidance) or isinstance(self.guidance, GuidanceInterval):
            raise ValueError(f"guidance must be a (non-interval) Guidance, got {self.guidance!r}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"guidance interval {name} must be a number in [0, 1], got {v!r}")
        if not self.start < self.end:
            raise ValueError(f"guidance interval start must be < end, got start={self.start!r}, end={self.end!r}")

    def scale_at(self, step: int, timestep: int | None, num_steps: int) -> float | None:
        if not self.start <= step / num_steps < self.end:
            return None
        return self.guidance.scale_at(step, timestep, num_steps)

    def check(self, timesteps: Sequence[int] | None, num_steps: int) -> None:
        self.guidance.check(timesteps, num_steps)

    def scales(self, timesteps: Sequence[int] | None, num_steps: int, requested_steps: int) -> list[float | None]:
        inner = self.guidance.scales(timesteps, num_steps, requested_steps)
        return [s if self.start <= i / requested_steps < self.end else None for i, s in enumerate(inner)]


@dataclass(frozen=True)
class LevelGuidance(Guidance):
    """``guidance``'s scales on an ``anchor`` grid (DDPM timesteps, descending: the reference's 50
    trailing steps), carried to any grid by noise level, so that a scale means the same at every
    step count. Anchor step ``j`` holds the timesteps ``(a[j+1], a[j]]`` (``a[n] = -1``, the clean
    end). A grid's step from ``t[k]`` to ``t[k+1]`` gets the mean of the anchor scales over its
    interval, weighted by ``d(alpha / sigma)`` of ``table`` (``e^lambda``: the weight with which the
    exponential integrators of DPM-Solver++ fold the denoised estimate into x, so a first-order step
    applies the interval's guidance exactly when ``u`` and ``c`` hold still over it); the last step,
    which returns the estimate at the clean end, the anchor's last scale. On the anchor grid these
    are the anchor's own scales; as steps shrink each level gets its anchor step's scale, the one
    definition that the converged limit solves (a conditional-only anchor step counts as 1)."""

    guidance: Guidance
    anchor: tuple[int, ...]
    table: ZeroSNRDDPM = ZeroSNRDDPM(1.0)  # noqa: RUF009 (frozen, immutable)

    def __post_init__(self) -> None:
        if not isinstance(self.guidance, Guidance) or isinstance(self.guidance, (LevelGuidance, GuidanceInterval)):
            raise ValueError(f"guidance must be a plain Guidance rule (CFG, DynamicCFG), got {self.guidance!r}")
        anchor = tuple(self.anchor)
        if not anchor or any(isinstance(t, bool) or not isinstance(t, int) for t in anchor):
            raise ValueError(f"anchor must be a non-empty sequence of integer DDPM timesteps, got {self.anchor!r}")
        top = self.table.num_timesteps - 1
        if any(b >= a for a, b in itertools.pairwise(anchor)) or anchor[-1] < 0 or anchor[0] > top:
            raise ValueError(f"anchor timesteps must be in [0, {top}] and strictly decreasing, got {anchor!r}")
        object.__setattr__(self, "anchor", anchor)

    def anchor_scales(self) -> list[float]:
        """The wrapped rule's scale at each anchor step (None, conditional only, as 1)."""
        n = len(self.anchor)
        raw = [self.guidance.scale_at(j, t, n) for j, t in enumerate(self.anchor)]
        return [1.0 if s is None else s for s in raw]

    def scale_at(self, step: int, timestep: int | None, num_steps: int) -> float | None:
        raise ValueError("LevelGuidance scales a step by its whole noise interval: use scales(timesteps, ...)")

    def check(self, timesteps: Sequence[int] | None, num_steps: int) -> None:
        if timesteps is None:
            raise ValueError(
                "guidance by noise level (cfg_index 'level') carries the scales by DDPM timestep; this grid has none: "
                "use a DDPM schedule"
            )

    def scales(self, timesteps: Sequence[int] | None, num_steps: int, requested_steps: int) -> list[float | None]:
        self.check(timesteps, num_steps)
        assert timesteps is not None
        a, s = [*self.anchor, -1], self.anchor_scales()
        t = [*timesteps, -1]
        alpha = self.table.table(self.table.num_timesteps).double()
        snr_root = (alpha / (1 - alpha**2).sqrt()).tolist()  # alpha / sigma at each timestep
        clock = [math.inf, *snr_root]  # clock[t + 1]; t = -1 is the clean end
        out: list[float | None] = []
        for k in range(num_steps):
            hi, lo = min(t[k], a[0]), t[k + 1]
            if lo < 0:
                out.append(s[-1])
                continue
            weights = [max(0.0, clock[max(lo, a[j + 1]) + 1] - clock[min(hi, a[j]) + 1]) for j in range(len(s))]
            held = [v for w, v in zip(weights, s, strict=True) if w > 0]
            mean = sum(w * v for w, v in zip(weights, s, strict=True)) / sum(weights) if held else s[0]
            # one scale over the whole step: exactly it (an average of equal values may round)
            out.append(held[0] if len(set(held)) == 1 else mean)
        return out


def guidance_scales(
    guidance: Guidance, timesteps: Sequence[int] | None, num_steps: int, requested_steps: int | None = None
) -> list[float | None]:
    """The scale applied at each of ``num_steps`` sampler steps, computed before any network call.

    ``requested_steps``: the step count the formulas see when the grid made a different number
    (diffusers' 62 steps for 61: its DynamicCFG uses ``61 - t``); default ``num_steps``.
    """
    if requested_steps is None:
        guidance.check(timesteps, num_steps)
        requested_steps = num_steps
    return guidance.scales(timesteps, num_steps, requested_steps)


@dataclass(frozen=True)
class Conditioning:
    """What the network is conditioned on, per sample.

    ``context``: text embedding ``(B, L, D)``; ``uncond_context``: the unconditional branch's
    ``(B, L, D)`` (None: zeros, as the reference's ``force_uc_zero_embeddings``);
    ``image_latents``: I2V latents ``(B, T, C, H, W)`` (frame 0 the image, the rest zeros),
    concatenated on the channel axis of the network input for both branches;
    ``ofs``: passed to the network unchanged.
    """

    context: Tensor
    uncond_context: Tensor | None = None
    image_latents: Tensor | None = None
    ofs: Tensor | None = None

    def uncond(self) -> Tensor:
        """The unconditional branch's context: ``uncond_context``, or zeros of the context's shape."""
        return self.uncond_context if self.uncond_context is not None else torch.zeros_like(self.context)


class Branches:
    """How a guided call evaluates ``fn(x, level, context, image_latents, ofs)`` for its branches,
    given the :class:`Conditioning` it was bound to: both (``(uncond, cond)`` outputs) or the
    conditional rows alone. :class:`BatchedBranches` is one call on ``2B`` rows;
    :class:`cogsample.sampling.parallel.CFGParallel` puts the branches on two ranks."""

    def both(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def conditional(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class BatchedBranches(Branches):
    """One network call on ``2B`` rows, ``[uncond; cond]`` (the reference's batch), split after."""

    def __init__(self, cond: Conditioning):
        self.cond = cond
        self._context2 = torch.cat([cond.uncond(), cond.context])
        img = cond.image_latents
        self._image2 = None if img is None else torch.cat([img, img])

    def both(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> tuple[Tensor, Tensor]:
        u, c = fn(torch.cat([x, x]), level, self._context2, self._image2, self.cond.ofs).chunk(2)
        return u, c

    def conditional(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> Tensor:
        c = self.cond
        return fn(x, level, c.context, c.image_latents, c.ofs)


class GuidedModel:
    """``model(x, level) -> x0``: a denoiser, its conditioning and a guidance rule, as samplers see it.

    ``model.prediction(x, level)`` is the same with the raw network output (v for VideoScaling)
    in place of x0, for samplers that consume it (diffusers' schedulers); ``output="v"`` makes
    ``model(x, level)`` return that instead of x0 (what ``build_model`` sets for such samplers,
    so that ``spec.fn(model, ...)`` always gets what it consumes).
    ``prediction_dtype``: the dtype the denoiser's output is cast to before guidance (float32 for
    the reference's video samplers and for diffusers' ``noise_pred.float()``); None keeps it.
    ``requested_steps``: see :func:`guidance_scales`. ``skip_unit_scale``: run the conditional rows
    alone on steps whose scale is exactly 1, where ``u + 1 (c - u)`` is ``c`` up to one rounding
    (off by default: the reference evaluates the full batch). ``branches``: where the branches
    run, anything with ``bind(cond) -> Branches`` (None: :class:`BatchedBranches`, one batch).
    ``windows``: network calls per branch per call (context windows: one per window), what
    :attr:`forwards` counts. ``guider``: the combine rule (:mod:`cogsample.sampling.guiders`) on
    whichever quantity this model guides (x0, or v with ``output="v"``/:meth:`prediction`), its
    state made fresh here, once per model (one sampling run); None: ``u + scale (c - u)``. A rule
    with a perturbation (PAG, SLG) makes one more conditional call on its steps, inside
    ``network_call(perturb=...)`` (:mod:`cogsample.sampling.calls`), through ``branches``.
    """

    def __init__(
        self,
        denoiser: Denoiser | Callable[..., Tensor],
        guidance: Guidance,
        cond: Conditioning,
        *,
        num_steps: int,
        timesteps: Sequence[int] | None = None,
        prediction_dtype: torch.dtype | None = None,
        requested_steps: int | None = None,
        output: Literal["x0", "v"] = "x0",
        skip_unit_scale: bool = False,
        branches: Any = None,
        windows: int = 1,
        guider: Any = None,
    ):
        if output not in ("x0", "v"):
            raise ValueError(f"output must be 'x0' or 'v', got {output!r}")
        self.output = output
        self.denoiser = denoiser
        self.guidance = guidance
        self.cond = cond
        self.num_steps = num_steps
        self.requested_steps = requested_steps or num_steps
        self.prediction_dtype = prediction_dtype
        scales = guidance_scales(guidance, timesteps, num_steps, requested_steps)
        self.step_scales = [None if skip_unit_scale and s == 1.0 else s for s in scales]
        self.branches: Branches = BatchedBranches(cond) if branches is None else branches.bind(cond)
        self.windows = windows
        self.guider = guider
        self.guider_state = None if guider is None else guider.start()
        #: network evaluations per sample so far: per window, 2 for a guided call, 1 for a conditional-only
        #: one, 1 more for a perturbed one (PAG, SLG)
        self.forwards = 0

    def __call__(self, x: Tensor, level: Level) -> Tensor:
        """The guided x0 prediction at ``level`` (the raw prediction with ``output="v"``)."""
        if self.output == "v":
            return self.prediction(x, level)
        return self._guided(self.denoiser, x, level)

    def prediction(self, x: Tensor, level: Level) -> Tensor:
        """The guided raw network output at ``level``: ``u + scale (c - u)`` on the network's
        own output (``Denoiser.prediction``), as diffusers' pipelines guide ``noise_pred``."""
        return self._guided(self.denoiser.prediction, x, level)

    def _guided(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> Tensor:
        dtype = self.prediction_dtype
        if self.guider is not None and level.step < self.guider.zero_steps:
            return torch.zeros_like(x, dtype=dtype)  # CFG-Zero*'s zero-init: no network call
        out, c = self._branches(fn, x, level)
        if self.guider is not None and self.guider.perturbs(level.step, self.requested_steps):
            out = self.guider.add_perturbed(out, c, self._perturbed(fn, x, level))
        return out

    def _branches(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> tuple[Tensor, Tensor]:
        """The guided prediction of the step's scale, and the conditional one."""
        scale = self.step_scales[level.step]
        dtype = self.prediction_dtype
        if scale is None:
            out = self._conditional(fn, x, level)
            return out, out
        self.forwards += 2 * self.windows
        u, cnd = self.branches.both(fn, x, level)
        if dtype is not None:
            u, cnd = u.to(dtype), cnd.to(dtype)
        if self.guider is not None:
            return self.guider.combine(u, cnd, scale, x, level.step, self.guider_state), cnd
        return u + scale * (cnd - u), cnd

    def _conditional(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> Tensor:
        """The conditional prediction alone, in the prediction dtype."""
        self.forwards += self.windows
        out = self.branches.conditional(fn, x, level)
        return out if self.prediction_dtype is None else out.to(self.prediction_dtype)

    def _perturbed(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> Tensor:
        """The conditional prediction with the guider's perturbation on the network (PAG, SLG)."""
        with network_call(perturb=self.guider.perturbation):
            return self._conditional(fn, x, level)
