"""One call from noise to latents: ``sample(network, x, cond, config)``.

:class:`SamplingConfig` names a sampler, a schedule, a denoiser parameterization and a guidance
rule; any combination that can work does, with no code per combination. Everything a user can
get wrong is checked here, before the first network call.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from . import guidance as _guidance
from . import guiders as _guiders
from . import scalings as _scalings
from . import schedules as _schedules
from .cache import CacheConfig, apply_cache
from .context_windows import ContextWindows, WindowedNetwork
from .denoiser import Denoiser, DenoiserConfig, Network
from .guidance import Conditioning, DynamicCFG, Guidance, GuidedModel, guidance_scales
from .guiders import Guider
from .keyframes import Keyframes
from .noise import GlobalNoise, NoiseSource
from .samplers import Callback, SamplerSpec, get_sampler
from .scalings import Scaling, VideoScaling
from .schedules import Grid, Schedule, ZeroSNRDDPM

Tensor = torch.Tensor

__all__ = [
    "COGVIDEOX_5B",
    "SamplingConfig",
    "build_model",
    "check_combination",
    "check_perturbation",
    "release",
    "sample",
    "validate_inputs",
]


def _default_denoiser() -> DenoiserConfig:
    return DenoiserConfig(VideoScaling(), table=ZeroSNRDDPM(1.0))


@dataclass(frozen=True)
class SamplingConfig:
    """What to sample with. The defaults are CogVideoX-5B's shipped sampler config:
    VPSDEDPMPP2M, 50 steps, ZeroSNR DDPM shift 1, VideoScaling with table snapping, DynamicCFG 6/5."""

    sampler: str = "vpsde_dpmpp_2m"
    steps: int = 50
    schedule: Schedule = field(default_factory=lambda: ZeroSNRDDPM(1.0))
    denoiser: DenoiserConfig = field(default_factory=_default_denoiser)
    guidance: Guidance = field(default_factory=lambda: DynamicCFG(6, 5, 50))
    options: Mapping[str, Any] = field(default_factory=dict)
    #: run only the conditional rows on steps whose guidance scale is exactly 1 (see GuidedModel)
    skip_unit_cfg: bool = False
    #: a step cache around the network (approximate; see :mod:`cogsample.sampling.cache`), None for none
    cache: CacheConfig | None = None
    #: temporal context windows for latents longer than the network's length
    #: (:mod:`cogsample.sampling.context_windows`), None: the network sees the whole latent
    context: ContextWindows | None = None
    #: how a guided call combines its branches (:mod:`cogsample.sampling.guiders`: CFG-Zero*, APG,
    #: ...), None: ``u + scale (c - u)``
    guider: Guider | None = None

    def __post_init__(self) -> None:
        spec = get_sampler(self.sampler)
        object.__setattr__(self, "sampler", spec.name)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        allowed = spec.options()
        for key in self.options:
            if key not in allowed:
                raise ValueError(
                    f"sampler option {key!r} is not an option of {spec.name!r}; allowed: {sorted(allowed) or 'none'}"
                )
        object.__setattr__(self, "options", dict(self.options))
        if not isinstance(self.skip_unit_cfg, bool):
            raise ValueError(f"skip_unit_cfg must be a bool, got {self.skip_unit_cfg!r}")
        if self.cache is not None and not isinstance(self.cache, CacheConfig):
            raise ValueError(f"cache must be a CacheConfig or None, got {self.cache!r}")
        if self.context is not None and not isinstance(self.context, ContextWindows):
            raise ValueError(f"context must be a ContextWindows or None, got {self.context!r}")
        if self.guider is not None and not isinstance(self.guider, Guider):
            raise ValueError(f"guider must be a Guider (cogsample.sampling.guiders) or None, got {self.guider!r}")

    @property
    def spec(self) -> SamplerSpec:
        return get_sampler(self.sampler)

    def grid(self) -> Grid:
        return self.schedule.grid(self.steps)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description that :meth:`from_dict` turns back into an equal config
        (``context`` and ``guider`` only where set, so a config without them describes itself as before)."""
        d = self.denoiser
        out = {
            "sampler": self.sampler,
            "steps": self.steps,
            "schedule": _typed(self.schedule),
            "denoiser": {
                "scaling": _typed(d.scaling),
                "table": None if d.table is None else _typed(d.table),
                "num_idx": d.num_idx,
                "quantize_c_noise": d.quantize_c_noise,
            },
            "guidance": _typed(self.guidance),
            "options": {k: _jsonable(v) for k, v in self.options.items()},
            "skip_unit_cfg": self.skip_unit_cfg,
            "cache": None if self.cache is None else self.cache.to_dict(),
        }
        if self.context is not None:
            out["context"] = self.context.to_dict()
        if self.guider is not None:
            out["guider"] = _typed(self.guider)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SamplingConfig:
        d = data["denoiser"]
        return cls(
            sampler=data["sampler"],
            steps=data["steps"],
            schedule=_untyped(data["schedule"], _schedules, Schedule),
            denoiser=DenoiserConfig(
                scaling=_untyped(d["scaling"], _scalings, Scaling),
                table=None if d["table"] is None else _untyped(d["table"], _schedules, Schedule),
                num_idx=d["num_idx"],
                quantize_c_noise=d["quantize_c_noise"],
            ),
            guidance=_untyped(data["guidance"], _guidance, Guidance),
            options={k: _from_json(v) for k, v in data.get("options", {}).items()},
            skip_unit_cfg=bool(data.get("skip_unit_cfg", False)),
            cache=None if data.get("cache") is None else CacheConfig.from_dict(data["cache"]),
            context=None if data.get("context") is None else ContextWindows(**data["context"]),
            guider=None if data.get("guider") is None else _untyped(data["guider"], _guiders, Guider),
        )


