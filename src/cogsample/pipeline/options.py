"""What a request may ask for (:class:`GenerateOptions`) and how each option resolves: the
device, the dtype, the sampling config (a SAT yaml or the profile's default, ``--sampler`` /
``--guidance`` / ``--steps`` on top), ``--fast`` and the forward-saving options.

Two reproduction profiles:

* ``sat`` (default): the SAT reference's sampling, bit for bit (ZeroSNR DDPM with the folder's
  shift, table snapping, CFG on x0, torch's global RNG seeded with ``seed``); unconditional
  branch: a zero text embedding.
* ``diffusers``: diffusers' ``CogVideoXPipeline`` / ``CogVideoXImageToVideoPipeline`` loop with
  the folder's scheduler, bit for bit given the same transformer and generator; unconditional
  branch: the encoded negative prompt (default ``""``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .. import models
from ..models import EXACT, ModelInfo
from ..sampling.config import SamplingConfig
from ..sampling.denoiser import DenoiserConfig
from ..sampling.guidance import CFG, DynamicCFG, Guidance, GuidanceInterval, LevelGuidance, NoGuidance
from ..sampling.guiders import GUIDERS, Guider, make_guider, parse_guidance_text
from ..sampling.samplers import get_sampler
from ..sampling.scalings import VideoScaling
from ..sampling.schedules import SpacedDDPM, ZeroSNRDDPM

Profile = Literal["sat", "diffusers"]
Uncond = Literal["zero", "negative-prompt"]

__all__ = [
    "FAST",
    "PROCESS_OPTIONS",
    "REFERENCE_STEPS",
    "GenerateOptions",
    "apply_speedups",
    "check_choice",
    "check_scale",
    "fast_options",
    "inspect_model",
    "level_guidance",
    "parse_guidance",
    "resolve_device",
    "resolve_dtype",
    "resolve_sampling",
]

PROFILES = ("sat", "diffusers")
GRIDS = ("reference", "logsnr", "power", "uniform")
CFG_INDEX = ("reference", "loop", "level")
#: The step count whose DynamicCFG scales ``--cfg-index level`` carries to other grids (every SAT config's).
REFERENCE_STEPS = 50
#: ``--cache-kind`` (with a threshold number): the kinds whose first setting is a threshold
CACHE_KINDS = ("output", "first-block", "mag", "sea")
OFFLOAD = ("none", "model", "sequential")
VAE_TILING = ("auto", "on", "off")
#: How each profile's source turns a [0, 1] float video into uint8 (both in float32 here): SAT's
#: ``sample_video.py`` truncates ``255 x``; diffusers' ``numpy_to_pil`` rounds it.
UINT8 = {"sat": "truncate", "diffusers": "round"}
GUIDANCE = ("none", "cfg", "dynamic")
#: ``--guidance RULE[:key=value,...]``: diffusers' combine rules (:mod:`cogsample.sampling.guiders`)
GUIDANCE_RULES = tuple(GUIDERS)
#: a rule's scale schedule: DynamicCFG's ramp (as ``dynamic``) or a constant scale (as ``cfg``)
RULE_SCHEDULES = {"dynamic": "dynamic", "constant": "cfg"}
CONTEXT = ("auto", "off")
#: The default ``context_overlap``: this share of a window's latent frames (rounded, at least 1);
#: measured by ``cogsample bench --sections long_video`` (docs/long-videos.md).
CONTEXT_OVERLAP_SHARE = 1 / 3
UNCOND = ("zero", "negative-prompt")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
#: DynamicCFG's exponent in every released CogVideoX config and in diffusers.
DYNAMIC_CFG_EXP = 5.0


@dataclass(frozen=True)
class GenerateOptions:
    """One ``cogsample generate`` request. ``None`` means "the model's or profile's default"."""

    prompts: tuple[str, ...]
    model: str = "builtin"
    negative_prompt: str | None = None
    uncond: Uncond | None = None
    image: str | None = None
    #: keyframes held while sampling (:mod:`cogsample.pipeline.keyframes`): the video's last frame, and
    #: any frames as ``{FRAME: PATH or image}`` or ``("FRAME=PATH", ...)``
    last_image: Any = None
    keyframes: Any = None
    #: video to video (:mod:`cogsample.pipeline.video2video`): a video file (or a list of PIL
    #: images) whose first ``frames`` frames are noised to ``strength`` in (0, 1] (None: 0.8)
    video: Any = None
    strength: float | None = None
    #: video frames (4k + 1), or ``"<n>x"``: n times the model's native latent length
    frames: int | str | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None  # None: a --sampler-config yaml's own counts, else 50
    sampler: str | None = None
    guidance: str = "dynamic"
    scale: float = 6.0
    sampler_config: str | None = None
    profile: Profile = "sat"
    seed: int = 42
    out: str = "outputs"
    dtype: str | None = None
    device: str | None = None
    fps: int | None = None
    #: forward-saving options (all off by default; see ``cogsample bench``)
    grid: str = "reference"
    cfg_index: str = "reference"
    cfg_interval: tuple[float, float] | None = None
    skip_unit_cfg: bool = False
    #: a step cache, ``"KIND[:key=value,...]"`` (:data:`cogsample.models.hook_caches.KINDS`), or a
    #: threshold number of ``cache_kind`` (output on the exact model, first-block on a transformer)
    cache: float | str | None = None
    cache_kind: str | None = None
    offload: str = "none"
    #: LoRA adapters (:mod:`cogsample.models.lora`): ``(path, weight)`` pairs, or ``"PATH[:WEIGHT]"``
    #: texts; ``lora_fuse``: merged into the weights once for the whole process
    lora: Any = ()
    lora_fuse: bool = False
    #: the transformer's Linear weights quantized by torchao (:data:`cogsample.models.quantize.QUANTIZE`)
    quantize: str = "none"
    #: decoding and the start: VAE tiling (auto: only when an untiled decode would not fit), and a
    #: file holding the initial noise (instead of drawing it)
    vae_tiling: str = "auto"
    initial_noise: str | None = None
    #: the row of a multi-row ``initial_noise`` that video 0 starts from (video k: row + k); None:
    #: video k takes row k (a file with one row per video) or row 0 (a one-row file)
    initial_noise_row: int | None = None
    #: temporal context windows (:mod:`cogsample.sampling.context_windows`): ``auto`` samples a latent
    #: longer than a window in windows (of the model's native latent length unless
    #: ``context_frames`` says; the built-in exact model only when asked), ``off`` the whole length
    #: at once; ``noise_repeat``: FreeNoise-style noise over the windows (the initial latent and
    #: every in-loop draw, :class:`~cogsample.sampling.context_windows.RepeatedNoise`)
    context: str = "auto"
    context_frames: int | None = None
    context_overlap: int | None = None
    noise_repeat: bool = False


#: What a process fixes for all its videos (one loaded model); everything else may vary per video.
PROCESS_OPTIONS = ("model", "device", "dtype", "offload", "quantize", "lora_fuse", "profile", "out")


def inspect_model(model: str) -> ModelInfo:
    """The model's :class:`ModelInfo` from its configs alone (no weights): :func:`cogsample.models.inspect`."""
    return models.inspect(model)


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device, info: ModelInfo, builtin: bool) -> torch.dtype:
    if dtype is None:
        # what the released weights run in on a GPU (fp16 for 2B); a CPU and the exact model want float32
        return DTYPES[info.accelerator_dtype] if device.type == "cuda" and not builtin else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def check_scale(scale: Any) -> None:
    """``ValueError`` unless ``scale`` is a guidance scale: a finite number >= 0 (0 and 1 are the
    edges: one branch alone; below 0 guidance would push away from the prompt)."""
    ok = not isinstance(scale, bool) and isinstance(scale, (int, float)) and math.isfinite(scale) and scale >= 0
    if not ok:
        raise ValueError(f"--scale must be a finite number >= 0 (the guidance scale), got {scale!r}")


