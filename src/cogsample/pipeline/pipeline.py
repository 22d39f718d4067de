"""Prompt (and image) to video, in memory: encode -> sample -> decode. Orchestration only, no math; it writes nothing.

:func:`plan` checks a request completely and cheaply (model folder, sizes, image, output
directory, sampler combination) before any weight is loaded; :func:`generate` then runs it.

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import torch

from .. import models
from ..models import BUILTIN as BUILTIN  # the built-in model names, re-exported (they live in the registry)
from ..models import EXACT, ModelInfo, VideoModel
from ..models.images import image_to_tensor, load_image, resize_image_for_i2v
from ..sampling.cache import CacheConfig
from ..sampling.config import SamplingConfig, build_model, check_combination, release
from ..sampling.context_windows import ContextWindows, RepeatedNoise
from ..sampling.denoiser import DenoiserConfig
from ..sampling.guidance import CFG, Conditioning, DynamicCFG, Guidance, GuidanceInterval, NoGuidance
from ..sampling.noise import GlobalNoise, NoiseSource, latent_shape
from ..sampling.samplers import get_sampler
from ..sampling.scalings import VideoScaling
from ..sampling.schedules import SpacedDDPM, ZeroSNRDDPM
from .events import PrepareEvent, StepEvent

Tensor = torch.Tensor
Profile = Literal["sat", "diffusers"]
Uncond = Literal["zero", "negative-prompt"]

__all__ = [
    "GenerateOptions",
    "Pipeline",
    "Plan",
    "PrepareEvent",
    "StepEvent",
    "VideoResult",
    "check_parallel",
    "plan",
    "to_uint8",
]

PROFILES = ("sat", "diffusers")
GRIDS = ("reference", "logsnr", "power", "uniform")
CFG_INDEX = ("reference", "loop")
CACHE_KINDS = ("output", "first-block")
OFFLOAD = ("none", "model", "sequential")
VAE_TILING = ("auto", "on", "off")
#: How each profile's source turns a [0, 1] float video into uint8 (both in float32 here): SAT's
#: ``sample_video.py`` truncates ``255 x``; diffusers' ``numpy_to_pil`` rounds it.
UINT8 = {"sat": "truncate", "diffusers": "round"}
#: ``--vae-tiling auto`` decodes untiled when the estimated need is at most this share of the free memory.
AUTO_TILING_MARGIN = 0.9
GUIDANCE = ("none", "cfg", "dynamic")
CONTEXT = ("auto", "off")
#: The default ``context_overlap``: this share of a window's latent frames (rounded, at least 1);
#: measured by ``cogsample bench --sections long_video`` (see the README).
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
    cache: float | None = None
    cache_kind: str | None = None
    offload: str = "none"
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
PROCESS_OPTIONS = ("model", "device", "dtype", "offload", "profile", "out")


@dataclass
class Plan:
    """A checked request: everything resolved, nothing loaded."""

    options: GenerateOptions
    info: ModelInfo
    frames: int
    height: int
    width: int
    shape: tuple[int, int, int, int, int]  # the sampled latent, padded for patch_size_t
    pad_frames: int  # leading latent frames dropped before decoding (CogVideoX 1.5)
    sampling: SamplingConfig
    uncond: Uncond
    negative_prompt: str | None
    dtype: torch.dtype
    device: torch.device
    out: Path
    fps: int
    image: Any = None  # PIL image, resized, for I2V
    text_len: int = 226  # prompt tokens the profile encodes for this model
    initial_noise: Tensor | None = None  # (B, T, C, H, W), B = 1 or one row per video, on the CPU
    warnings: list[str] = field(default_factory=list)

    @property
    def windows(self) -> ContextWindows | None:
        """The context windows the latent is sampled in (None: the network sees it whole)."""
        return self.sampling.context

    @property
    def forwards_per_call(self) -> int:
        """Network calls per branch per denoiser call: the number of context windows."""
        return 1 if self.windows is None else self.windows.count(self.shape[1])

    def noise_row(self, k: int) -> int:
        """The row of the ``--initial-noise`` file that video ``k`` starts from."""
        if self.initial_noise is not None and self.initial_noise.shape[0] == 1:
            return 0  # a one-row file: every video starts from it
        if self.options.initial_noise_row is not None:
            return self.options.initial_noise_row + k
        return k if self.initial_noise is not None and self.initial_noise.shape[0] > 1 else 0


# ----------------------------------------------------------------------------------------------
# planning: every check before any weight is read


def _is_builtin(model: str) -> bool:
    return models.is_builtin(model)


def inspect_model(model: str) -> ModelInfo:
    """The model's :class:`ModelInfo` from its configs alone (no weights): :func:`cogsample.models.inspect`."""
    return models.inspect(model)