def _jsonable(v: Any) -> Any:
    """Non-finite floats as the strings "inf", "-inf", "nan" (strict JSON has no such numbers)."""
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def _from_json(v: Any) -> Any:
    return float(v) if v in ("inf", "-inf", "nan") else v


def _typed(obj: Any) -> dict[str, Any]:
    """A dataclass as ``{"type": name, field: value, ...}``, nested dataclasses typed the same way."""

    def value(v: Any) -> Any:
        return _typed(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else _jsonable(v)

    return {"type": type(obj).__name__, **{f.name: value(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}


def _untyped(data: Mapping[str, Any], module: Any, base: type) -> Any:
    kind = data.get("type")
    cls = getattr(module, str(kind), None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"unknown {base.__name__} type {kind!r}")
    kwargs = {k: _nested(v) if isinstance(v, Mapping) else _from_json(v) for k, v in data.items() if k != "type"}
    return cls(**kwargs)


def _nested(data: Mapping[str, Any]) -> Any:
    """A typed dict inside another (a SpacedDDPM's base, a GuidanceInterval's guidance)."""
    for module, base in ((_schedules, Schedule), (_guidance, Guidance), (_scalings, Scaling)):
        if isinstance(getattr(module, str(data.get("type")), None), type):
            return _untyped(data, module, base)
    raise ValueError(f"unknown nested type {data.get('type')!r}")


#: CogVideoX-5B / 1.5-5B's shipped sampler (``cogvideox_5b.yaml``).
COGVIDEOX_5B = SamplingConfig()


def check_combination(config: SamplingConfig, grid: Grid) -> None:
    """Raise ``ValueError`` for a sampler / schedule / scaling / guidance combination that cannot work."""
    spec, scaling, d = config.spec, config.denoiser.scaling, config.denoiser
    starts_at_zero_alpha = grid.space == "alpha" and float(grid.values[0]) == 0.0
    if starts_at_zero_alpha and spec.space == "sigma":
        raise ValueError(
            f"sampler {spec.name!r} works in sigma space and cannot start from alpha=0 (infinite sigma), "
            f"the first level of {type(config.schedule).__name__}: use an alpha-space sampler "
            "(vpsde_dpmpp_2m, vpode_dpmpp_2m, video_ddim, video_ddpm)"
        )
    if starts_at_zero_alpha and scaling.space == "sigma":
        raise ValueError(
            f"scaling {type(scaling).__name__} works in sigma space and cannot be evaluated at alpha=0, "
            f"the first level of {type(config.schedule).__name__}: use VideoScaling"
        )
    if spec.consumes != "x0":
        _check_raw_prediction(config, grid)
    elif scaling.uses_timestep and d.table is None:
        off_grid = spec.calls_per_step > 1
        if grid.timesteps is None or off_grid:
            raise ValueError(
                f"scaling {type(scaling).__name__} feeds the network a DDPM timestep: with sampler "
                f"{spec.name!r} and schedule {type(config.schedule).__name__} it needs a denoiser table "
                "to find one (set DenoiserConfig.table)"
            )
    guidance_scales(config.guidance, grid.timesteps, grid.num_steps, grid.requested_steps)


def check_perturbation(config: SamplingConfig, blocks: int | None, network: str) -> None:
    """``ValueError`` where ``config``'s guidance rule makes perturbed calls (PAG, SLG) that
    ``network`` (named in the message), with ``blocks`` transformer blocks (None: none), cannot make."""
    g = config.guider
    if g is None or g.perturbation is None:
        return
    what = "self-attention maps" if g.perturbation.kind == "attention" else "blocks"
    if blocks is None:
        raise ValueError(
            f"--guidance {g.name} perturbs a transformer's {what}, and {network} has no transformer blocks: "
            "use a CogVideoX folder or the trained built-in model (builtin-trained)"
        )
    if config.cache is not None:
        raise ValueError(
            f"--guidance {g.name} with --cache {config.cache.kind}: a step cache reuses earlier calls' work, and "
            "the perturbed calls would reuse (and feed) the unperturbed ones'; drop one of them"
        )
    try:
        g.perturbation.indices(blocks)
    except ValueError as e:
        raise ValueError(f"--guidance {g.name}: {e} ({network})") from None


def _check_raw_prediction(config: SamplingConfig, grid: Grid) -> None:
    """A sampler that consumes the raw network output (v) needs the network to see x itself
    (c_in = 1) and the grid's own timesteps: VideoScaling, no table, a schedule with timesteps."""
    spec, d = config.spec, config.denoiser
    if not isinstance(d.scaling, VideoScaling):
        raise ValueError(
            f"sampler {spec.name!r} consumes the network's raw {spec.consumes} prediction, which needs a scaling "
            f"with c_in = 1 and v output (VideoScaling), got scaling {type(d.scaling).__name__}"
        )
    if d.table is not None:
        raise ValueError(
            f"sampler {spec.name!r} consumes the network's raw {spec.consumes} prediction at the grid's own levels "
            f"and timesteps: set DenoiserConfig.table=None, got table={d.table!r}"
        )
    if grid.timesteps is None:
        raise ValueError(
            f"sampler {spec.name!r} feeds the network the grid's DDPM timesteps, and schedule "
            f"{type(config.schedule).__name__} has none: use a DDPM schedule (DiffusersDDPM, ZeroSNRDDPM)"
        )


def validate_inputs(x: Tensor, cond: Conditioning) -> None:
    """Shapes, batch sizes and finiteness of everything sampling consumes."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"latent x must be a floating tensor of shape (B, T, C, H, W), got {shape}")
    b = x.shape[0]
    ctx = cond.context
    if not isinstance(ctx, torch.Tensor) or ctx.ndim != 3:
        raise ValueError(f"context must be a tensor of shape (B, L, D), got {getattr(ctx, 'shape', ctx)!r}")
    if ctx.shape[0] != b:
        raise ValueError(f"context batch {ctx.shape[0]} does not match latent batch {b}")
    if cond.uncond_context is not None and tuple(cond.uncond_context.shape) != tuple(ctx.shape):
        raise ValueError(
            f"uncond_context must have the context's shape {tuple(ctx.shape)}, got {tuple(cond.uncond_context.shape)}"
        )
    img = cond.image_latents
    if img is not None:
        if not isinstance(img, torch.Tensor) or img.ndim != 5:
            raise ValueError(f"image_latents must be a tensor (B, T, C, H, W), got {getattr(img, 'shape', img)!r}")
        if img.shape[0] != b:
            raise ValueError(f"image_latents batch {img.shape[0]} does not match latent batch {b}")
        want = (x.shape[1], x.shape[3], x.shape[4])
        got = (img.shape[1], img.shape[3], img.shape[4])
        if got != want:
            raise ValueError(
                f"image_latents must be (B, T, C, H, W) with T, H, W = {want} like the latent, got shape "
                f"{tuple(img.shape)}"
            )
    if not bool(torch.isfinite(x).all()):
        raise ValueError("latent x contains NaN or inf: the initial noise must be finite")


def sample(
    network: Network,
    x: Tensor,
    cond: Conditioning,
    config: SamplingConfig | None = None,
    *,
    noise: NoiseSource | None = None,
    callback: Callback = None,
    image: Tensor | None = None,
    branches: Any = None,
    keyframes: Keyframes | None = None,
) -> Tensor:
    """Denoise unit-variance noise ``x (B, T, C, H, W)`` into latents with ``network``.

    ``noise`` supplies the in-loop draws of stochastic samplers (default: torch's global RNG, as
    the reference; :class:`~cogsample.sampling.noise.DiffusersNoise` for diffusers' generator stream);
    ``image`` is the clean latent an SDEdit sampler edits; ``branches``: where the CFG branches run
    (:class:`~cogsample.sampling.parallel.CFGParallel` on two ranks; None: one batch); ``keyframes``:
    latent frames held to given clean latents (:mod:`cogsample.sampling.keyframes`). Returns
    latents of x's shape (float32 for the SAT alpha-space samplers, x's dtype for diffusers').
    """
    config = config or SamplingConfig()
    model, grid = build_model(network, x, cond, config, branches=branches, keyframes=keyframes)
    spec = config.spec
    extra: dict[str, Any] = {}
    if "image" in spec.needs:
        if image is None:
            raise ValueError(f"sampler {spec.name!r} edits a clean latent: pass image=")
        extra["image"] = image
    try:
        out = spec.fn(model, x, grid, noise or GlobalNoise(), callback=callback, **config.options, **extra)
        return out if keyframes is None else keyframes.finish(out)
    finally:
        release(model)


def build_model(
    network: Network,
    x: Tensor,
    cond: Conditioning,
    config: SamplingConfig,
    *,
    branches: Any = None,
    keyframes: Keyframes | None = None,
) -> tuple[GuidedModel, Grid]:
    """Validate everything, then wrap ``network`` into the ``model(x, level)`` the sampler calls:
    x0, or the guided raw network output for samplers that consume it (``spec.consumes``).
    With ``config.cache`` the network goes behind a step cache: call :func:`release` after
    sampling (a transformer's cache hooks stay on it until then; they sit below any windows). ``branches``: where the
    CFG branches run (:class:`~cogsample.sampling.guidance.GuidedModel`). With ``config.context`` the
    network runs on context windows (:class:`~cogsample.sampling.context_windows.WindowedNetwork`, below
    any output cache, which then sees the blended output). With ``keyframes`` the guided model goes
    inside a :class:`~cogsample.sampling.keyframes.KeyframedModel` (above guidance; the noise it holds
    the frames with is ``x``'s own): pass the sampler's result through ``keyframes.finish``."""
    validate_inputs(x, cond)
    if keyframes is not None:
        keyframes.check(x)
    grid = config.grid()
    check_combination(config, grid)
    if config.guider is not None:
        config.guider.check(tuple(x.shape))
        check_perturbation(config, getattr(network, "perturbable_blocks", None), f"network {type(network).__name__}")
    windows, cache = 1, None
    if config.cache is not None and config.cache.kind != "output":
        # a cache inside the transformer sits below the windows: one cache context per window
        cache = network = apply_cache(network, config.cache, calls=grid.num_steps * config.spec.calls_per_step)
    if config.context is not None:
        windows = config.context.count(x.shape[1])
        network = WindowedNetwork(network, config.context)
    if config.cache is not None and config.cache.kind == "output":
        cache = network = apply_cache(network, config.cache)
    model = GuidedModel(
        Denoiser(network, config.denoiser, device=x.device),
        config.guidance,
        cond,
        num_steps=grid.num_steps,
        timesteps=grid.timesteps,
        prediction_dtype=config.spec.prediction_dtype,
        requested_steps=grid.requested_steps,
        output=config.spec.consumes,
        skip_unit_scale=config.skip_unit_cfg,
        branches=branches,
        windows=windows,
        guider=config.guider,
    )
    model.owned_cache = cache
    if keyframes is not None:
        return keyframes.wrap(model, x, config.spec.consumes), grid  # type: ignore[return-value]
    return model, grid


def release(model: GuidedModel) -> None:
    """Undo what :func:`build_model` attached to the network (the step cache it made, if any;
    a cache the caller applied is left alone)."""
    cache = getattr(model, "owned_cache", None)
    if cache is not None:
        cache.detach()