def parse_guidance(text: Any) -> tuple[str, Guider | None]:
    """``--guidance``: ``none``, ``cfg``, ``dynamic``, or a combine rule ``RULE[:key=value,...]``
    (:data:`GUIDANCE_RULES`, docs/guiders.md) -> ``(scale schedule, rule)``. A rule's scales are
    DynamicCFG's unless ``schedule=constant``; ``ValueError`` naming the rule, key or value."""
    name, params = parse_guidance_text(text)
    if name in GUIDANCE:
        if params:
            raise ValueError(f"--guidance {name} takes no parameters, got {text!r} (parameters go with a rule)")
        return name, None
    if name not in GUIDERS:
        raise ValueError(
            f"guidance must be one of {', '.join(GUIDANCE)}; got {text!r} (or a combine rule RULE[:key=value,...] "
            f"with RULE one of {', '.join(GUIDANCE_RULES)})"
        )
    schedule = params.pop("schedule", "dynamic")
    if schedule not in RULE_SCHEDULES:
        raise ValueError(f"--guidance {name}: schedule must be dynamic or constant, got {schedule!r}")
    return RULE_SCHEDULES[schedule], make_guider(name, params, also=("schedule",))


def _guidance(kind: str, scale: float, steps: int) -> Guidance:
    if kind == "none":
        return NoGuidance()
    check_scale(scale)
    if kind == "cfg":
        return CFG(scale)
    return DynamicCFG(scale, DYNAMIC_CFG_EXP, steps)