def _check_choice(name: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _resolve_device(device: str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
    return dev


def _resolve_dtype(dtype: str | None, device: torch.device, info: ModelInfo, builtin: bool) -> torch.dtype:
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
    users change steps), and 50 steps without a yaml."""
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


#: ``--fast``: measured in ``cogsample bench`` (see the README). On the exact models (built-in and
#: held out) it matches the reference default at both noise seeds from 8 steps on; 12 steps (19
#: forwards) leaves a margin (an independent exact model needed 10). On the trained model nothing
#: cheaper than the reference matched it at both seeds: this is faster, not a proven equal, there.
FAST: dict[str, Any] = {
    "sampler": "vpode_dpmpp_2m",
    "grid": "logsnr",
    "cfg_index": "loop",
    "cfg_interval": (0.4, 1.0),
    "skip_unit_cfg": True,
    "steps": 12,
}


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


def apply_speedups(cfg: SamplingConfig, opts: GenerateOptions, info: ModelInfo) -> SamplingConfig:
    """``--grid``, ``--cfg-index``, ``--cfg-interval``, ``--skip-unit-cfg`` and ``--cache`` on top of
    a resolved config (each a no-op at its default)."""
    _check_choice("grid", opts.grid, GRIDS)
    _check_choice("cfg_index", opts.cfg_index, CFG_INDEX)
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
    if opts.cfg_interval is not None:
        start, end = opts.cfg_interval
        if not isinstance(guidance, NoGuidance):
            guidance = GuidanceInterval(guidance, start, end)
    if guidance is not cfg.guidance:
        changes["guidance"] = guidance
    if opts.skip_unit_cfg:
        changes["skip_unit_cfg"] = True
    if opts.cache is not None:
        kind = opts.cache_kind or ("output" if opts.model in EXACT else "first-block")
        _check_choice("cache_kind", kind, CACHE_KINDS)
        if kind == "first-block" and opts.model in EXACT:
            raise ValueError(
                "cache_kind 'first-block' caches a CogVideoX transformer's blocks: use 'output' with the built-in model"
            )
        changes["cache"] = CacheConfig(opts.cache, kind)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _prepare_image(image: Any, opts: GenerateOptions, height: int, width: int, short_side: int | None):
    """The I2V first frame at ``height x width``, as each profile prepares it (``short_side``: the
    size came from the image, :meth:`ModelInfo.size_for_image`)."""
    if opts.profile == "diffusers":
        from diffusers.video_processor import VideoProcessor

        # diffusers' own preprocessing (a plain resize to the size), so the profile sees its pixels
        return VideoProcessor(vae_scale_factor=8).preprocess(image, height=height, width=width)
    # the reference: 1.5 scales the short side to 768 px; otherwise cover-resize and centre-crop
    if short_side is not None:
        return resize_image_for_i2v(image, short_side=short_side)
    return resize_image_for_i2v(image, height, width)


def plan(opts: GenerateOptions, *, memory: bool = True, noise_rows: int | None = None) -> Plan:
    """Check everything about ``opts`` and resolve its defaults; raises ``ValueError`` naming the
    parameter, the value and what is allowed. Reads configs and the image, never weights.

    ``memory``: also refuse a video that cannot fit in the device's available memory
    (:func:`cogsample.pipeline.cost.check_memory`; off where another process will run it, as a Ray
    driver's plans). ``noise_rows``: the videos of the batch that share ``initial_noise`` (one row
    each), for the expected shape an error states (default: what ``initial_noise_row`` says)."""
    prompts = tuple(opts.prompts)
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) or --prompts-file FILE")
    for k, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {k + 1} is empty")
    _check_choice("profile", opts.profile, PROFILES)
    _check_choice("guidance", opts.guidance, GUIDANCE)
    if opts.uncond is not None:
        _check_choice("uncond", opts.uncond, UNCOND)
    if isinstance(opts.seed, bool) or not isinstance(opts.seed, int) or not 0 <= opts.seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {opts.seed!r}")
    if opts.fps is not None and (not isinstance(opts.fps, int) or opts.fps < 1):
        raise ValueError(f"fps must be an integer >= 1, got {opts.fps!r}")

    _check_choice("vae_tiling", opts.vae_tiling, VAE_TILING)
    device = _resolve_device(opts.device)
    builtin = _is_builtin(opts.model)
    info = inspect_model(opts.model)
    models.check_installed(opts.model, opts.profile)  # the optional modules it needs, named with their extra
    dtype = _resolve_dtype(opts.dtype, device, info, builtin)

    if opts.image is not None and not info.i2v:
        hint = f" (use --model {opts.model}-i2v)" if builtin else ""
        raise ValueError(f"--image given, but model {info.name!r} is text-to-video{hint}")
    if opts.image is None and info.i2v:
        raise ValueError(f"model {info.name!r} is image-to-video: give --image PATH")
    image = load_image(opts.image) if opts.image is not None else None

    frames = resolve_frames(opts.frames, info)
    height, width = opts.height, opts.width
    # CogVideoX 1.5 I2V takes its size from the image, as the reference does
    from_image = None
    if image is not None and height is None and width is None:
        from_image = info.size_for_image(*image.size[::-1])
    if from_image is not None:
        height, width = from_image
    height = height if height is not None else info.height
    width = width if width is not None else info.width
    shape = latent_shape(1, frames, height, width, info.latent_channels)  # names the bad parameter
    pad = 0
    if info.patch_size_t:
        pad = (-shape[1]) % info.patch_size_t
        shape = (shape[0], shape[1] + pad, *shape[2:])
    windows = resolve_windows(opts, info, shape[1])
    # the model's own limits, from its configs alone (a fixed-size model: per window)
    info.check_size(frames, height, width, None if windows is None else windows.frames)

    uncond = opts.uncond or ("negative-prompt" if opts.profile == "diffusers" else "zero")
    if opts.negative_prompt is not None and opts.uncond is None:
        uncond = "negative-prompt"
    if uncond == "zero" and opts.negative_prompt is not None:
        raise ValueError("--negative-prompt with --uncond zero: the zero embedding ignores it; drop one of them")
    negative = None
    if uncond == "negative-prompt":
        negative = opts.negative_prompt if opts.negative_prompt is not None else ""

    sampling = apply_speedups(resolve_sampling(opts, info), opts, info)
    if windows is not None:
        sampling = dataclasses.replace(sampling, context=windows)  # refuses a first-block cache
    _check_choice("offload", opts.offload, OFFLOAD)
    if opts.offload != "none":
        if builtin:
            raise ValueError(f"offload {opts.offload!r} moves a CogVideoX model's parts; the built-in model has none")
        from ..models.offload import check_offload

        check_offload(opts.offload, device)
    check_combination(sampling, sampling.grid())
    if "image" in sampling.spec.needs:
        raise ValueError(f"sampler {sampling.sampler!r} edits a given clean latent (SDEdit); generate cannot run it")
    if image is not None:
        image = _prepare_image(image, opts, height, width, None if from_image is None else info.image_short_side)

    row = opts.initial_noise_row
    if row is not None and (isinstance(row, bool) or not isinstance(row, int) or row < 0):
        raise ValueError(f"initial_noise_row must be an integer >= 0, got {row!r}")
    if row is not None and opts.initial_noise is None:
        raise ValueError("initial_noise_row picks a row of --initial-noise, which is not given")
    initial = None
    if opts.initial_noise is not None:
        initial = load_initial_noise(opts.initial_noise, shape, len(prompts), first_row=row, rows=noise_rows)
    if not isinstance(opts.out, (str, Path)) or not str(opts.out):
        raise ValueError(f"out must be a directory path, got {opts.out!r}")
    fps = opts.fps or int(info.extra.get("fps", 8))
    p = Plan(
        options=dataclasses.replace(opts, prompts=prompts),
        info=info,
        frames=frames,
        height=height,
        width=width,
        shape=shape,
        pad_frames=pad,
        sampling=sampling,
        uncond=uncond,
        negative_prompt=negative,
        dtype=dtype,
        device=device,
        out=Path(opts.out),
        fps=fps,
        image=image,
        text_len=info.text_len(opts.profile),
        initial_noise=initial,
    )
    if memory:
        from .cost import check_memory

        check_memory(p)
    return p


def resolve_frames(frames: int | str | None, info: ModelInfo) -> int:
    """The video frames a request asks for: the model's native count (None), ``frames`` itself,
    or for ``"<n>x"`` the count whose latent is n times the native latent length
    (``4 (n T - 1) + 1``, T the native latent frames: 4x of 49 frames is 205, of 9 is 45)."""
    if frames is None:
        return info.frames
    if isinstance(frames, str):
        head = frames.strip().lower().removesuffix("x")
        if frames.strip().lower().endswith("x") and head.isdigit() and int(head) >= 1:
            native = (info.frames - 1) // 4 + 1
            return 4 * (int(head) * native - 1) + 1
        raise ValueError(
            f"frames must be an integer of the form 4k+1 or a multiple of the native length like '4x', got {frames!r}"
        )
    return frames


def default_overlap(frames: int) -> int:
    """``context_overlap`` when none is given: :data:`CONTEXT_OVERLAP_SHARE` of ``frames``
    latent frames, rounded, at least 1 and below ``frames`` (0 for one-frame windows)."""
    return min(frames - 1, max(1, round(frames * CONTEXT_OVERLAP_SHARE)))


def resolve_windows(opts: GenerateOptions, info: ModelInfo, length: int) -> ContextWindows | None:
    """The context windows a request samples its ``length``-frame latent in, or None.

    ``context="auto"``: windows of ``context_frames`` (default: the model's native latent length)
    when the latent is longer than one, for a model trained at its length
    (:attr:`ModelInfo.context_windows`) or when ``context_frames`` is given; ``"off"``: None.
    ``noise_repeat`` needs windows; ``context_frames`` / ``context_overlap`` need ``auto``."""
    _check_choice("context", opts.context, CONTEXT)
    if not isinstance(opts.noise_repeat, bool):
        raise ValueError(f"noise_repeat must be a bool, got {opts.noise_repeat!r}")
    given = [k for k in ("context_frames", "context_overlap") if getattr(opts, k) is not None]
    if opts.context == "off":
        if given or opts.noise_repeat:
            what = ", ".join([*given, *(["noise_repeat"] if opts.noise_repeat else [])])
            raise ValueError(f"{what} shape context windows, and context is 'off': drop one of them")
        return None
    frames = opts.context_frames if opts.context_frames is not None else info.native_latent_frames
    overlap = opts.context_overlap
    if overlap is None:
        overlap = default_overlap(frames) if isinstance(frames, int) and not isinstance(frames, bool) else 0
    windows = ContextWindows(frames, overlap)  # names a bad context_frames / context_overlap
    if length <= frames or not (info.context_windows or opts.context_frames is not None):
        if opts.context_overlap is not None:
            why = (
                f"model {info.name!r} is exact at any length: give --context-frames for windows"
                if length > frames
                else f"it fits one window of {frames}"
            )
            raise ValueError(
                f"--context-overlap {opts.context_overlap} has no effect: this latent of {length} frames is "
                f"sampled whole, in no context windows ({why}); drop it"
            )
        if opts.noise_repeat:
            raise ValueError(
                f"noise_repeat repeats the first context window's noise over the later ones; this latent of "
                f"{length} frames is sampled whole (windows of {frames} latent frames"
                + ("" if info.context_windows else f"; model {info.name!r} is exact at any length, give context_frames")
                + ")"
            )
        return None
    return windows


def load_initial_noise(
    path: str, shape: Sequence[int], videos: int, first_row: int | None = None, rows: int | None = None
) -> Tensor:
    """The initial noise in ``path`` (``.safetensors``: its one tensor, or the one named ``noise``;
    ``.pt``: a tensor, or such a mapping) as ``(B, T, C, H, W)`` float32 on the CPU, checked against
    the sampled latent ``shape`` ``(1, T, C, H, W)``: ``B`` is 1 (every video starts from it) or
    ``videos`` (video k from row k); with ``first_row`` r, video k takes row r + k of any ``B``
    that has it (or the one row of a one-row file). A ``(T, C, H, W)`` tensor counts as ``B = 1``.
    ``rows``: the videos of the whole batch, for the expected shape the error states."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"initial_noise {path!r} does not exist or is not a file")
    if p.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"initial_noise {path!r} must be a .safetensors or .pt file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(p))
        else:
            data = torch.load(p, map_location="cpu", weights_only=True)
    except OSError as e:
        raise ValueError(f"initial_noise {path!r} cannot be read: {e.strerror or e}") from e
    except Exception as e:
        # torch's own text is many lines and suggests weights_only=False, which would run the
        # file's code: the one fact that matters is that this is no tensor file
        raise ValueError(
            f"initial_noise {path!r} is not a tensor file cogsample can read (a .safetensors file, or a tensor "
            f"saved with torch.save); reading it failed with {type(e).__name__}"
        ) from None
    if isinstance(data, dict):
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        if "noise" in tensors:
            data = tensors["noise"]
        elif len(tensors) == 1:
            data = next(iter(tensors.values()))
        else:
            raise ValueError(f"initial_noise {path!r} holds {sorted(tensors)}: give one tensor, or name it 'noise'")
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        got = f"a {data.dtype} tensor" if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"initial_noise {path!r} must hold a floating-point tensor, got {got}")
    want = tuple(shape[1:])
    x = data.unsqueeze(0) if data.ndim == len(want) else data
    need = videos if first_row is None else first_row + videos
    if x.ndim == len(want) + 1:
        rows_ok = x.shape[0] == 1 or (x.shape[0] == videos if first_row is None else x.shape[0] >= need)
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want or not rows_ok:
        n = max(need, rows or 0)
        b = "1" if n == 1 else f"1 or {n}"
        dims = ", ".join(map(str, want))
        raise ValueError(
            f"initial_noise {path!r} has shape {tuple(data.shape)}; this request samples latents ({b}, {dims}), "
            f"i.e. (1 or one row per video, T, {want[1]}, H/8, W/8)"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"initial_noise {path!r} holds NaN or infinite values")
    return x.to(torch.float32)


# ----------------------------------------------------------------------------------------------
# running


def load_model(
    model: str, *, device: torch.device, dtype: torch.dtype, profile: str = "sat", offload: str = "none"
) -> VideoModel:
    """Load ``model`` (one of :data:`BUILTIN` or a CogVideoX folder) onto ``device``
    (:func:`cogsample.models.load`)."""
    return models.load(model, device=device, dtype=dtype, profile=profile, offload=offload)


def _image_tensor(image: Any, device: torch.device, dtype: torch.dtype) -> Tensor:
    """PIL image -> (1, 3, H, W) in [-1, 1] (or diffusers' already preprocessed tensor)."""
    if isinstance(image, torch.Tensor):
        return image.to(device=device, dtype=dtype)
    return image_to_tensor(image).to(device=device, dtype=dtype)


def _image_latents(model: VideoModel, img: Tensor, noise: NoiseSource, frames: int) -> Tensor:
    """``(1, T, C, h, w)``: the encoded image at frame 0, zeros after (both pipelines' layout).

    The VAE's posterior is sampled from the profile's generator before the initial noise is
    drawn, as diffusers' I2V pipeline does (the global generator for ``sat``)."""
    first = model.encode_image(img, getattr(noise, "generator", None))
    return torch.cat([first, first.new_zeros(first.shape[0], frames - 1, *first.shape[2:])], dim=1)


def _noise(p: Plan, seed: int) -> NoiseSource:
    if p.options.profile == "diffusers":
        from ..sampling.noise import DiffusersNoise

        return DiffusersNoise(torch.Generator("cpu").manual_seed(seed))
    torch.manual_seed(seed)  # the reference seeds torch's global generators
    return GlobalNoise()


def _initial(p: Plan, noise: NoiseSource, k: int) -> Tensor:
    """Video ``k``'s initial latent: drawn, or given (``--initial-noise``). Given, the ``sat``
    profile still makes (and drops) the reference's draw, so the in-loop noise is the seed's as
    without it; diffusers' pipeline makes no draw when handed ``latents``, and neither does the
    ``diffusers`` profile."""
    dtype = p.dtype if p.options.profile == "diffusers" else torch.float32
    if p.initial_noise is None or p.options.profile == "sat":
        x = noise.initial(p.shape, dtype=dtype, device=p.device)
    if p.initial_noise is None:
        return x
    given = p.initial_noise[p.noise_row(k)][None]
    return given.to(device=p.device, dtype=dtype)


def to_uint8(video: Tensor, rounding: str = "round") -> np.ndarray:
    """``(F, 3, H, W)`` float in [0, 1] -> ``(F, H, W, 3)`` uint8: ``255 x`` in float32, rounded to
    nearest (``"round"``, diffusers' ``numpy_to_pil``) or truncated (``"truncate"``, SAT's
    ``sample_video.py``)."""
    if rounding not in ("round", "truncate"):
        raise ValueError(f"rounding must be 'round' or 'truncate', got {rounding!r}")
    v = video.detach().float().clamp(0, 1).mul(255)
    v = v.round() if rounding == "round" else v.trunc()
    return v.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (CUDA: the driver's free memory plus what torch's
    allocator holds unused; CPU: the kernel's MemAvailable), None where unknown:
    :func:`cogsample.pipeline.cost.free_bytes`, what ``--vae-tiling auto`` reads as it decodes."""
    from .cost import free_bytes

    return free_bytes(device)


def vae_tiling(
    mode: str, model: VideoModel, shape: Sequence[int], device: torch.device, reference: str = "diffusers"
) -> dict[str, Any]:
    """Whether to decode latents of ``shape`` tiled: ``on``/``off`` as asked; ``auto``: only when the
    model's estimate of an untiled decode (as ``reference`` decodes) exceeds
    :data:`AUTO_TILING_MARGIN` of the free memory. Returns the decision and its inputs, as recorded
    in the video's JSON."""
    need = model.untiled_decode_bytes(shape, reference)
    free = free_memory(device) if mode == "auto" and need is not None else None
    if mode == "auto":
        tiled = need is not None and free is not None and need > AUTO_TILING_MARGIN * free
    else:
        tiled = mode == "on" and need is not None
    return {"mode": mode, "tiled": tiled, "untiled_bytes_estimate": need, "free_bytes": free}


def _progress_callback(
    progress: Callable[[StepEvent], None] | None,
    grid: Any,
    video: int,
    videos: int,
    start: float,
    model: Any = None,
    on_step: Callable[[StepEvent, Tensor, Tensor], None] | None = None,
) -> Callable[[int, Tensor, Tensor], None] | None:
    """The sampler callback that reports a :class:`StepEvent` to ``progress`` and, with the step's
    latents, to ``on_step`` (levels read from the host-side grid; forwards from ``model``, the
    :class:`~cogsample.sampling.guidance.GuidedModel`)."""
    if progress is None and on_step is None:
        return None
    windows = getattr(model, "windows", 1)
    sigmas = grid.sigmas().tolist()  # host-side grid: no device read in the loop
    levels = [(grid.timesteps[i] if grid.timesteps is not None else None, sigmas[i]) for i in range(grid.num_steps)]

    def callback(i: int, x: Tensor, denoised: Tensor) -> None:
        t, sigma = levels[i]
        forwards = getattr(model, "forwards", 0)
        ev = StepEvent(video, videos, i, grid.num_steps, t, sigma, time.perf_counter() - start, forwards, windows)
        if progress is not None:
            progress(ev)
        if on_step is not None:
            on_step(ev, x, denoised)

    return callback


# ----------------------------------------------------------------------------------------------
# the Python entry point


@dataclass(frozen=True)
class VideoResult:
    """One generated video, in memory (nothing written): what ``Pipeline(...)(prompt)`` returns
    (``cogsample.VideoResult``, :class:`cogsample.jobs.api.VideoResult`, adds its name and ``save``).

    ``latents``: ``(1, T, C, H/8, W/8)`` as sampled (float32 in the ``sat`` profile, CogVideoX 1.5's
    padding frame included); ``video``: ``(F, 3, H, W)`` float32 in [0, 1]; ``frames``:
    ``(F, H, W, 3)`` uint8, converted as the profile's reference converts (what the mp4 holds)."""

    prompt: str
    seed: int
    latents: Tensor
    latents_for_vae: Tensor
    video: Tensor | None
    frames: np.ndarray | None
    fps: int
    timings: dict[str, float]
    vae_tiling: dict[str, Any]
    plan: Plan
    k: int = 0
    #: network evaluations per sample (each context window counts)
    forwards: int = 0


def check_parallel(config: Any, info: ModelInfo) -> None:
    """``ValueError`` before anything loads where ``config`` (a
    :class:`~cogsample.sampling.parallel.ParallelConfig`) cannot run on the model of ``info`` (Ulysses needs
    attention heads that divide over its ranks; CFG parallel runs on any model)."""
    info.check_ulysses(config.ulysses)


class Pipeline:
    """A loaded model and the process-wide choices made with it (:data:`PROCESS_OPTIONS`).

    ``pipe = Pipeline.load("builtin" | "/models/CogVideoX-5b", device=..., dtype=..., profile=...)``;
    ``pipe(prompt, image=None, **options)`` -> :class:`VideoResult`, where ``options`` are any
    other :class:`GenerateOptions` field (``seed``, ``frames``, ``steps``, ``scale``, ...) or
    ``fast=True``. Nothing is written (``cogsample.Pipeline``, :class:`cogsample.jobs.api.Pipeline`,
    returns results that save themselves). Prompts are encoded on
    first use and kept; :meth:`encode` then :meth:`release_text_encoder` frees the text encoder
    for a known list of prompts, as the batch runner does.

    ``parallel``: this rank's :class:`~cogsample.sampling.parallel.ParallelGroups` when several processes
    make each video together (every rank of the video group makes the same calls, in the same
    order; each gets the whole result, the leader saves it): CFG branches on two ranks, the
    transformer's tokens sharded over the sequence group (Ulysses)."""

    def __init__(
        self,
        model: VideoModel,
        *,
        model_name: str,
        device: torch.device,
        dtype: torch.dtype,
        profile: str = "sat",
        offload: str = "none",
        parallel: Any = None,
    ):
        self.model = model
        self.model_name = model_name
        self.device = torch.device(device)
        self.dtype = dtype
        self.profile = profile
        self.offload = offload
        self._contexts: dict[tuple[str, int], tuple[Tensor, float]] = {}
        self._released = False
        self.parallel = parallel
        if parallel is not None and parallel.config.ulysses > 1:
            model.enable_sequence_parallel(parallel.seq_group, parallel.seq_rank, parallel.config.ulysses)

    @classmethod
    def load(
        cls,
        model: str = "builtin",
        *,
        device: str | None = None,
        dtype: str | None = None,
        profile: str = "sat",
        offload: str = "none",
        log: Callable[[str], None] | None = None,
        parallel: Any = None,
    ) -> Pipeline:
        """Check the process-wide options (before reading any weight), then load ``model``;
        ``parallel``: see the class (:func:`check_parallel` runs before the weights are read)."""
        _check_choice("profile", profile, PROFILES)
        _check_choice("offload", offload, OFFLOAD)
        dev = _resolve_device(device)
        info = inspect_model(model)
        models.check_installed(model, profile)
        dt = _resolve_dtype(dtype, dev, info, _is_builtin(model))
        if offload != "none":
            if _is_builtin(model):
                raise ValueError(f"offload {offload!r} moves a CogVideoX model's parts; the built-in model has none")
            from ..models.offload import check_offload

            check_offload(offload, dev)
        if parallel is not None:
            check_parallel(parallel.config, info)
        if log is not None:
            log(f"loading {info.name} on {dev} ({str(dt).removeprefix('torch.')})")
        loaded = load_model(model, device=dev, dtype=dt, profile=profile, offload=offload)
        return cls(loaded, model_name=model, device=dev, dtype=dt, profile=profile, offload=offload, parallel=parallel)

    # -- requests ------------------------------------------------------------------------------

    def options(self, prompt: str | Sequence[str], **options: Any) -> GenerateOptions:
        """The :class:`GenerateOptions` of a call: ``options`` on top of this pipeline's own."""
        fixed = sorted(k for k in options if k in PROCESS_OPTIONS)
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)} {'is' if len(fixed) == 1 else 'are'} fixed when the pipeline is loaded "
                f"(Pipeline.load(..., {fixed[0]}=...)); a call takes the per-video options"
            )
        fast = options.pop("fast", False)
        allowed = {f.name for f in dataclasses.fields(GenerateOptions)} - {"prompts", *PROCESS_OPTIONS}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)}; allowed: fast, {', '.join(sorted(allowed))}")
        prompts = (prompt,) if isinstance(prompt, str) else tuple(prompt)
        opts = GenerateOptions(
            prompts=prompts,
            model=self.model_name,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            profile=self.profile,  # type: ignore[arg-type]
            offload=self.offload,
            **options,
        )
        return fast_options(opts, steps_given="steps" in options) if fast else opts

    def plan(self, prompt: str | Sequence[str], **options: Any) -> Plan:
        """:func:`plan` of :meth:`options`: every check, nothing run."""
        return plan(self.options(prompt, **options))

    def __call__(
        self,
        prompt: str,
        image: Any = None,
        *,
        progress: bool | TextIO = True,
        callback: Callable[[StepEvent, Tensor, Tensor], None] | None = None,
        **options: Any,
    ) -> VideoResult:
        """One video of ``prompt`` (and ``image``: a path or a PIL image, for an I2V model).

        ``progress``: the steps on ``sys.stderr`` (``True``, the default, as diffusers' pipelines
        show a bar), on that stream (a file object), or nothing (``False``): a bar on a terminal,
        else a line per 10% of the steps (the CLI's :class:`~cogsample.pipeline.progress.Progress`).

        ``callback(event, latents, denoised)``: called after every step, in order: ``event`` is a
        :class:`StepEvent` (``event.step``: 0 .. ``event.steps - 1``; ``timestep``, ``sigma``: the
        step's noise level; ``elapsed``, ``forwards``), ``latents`` the sampler's state after the
        step and ``denoised`` its estimate of the clean latent, both of the sampled latent's shape
        (:attr:`Plan.shape`) on the device, read-only (clone what you keep). Its return value is
        ignored; to stop early, raise an exception: it ends the call and propagates (nothing is
        returned or written)."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string (one video a call), got {type(prompt).__name__}")
        if image is not None:
            options["image"] = image
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable(event, latents, denoised), got {type(callback).__name__}")
        if not isinstance(progress, bool) and not callable(getattr(progress, "write", None)):
            raise ValueError(f"progress must be True, False or a writable stream, got {type(progress).__name__}")
        p = self.plan(prompt, **options)
        shown = None
        if progress is not False:
            from .progress import Progress

            shown = Progress(None if progress is True else progress)
        try:
            return self.run(p, progress=shown, callback=callback)
        finally:
            if shown is not None:
                shown.close()

    # -- prompts -------------------------------------------------------------------------------

    def encode(self, prompts: Sequence[str], text_len: int) -> None:
        """Encode each of ``prompts`` (``text_len`` tokens) now, so the text encoder can go."""
        for q in dict.fromkeys(prompts):
            self.context(q, text_len)

    def context(self, prompt: str, text_len: int) -> Tensor:
        """``prompt``'s encoding (``(1, L, D)``), from the cache or encoded now."""
        key = (prompt, text_len)
        hit = self._contexts.get(key)
        if hit is None:
            if self._released:
                raise ValueError(
                    f"prompt {prompt!r} was not encoded before the text encoder was released: "
                    "encode every prompt first (Pipeline.encode)"
                )
            t0 = time.perf_counter()
            context = self.model.encode_prompts([prompt], max_length=text_len)
            hit = self._contexts[key] = (context, time.perf_counter() - t0)
        return hit[0]

    def release_text_encoder(self) -> None:
        """Free the text encoder (several GB for CogVideoX); later prompts must be encoded before."""
        if self._released:
            return
        self.model.release_text_encoder()
        self._released = True

    # -- running -------------------------------------------------------------------------------

    def _check(self, p: Plan) -> None:
        o = p.options
        mine = (self.model_name, self.device, self.dtype, self.profile)
        theirs = (o.model, p.device, p.dtype, o.profile)
        if mine != theirs:
            raise ValueError(
                f"the plan is for model {o.model!r} on {p.device} ({p.dtype}, profile {o.profile}); this "
                f"pipeline runs {self.model_name!r} on {self.device} ({self.dtype}, profile {self.profile})"
            )

    def run(
        self,
        p: Plan,
        k: int = 0,
        *,
        progress: Callable[[Any], None] | None = None,
        video: int | None = None,
        videos: int | None = None,
        decode: bool = True,
        callback: Callable[[StepEvent, Tensor, Tensor], None] | None = None,
    ) -> VideoResult:
        """Sample and decode video ``k`` of ``p`` (nothing written). ``progress`` gets a
        :class:`PrepareEvent` for once-per-size work, then a :class:`StepEvent` per step, labelled
        video ``video`` of ``videos`` (default ``k`` of the plan's); ``callback`` the same
        :class:`StepEvent` with the step's latents and denoised estimate (see :meth:`__call__`).
        ``decode=False``: latents only (``video`` and ``frames`` None), what a video group's
        non-writing ranks need."""
        self._check(p)
        model, opts = self.model, p.options
        prompt, seed = opts.prompts[k], opts.seed + k
        video = k if video is None else video
        videos = len(opts.prompts) if videos is None else videos
        t0 = time.perf_counter()
        context = self.context(prompt, p.text_len)
        negative = None if p.negative_prompt is None else self.context(p.negative_prompt, p.text_len)
        t_encode = self._contexts[(prompt, p.text_len)][1] + (time.perf_counter() - t0)

        if progress is not None:

            def prepared(done: int, total: int, what: str) -> None:
                progress(PrepareEvent(video, videos, done, total, what))

            model.prepare(p.shape, progress=prepared)
        else:
            model.prepare(p.shape)
        img = None if p.image is None else _image_tensor(p.image, p.device, p.dtype)
        ofs = torch.full((1,), 2.0, device=p.device, dtype=p.dtype) if p.info.uses_ofs else None
        noise = _noise(p, seed)
        image_latents = None if img is None else _image_latents(model, img, noise, p.shape[1])
        if opts.noise_repeat:
            # the initial latent and every in-loop draw, mapped by one frame map from the video's seed
            noise = RepeatedNoise(noise, p.windows, torch.Generator().manual_seed(seed))
        cond = Conditioning(context=context, uncond_context=negative, image_latents=image_latents, ofs=ofs)
        x = _initial(p, noise, k)
        branches = None if self.parallel is None else self.parallel.cfg_parallel()
        guided, grid = build_model(model.network, x, cond, p.sampling, branches=branches)
        start = time.perf_counter()
        with torch.inference_mode():
            step = _progress_callback(progress, grid, video, videos, start, guided, callback)
            try:
                latents = p.sampling.spec.fn(guided, x, grid, noise, callback=step, **p.sampling.options)
            finally:
                release(guided)
        if p.device.type == "cuda":
            torch.cuda.synchronize(p.device)
        t_sample = time.perf_counter() - start

        t0 = time.perf_counter()
        decoded, tiling = None, {"mode": opts.vae_tiling, "tiled": False, "decoded": False}
        with torch.inference_mode():
            clean = latents[:, p.pad_frames :].to(p.dtype)
            for_vae = model.latents_for_vae(clean)
            if decode:
                model.prepare_decode()
                tiling = vae_tiling(opts.vae_tiling, model, clean.shape, p.device, opts.profile)
                decoded = model.decode(clean, tiling=tiling["tiled"], reference=opts.profile)[0].float().cpu()
        t_decode = time.perf_counter() - t0
        return VideoResult(
            prompt=prompt,
            seed=seed,
            latents=latents,
            latents_for_vae=for_vae,
            video=decoded,
            frames=None if decoded is None else to_uint8(decoded, UINT8[opts.profile]),
            fps=p.fps,
            timings={"encode_s": t_encode, "sample_s": t_sample, "decode_s": t_decode},
            vae_tiling=tiling,
            plan=p,
            k=k,
            forwards=guided.forwards,
        )
