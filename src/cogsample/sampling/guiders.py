"""How a guided call combines its two branches: the *combine rules* of diffusers' guiders, on
cogsample's guided denoiser (:class:`~cogsample.sampling.guidance.GuidedModel`).

A rule maps the unconditional and conditional predictions ``u``, ``c`` (``(B, T, C, H, W)``) and
the step's scale ``s`` (from the :class:`~cogsample.sampling.guidance.Guidance` schedule: CFG,
DynamicCFG, intervals, scales by noise level, unchanged) to the guided prediction. It applies to
whichever quantity the profile guides: the denoised x0 (``sat``, ``GuidedModel.__call__``) or the
raw network output v (``diffusers``, ``GuidedModel.prediction``). No rule (``None``) is plain
``u + s (c - u)``, bit for bit as before. As in diffusers, every rule returns ``c`` at ``s == 1``.
A rule that keeps state over the steps (APG's momentum) gets it fresh from :meth:`Guider.start`
for each sampling run (one per :class:`GuidedModel`): nothing is carried from one run to the next.
PAG and SLG add a third, perturbed conditional prediction ``p`` (the network with some blocks'
attention or the blocks themselves dropped: a :class:`~cogsample.sampling.calls.Perturbation` on
the call) on the steps in their range: ``g + w (c - p)`` on top of the guided ``g``.
Where diffusers' own module-level function fits (APG, tangential CFG, the CFG-Zero* scale), it is
called; MAG and FDG are cogsample's own (diffusers' work on 4-D images only; FDG's needs kornia),
tested equal to diffusers' guiders on images.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from .calls import Perturbation

Tensor = torch.Tensor

__all__ = [
    "APG",
    "FDG",
    "GUIDERS",
    "MAG",
    "PAG",
    "SLG",
    "CFGZeroStar",
    "Guider",
    "Tangential",
    "laplacian_pyramid",
    "make_guider",
    "parse_guidance_text",
    "rebuild_from_pyramid",
]


class Guider:
    """A combine rule: ``combine(u, c, scale, x, level, state)``; ``start()`` is its per-run state."""

    #: the ``--guidance`` name
    name: ClassVar[str] = ""
    #: the first steps whose guided prediction is zero, without any network call (CFG-Zero*)
    zero_steps: int = 0

    def start(self) -> Any:
        """A fresh state for one sampling run (None for a stateless rule)."""
        return None

    def check(self, shape: tuple[int, ...]) -> None:
        """``ValueError`` before the first network call if the rule cannot run on latents of ``shape``."""

    #: what the third, perturbed conditional call changes in the network (None: no such call)
    perturbation: Perturbation | None = None

    def perturbs(self, step: int, num_steps: int) -> bool:
        """Whether step ``step`` of ``num_steps`` makes the perturbed call."""
        return False

    def add_perturbed(self, guided: Tensor, c: Tensor, p: Tensor) -> Tensor:  # pragma: no cover
        """The guided prediction with the perturbed one ``p`` folded in."""
        raise NotImplementedError

    def combine(
        self, u: Tensor, c: Tensor, scale: float, x: Tensor, step: int, state: Any
    ) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def _number(name: str, value: Any, lo: float | None = None, hi: float | None = None, integer: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float)) and math.isfinite(value)
    ok = ok and (lo is None or value >= lo) and (hi is None or value <= hi)
    if not ok:
        kind = "an integer" if integer else "a finite number"
        rng = (
            "" if lo is None and hi is None else f" in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
        )
        raise ValueError(f"{name} must be {kind}{rng}, got {value!r}")


def _flat_dims(t: Tensor) -> list[int]:
    return list(range(1, t.ndim))


@dataclass(frozen=True)
class CFGZeroStar(Guider):
    """CFG-Zero* (arXiv 2503.18886): ``alpha u + s (c - alpha u)`` with the per-sample optimised
    scale ``alpha = <c, u> / |u|^2``; the first ``zero_init`` steps predict 0 (no network call)."""

    name: ClassVar[str] = "cfg-zero-star"
    zero_init: int = 1

    def __post_init__(self) -> None:
        _number("cfg-zero-star zero_init", self.zero_init, 0, integer=True)

    @property
    def zero_steps(self) -> int:  # type: ignore[override]
        return self.zero_init

    def combine(self, u: Tensor, c: Tensor, scale: float, x: Tensor, step: int, state: Any) -> Tensor:
        if scale == 1.0:
            return c
        from diffusers.guiders.classifier_free_zero_star_guidance import cfg_zero_star_scale

        alpha = cfg_zero_star_scale(c.flatten(1), u.flatten(1)).view(-1, *(1,) * (c.ndim - 1))
        u = u * alpha
        return u + scale * (c - u)


@dataclass(frozen=True)
class APG(Guider):
    """Adaptive projected guidance (arXiv 2410.02416): ``d = c - u`` run through a momentum
    average ``d_k = d + momentum d_(k-1)``, clipped to norm ``norm_threshold`` (0: off), split into
    its parts parallel and orthogonal to ``c`` (per sample); ``u + s (d_orth + eta d_par)``.
    ``eta`` 1 by default, diffusers' default: the paper's 0 loses the prompt on the trained model
    (docs/guiders.md)."""

    name: ClassVar[str] = "apg"
    eta: float = 1.0
    momentum: float = -0.5
    norm_threshold: float = 0.0

    def __post_init__(self) -> None:
        _number("apg eta", self.eta)
        _number("apg momentum", self.momentum, -1.0, 1.0)
        _number("apg norm_threshold", self.norm_threshold, 0.0)

    def start(self) -> Any:
        if self.momentum == 0:
            return None
        from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer

        return MomentumBuffer(self.momentum)

    def combine(self, u: Tensor, c: Tensor, scale: float, x: Tensor, step: int, state: Any) -> Tensor:
        if scale == 1.0:  # diffusers' APG is off at scale 1 (and leaves its momentum alone)
            return c
        from diffusers.guiders.adaptive_projected_guidance import normalized_guidance

        return normalized_guidance(c, u, scale, state, self.eta, self.norm_threshold)


@dataclass(frozen=True)
class Tangential(Guider):
    """Tangential CFG (arXiv 2503.18137): ``u`` projected on the first right-singular vector of
    the per-sample ``[c; u]`` (its normal component dropped), then ``u' + s (c - u')``."""

    name: ClassVar[str] = "tangential"

    def combine(self, u: Tensor, c: Tensor, scale: float, x: Tensor, step: int, state: Any) -> Tensor:
        if scale == 1.0:
            return c
        from diffusers.guiders.tangential_classifier_free_guidance import normalized_guidance

        return normalized_guidance(c, u, scale)


@dataclass(frozen=True)
class MAG(Guider):
    """Magnitude-aware guidance (MAMBO-G): ``u + (1 + (s - 1) exp(-alpha r)) (c - u)`` with the
    per-sample ratio ``r = |c - u| / |u|``: the scale falls where the update is large."""

    name: ClassVar[str] = "mag"
    alpha: float = 8.0

    def __post_init__(self) -> None:
        _number("mag alpha", self.alpha, 0.0)

    def combine(self, u: Tensor, c: Tensor, scale: float, x: Tensor, step: int, state: Any) -> Tensor:
        if scale == 1.0:
            return c
        # diffusers' mambo_guidance norms with torch.norm over every non-batch dim, which fails on
        # (B, T, C, H, W) latents: the same formula on the flattened samples
        diff = c - u
        ratio = diff.flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1)
        final = 1.0 + (scale - 1.0) * torch.exp(-self.alpha * ratio)
        return u + final.view(-1, *(1,) * (c.ndim - 1)) * diff


@dataclass(frozen=True)
class FDG(Guider):
    """Frequency-decoupled guidance (arXiv 2506.19713): ``u`` and ``c`` split into a Laplacian
    pyramid of ``levels`` bands per frame; band ``i`` (0 the finest) gets ``u_i + s_i (c_i - u_i)``
    with ``s_0 = s`` and the coarsest ``1 + low (s - 1)`` (linear in between), the update's part
    parallel to ``c_i`` weighted by ``parallel``; the bands summed back."""

    name: ClassVar[str] = "fdg"
    low: float = 0.5
    levels: int = 2
    parallel: float = 1.0

    def __post_init__(self) -> None:
        _number("fdg low", self.low, 0.0)
        _number("fdg levels", self.levels, 2, 4, integer=True)
        _number("fdg parallel", self.parallel)

    def scales(self, scale: float) -> list[float]:
        """Each band's scale, finest first."""
        n = self.levels - 1
        return [1 + (1 + (self.low - 1) * i / n) * (scale - 1) for i in range(self.levels)]

    def check(self, shape: tuple[int, ...]) -> None:
        h, w = shape[-2:]
        small = min(h, w) >> (self.levels - 1)
        if small < 3:
            raise ValueError(
                f"fdg levels={self.levels} halves the {h}x{w} latent {self.levels - 1} times, below 3 pixels "
                "(the pyramid's 5-tap blur): use fewer levels or a larger video"
            )

    def combine(self, u: Tensor, c: Tensor, scale: float, x: Tensor, step: int, state: Any) -> Tensor:
        if scale == 1.0:
            return c
        return fdg_combine(u, c, self.scales(scale), self.parallel)