def _scheduler_config(info: ModelInfo) -> dict[str, Any]:
    """The folder's scheduler config; the built-in model takes CogVideoX-5B's."""
    if info.scheduler is not None:
        return dict(info.scheduler)
    from ..reference.profiles import COGVIDEOX_5B_SCHEDULER

    return dict(COGVIDEOX_5B_SCHEDULER)


def resolve_sampling(opts: GenerateOptions, info: ModelInfo) -> SamplingConfig:
    """The sampling config a request asks for: a SAT yaml, or the profile's default for the model,
    with ``--sampler`` / ``--guidance`` / ``--steps`` applied on top.

    One rule for the step count, with or without a yaml: a given ``steps`` sets both the sampler's
    steps and DynamicCFG's ``num_steps`` (:func:`~cogsample.reference.satconfig.from_sat`), also for a
    guidance rebuilt from ``--guidance`` / ``--scale`` on top of a yaml; ``steps=None`` takes a
    yaml exactly as written (its sampler's and its guider's counts, even where they differ, as SAT
    users change steps), and 50 steps without a yaml. A combine rule (``--guidance apg``, ...) goes
    on top of its scale schedule's config (``SamplingConfig.guider``)."""
    kind, guider = parse_guidance(opts.guidance)
    if guider is not None:
        base = resolve_sampling(dataclasses.replace(opts, guidance=kind), info)
        return dataclasses.replace(base, guider=guider)
    steps = opts.steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if opts.sampler is not None and opts.profile == "diffusers":
        from ..reference.profiles import DIFFUSERS_SAMPLERS

        allowed = sorted(set(DIFFUSERS_SAMPLERS.values()))
        if opts.sampler not in allowed:
            raise ValueError(
                f"--sampler {opts.sampler!r} is not in the diffusers profile, which reproduces diffusers' "
                f"schedulers only: use one of {', '.join(allowed)} (or --profile sat for every sampler)"
            )
    if opts.sampler is not None:
        get_sampler(opts.sampler)  # names the allowed samplers when unknown
    check_scale(opts.scale)  # whatever the guidance: a value given is never ignored unchecked
    if opts.sampler_config is not None:
        if opts.profile != "sat":
            raise ValueError("--sampler-config is a SAT yaml: it goes with --profile sat")
        from ..reference.satconfig import load_sat_yaml

        cfg = load_sat_yaml(opts.sampler_config, steps=steps)
        changes: dict[str, Any] = {}
        if opts.sampler is not None:
            changes["sampler"] = opts.sampler
            changes["options"] = {}
        if opts.guidance != "dynamic" or opts.scale != 6.0:
            own = cfg.guidance
            if opts.guidance == "dynamic" and isinstance(own, DynamicCFG):
                # the yaml's ramp (its exponent; its length, already by the step rule) at the new scale
                changes["guidance"] = dataclasses.replace(own, scale=opts.scale)
            else:
                ramp = own.num_steps if isinstance(own, DynamicCFG) else cfg.steps
                changes["guidance"] = _guidance(opts.guidance, opts.scale, ramp)
        return dataclasses.replace(cfg, **changes) if changes else cfg
    steps = 50 if steps is None else steps
    sched = _scheduler_config(info)
    if opts.profile == "diffusers":
        from ..reference.profiles import diffusers_sampling

        cfg = diffusers_sampling(
            sched,
            steps=steps,
            guidance_scale=1.0 if opts.guidance == "none" else opts.scale,
            use_dynamic_cfg=opts.guidance == "dynamic",
        )
        if opts.sampler is not None and opts.sampler != cfg.sampler:
            cfg = dataclasses.replace(cfg, sampler=opts.sampler, options={})
        return cfg
    shift = float(sched.get("snr_shift_scale", 1.0))
    schedule = ZeroSNRDDPM(shift)
    return SamplingConfig(
        sampler=opts.sampler or "vpsde_dpmpp_2m",
        steps=steps,
        schedule=schedule,
        denoiser=DenoiserConfig(VideoScaling(), table=schedule),
        guidance=_guidance(opts.guidance, opts.scale, steps),
    )