@dataclass(frozen=True)
class _PerturbedGuider(Guider):
    """CFG plus a perturbed conditional prediction ``p``: ``u + s (c - u) + weight (c - p)`` on the
    steps with ``begin <= i / n < end`` (``c + weight (c - p)`` on a conditional-only step,
    ``u + s (c - u)`` outside the range, ``c`` at ``s == 1`` as every rule). diffusers'
    SkipLayerGuidance / PerturbedAttentionGuidance give the same where CFG runs (``s != 1``); without
    CFG they give ``p + weight (c - p)``, one ``weight`` less: cogsample keeps one strength at every
    step. ``layers``: block indices, ``()`` the middle block; ``begin``, ``end``: diffusers'
    ``*_start``, ``*_stop``. Defaults: diffusers' (SD 3.5's)."""

    kind: ClassVar[str] = ""
    weight: float = 2.8
    begin: float = 0.01
    end: float = 0.2
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _number(f"{self.name} weight", self.weight)
        _number(f"{self.name} begin", self.begin, 0.0, 1.0)
        _number(f"{self.name} end", self.end, 0.0, 1.0)
        if not self.begin < self.end:
            raise ValueError(f"{self.name} begin must be < end, got begin={self.begin!r}, end={self.end!r}")
        try:
            object.__setattr__(self, "perturbation", Perturbation(self.kind, tuple(self.layers)))
        except (TypeError, ValueError):
            raise ValueError(
                f"{self.name} layers must be distinct block indices >= 0 (e.g. layers=2+3), got {self.layers!r}"
            ) from None
        object.__setattr__(self, "layers", self.perturbation.layers)

    def perturbs(self, step: int, num_steps: int) -> bool:
        return self.weight != 0 and self.begin <= step / num_steps < self.end

    def combine(self, u: Tensor, c: Tensor, scale: float, x: Tensor, step: int, state: Any) -> Tensor:
        return c if scale == 1.0 else u + scale * (c - u)

    def add_perturbed(self, guided: Tensor, c: Tensor, p: Tensor) -> Tensor:
        return guided + self.weight * (c - p)


@dataclass(frozen=True)
class PAG(_PerturbedGuider):
    """Perturbed-attention guidance (arXiv 2403.17377): ``p`` from the network with the
    self-attention map of blocks ``layers`` replaced by the identity."""

    name: ClassVar[str] = "pag"
    kind: ClassVar[str] = "attention"


@dataclass(frozen=True)
class SLG(_PerturbedGuider):
    """Skip-layer guidance (SD 3.5; STG-R, arXiv 2411.18664): ``p`` from the network with blocks
    ``layers`` skipped."""

    name: ClassVar[str] = "slg"
    kind: ClassVar[str] = "blocks"


def _blur(x: Tensor) -> Tensor:
    """The pyramid's separable 5-tap binomial blur ``[1, 4, 6, 4, 1] / 16``, reflect-padded (4-D)."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    k = (k1[:, None] * k1[None, :]).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), k, groups=x.shape[1])


def _up(x: Tensor, size: tuple[int, int]) -> Tensor:
    return _blur(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


def laplacian_pyramid(x: Tensor, levels: int) -> list[Tensor]:
    """``(N, C, H, W)`` -> ``levels`` bands, finest first: ``g_i - up(g_(i+1))`` and the coarsest
    ``g``, with ``g_(i+1)`` the blurred ``g_i`` at half size (bilinear). Exact on reconstruction."""
    gauss = [x]
    for _ in range(levels - 1):
        g = gauss[-1]
        gauss.append(
            F.interpolate(_blur(g), size=(g.shape[-2] // 2, g.shape[-1] // 2), mode="bilinear", align_corners=False)
        )
    bands = [g - _up(gauss[i + 1], tuple(g.shape[-2:])) for i, g in enumerate(gauss[:-1])]
    return [*bands, gauss[-1]]


def rebuild_from_pyramid(bands: list[Tensor]) -> Tensor:
    """The inverse of :func:`laplacian_pyramid`: ``g_i = band_i + up(g_(i+1))``."""
    img = bands[-1]
    for band in reversed(bands[:-1]):
        img = band + _up(img, tuple(band.shape[-2:]))
    return img


def _project(v: Tensor, onto: Tensor) -> tuple[Tensor, Tensor]:
    """``v``'s parts parallel and orthogonal to ``onto``, per sample (float64)."""
    v64, unit = v.double(), F.normalize(onto.double(), dim=_flat_dims(onto))
    par = (v64 * unit).sum(dim=_flat_dims(v), keepdim=True) * unit
    return par.to(v.dtype), (v64 - par).to(v.dtype)