#: ``--fast``: chosen by rule in ``cogsample bench --sections presets`` (docs/bench.md#fast): the
#: reference's guidance definition (``--cfg-index level``: its 50 DynamicCFG scales carried by noise
#: level), the cheapest sampler, grid and step count whose distance from that definition's converged
#: limit is no larger than the reference default's own on the exact built-in, the trained and the
#: held-out family model at both seed sets (and at every costlier step count), and which keeps the
#: caption's attributes on the trained model as the reference default does. Measured: 20 steps on
#: the exact built-in model, 16 on the trained one, 10 on the held-out one; 20 is the largest.
FAST: dict[str, Any] = {
    "sampler": "dpmpp_2m",
    "grid": "logsnr",
    "cfg_index": "level",
    "steps": 20,
}
#: What ``--fast`` was measured on, for ``--help``.
FAST_MEASURED = (
    "no farther from that guidance's converged limit than the reference default, measured on the exact built-in, "
    "the trained and a held-out exact model at two seed sets each, keeping the trained model's prompt adherence "
    "(docs/bench.md#fast)"
)


def fast_options(opts: GenerateOptions, steps_given: bool = False) -> GenerateOptions:
    """``opts`` with the :data:`FAST` settings (its own step count kept when ``steps_given``, its
    own sampler when it names one)."""
    if opts.profile != "sat":
        raise ValueError(
            f"--fast is the sat profile's measured setup (its sampler, grid and guidance index); it does not go "
            f"with --profile {opts.profile}"
        )
    fast = {k: v for k, v in FAST.items() if not ((k == "steps" and steps_given) or (k == "sampler" and opts.sampler))}
    return dataclasses.replace(opts, **fast)


def level_guidance(guidance: DynamicCFG, schedule: Any, profile: str) -> LevelGuidance:
    """``--cfg-index level``: the reference's :data:`REFERENCE_STEPS` shipped DynamicCFG scales on
    its trailing grid, carried to any grid by noise level (:class:`LevelGuidance`)."""
    if profile != "sat" or not isinstance(schedule, ZeroSNRDDPM):
        raise ValueError(
            f"cfg_index 'level' carries the SAT reference's DynamicCFG scales by ZeroSNR DDPM timestep: it goes with "
            f"--profile sat (got profile {profile!r}, schedule {type(schedule).__name__})"
        )
    anchor = schedule.grid(REFERENCE_STEPS).timesteps
    base = dataclasses.replace(guidance, num_steps=REFERENCE_STEPS, step_index="reference")
    return LevelGuidance(base, anchor, table=schedule)


def apply_speedups(cfg: SamplingConfig, opts: GenerateOptions, info: ModelInfo) -> SamplingConfig:
    """``--grid``, ``--cfg-index``, ``--cfg-interval``, ``--skip-unit-cfg`` and ``--cache`` on top of
    a resolved config (each a no-op at its default)."""
    check_choice("grid", opts.grid, GRIDS)
    check_choice("cfg_index", opts.cfg_index, CFG_INDEX)
    changes: dict[str, Any] = {}
    if opts.grid != "reference":
        if opts.profile != "sat" or not isinstance(cfg.schedule, ZeroSNRDDPM):
            raise ValueError(
                f"grid {opts.grid!r} re-spaces the SAT ZeroSNR DDPM table: it goes with --profile sat "
                f"(got profile {opts.profile!r}, schedule {type(cfg.schedule).__name__})"
            )
        top = cfg.schedule.num_timesteps - 1
        # sigma-space samplers cannot start from the zero-SNR level (infinite sigma)
        t_max = top - 1 if cfg.spec.space == "sigma" else None
        changes["schedule"] = SpacedDDPM(cfg.schedule, opts.grid, t_max=t_max)
    guidance = cfg.guidance
    if opts.cfg_index == "loop" and isinstance(guidance, DynamicCFG):
        guidance = dataclasses.replace(guidance, step_index="loop")
    if opts.cfg_index == "level" and isinstance(guidance, DynamicCFG):
        guidance = level_guidance(guidance, cfg.schedule, opts.profile)
    if opts.cfg_interval is not None:
        start, end = opts.cfg_interval
        if not isinstance(guidance, NoGuidance):
            guidance = GuidanceInterval(guidance, start, end)
    if guidance is not cfg.guidance:
        changes["guidance"] = guidance
    if opts.skip_unit_cfg:
        changes["skip_unit_cfg"] = True
    if opts.cache is not None:
        if opts.cache_kind is not None:
            check_choice("cache_kind", opts.cache_kind, CACHE_KINDS)
        changes["cache"] = models.parse_cache(opts.cache, opts.model, opts.cache_kind, exact=opts.model in EXACT)
    return dataclasses.replace(cfg, **changes) if changes else cfg