def fdg_combine(u: Tensor, c: Tensor, scales: list[float], parallel: float = 1.0) -> Tensor:
    """FDG on ``(B, C, H, W)`` images or ``(B, T, C, H, W)`` latents (the pyramid per frame, the
    projection per sample): band ``i`` is ``u_i + scales[i] (c_i - u_i)``."""
    b, video = c.shape[0], c.ndim == 5
    pu = laplacian_pyramid(u.flatten(0, 1) if video else u, len(scales))
    pc = laplacian_pyramid(c.flatten(0, 1) if video else c, len(scales))
    out = []
    for s, bu, bc in zip(scales, pu, pc, strict=True):
        shift = bc - bu
        if not math.isclose(parallel, 1.0):
            par, orth = _project(shift.reshape(b, -1), bc.reshape(b, -1))
            shift = (parallel * par + orth).reshape(shift.shape)
        out.append(bu + s * shift)
    return rebuild_from_pyramid(out).reshape(c.shape)


#: ``--guidance`` rule names (besides none, cfg, dynamic) and their classes.
GUIDERS: dict[str, type[Guider]] = {g.name: g for g in (CFGZeroStar, APG, Tangential, FDG, MAG, PAG, SLG)}


def make_guider(name: str, params: dict[str, str], also: tuple[str, ...] = ()) -> Guider:
    """The rule ``name`` with ``params`` (texts, as given on the command line) parsed by its fields'
    types; ``ValueError`` naming the rule, the key or the value that is wrong (``also``: keys the
    caller takes, named among the allowed)."""
    cls = GUIDERS[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, text in params.items():
        if key not in fields:
            allowed = ", ".join([*fields, *also]) or "none"
            raise ValueError(f"--guidance {name}: unknown parameter {key!r}; {name} takes: {allowed}")
        if isinstance(fields[key].default, tuple):
            kwargs[key] = _indices(name, key, text)
            continue
        integer = isinstance(fields[key].default, int)
        try:
            kwargs[key] = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"--guidance {name}: {key} must be {kind}, got {text!r}") from None
    return cls(**kwargs)


def _indices(rule: str, key: str, text: str) -> tuple[int, ...]:
    """``"2+5+7"`` -> ``(2, 5, 7)``; ``"2-4"`` -> ``(2, 3, 4)``."""
    out: list[int] = []
    for part in text.split("+"):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
            raise ValueError(
                f"--guidance {rule}: {key} must be block indices joined by + or a range a-b (e.g. 2+3 or 1-3), "
                f"got {text!r}"
            )
        out.extend(range(int(lo), int(hi) + 1) if dash else [int(lo)])
    return tuple(out)


def parse_guidance_text(text: str) -> tuple[str, dict[str, str]]:
    """``"RULE[:key=value,...]"`` -> ``(RULE, {key: value})`` (``ValueError`` on a malformed text)."""
    if not isinstance(text, str):
        raise ValueError(f"guidance must be a string RULE[:key=value,...], got {text!r}")
    name, sep, rest = text.partition(":")
    params: dict[str, str] = {}
    if sep:
        for part in rest.split(","):
            key, eq, value = (s.strip() for s in part.partition("="))
            if not eq or not key or not value or key in params:
                raise ValueError(
                    f"--guidance {text!r}: expected RULE:key=value,... (each key once), e.g. apg:eta=0,momentum=-0.5"
                )
            params[key] = value
    return name.strip(), params
