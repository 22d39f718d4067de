"""Prompt (and image) to video: encode -> sample -> decode -> save. Orchestration only, no math.

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
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from . import outputs
from .cache import CacheConfig
from .denoiser import DenoiserConfig
from .guidance import CFG, Conditioning, DynamicCFG, Guidance, GuidanceInterval, NoGuidance
from .models.base import ModelInfo, VideoModel
from .noise import GlobalNoise, NoiseSource, latent_shape
from .samplers import get_sampler
from .sampling import SamplingConfig, build_model, check_combination, release
from .scalings import VideoScaling
from .schedules import SpacedDDPM, ZeroSNRDDPM

Tensor = torch.Tensor
Profile = Literal["sat", "diffusers"]
Uncond = Literal["zero", "negative-prompt"]

__all__ = ["GenerateOptions", "Plan", "Result", "StepEvent", "generate", "plan", "run_plan"]

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
UNCOND = ("zero", "negative-prompt")
DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
BUILTIN = ("builtin", "builtin-i2v")
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
    frames: int | None = None
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
    stems: list[str]
    fps: int
    image: Any = None  # PIL image, resized, for I2V
    text_len: int = 226  # prompt tokens the profile encodes for this model
    initial_noise: Tensor | None = None  # (B, T, C, H, W), B = 1 or one row per video, on the CPU
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StepEvent:
    """Progress of one sampler step: video ``video`` of ``videos``, step ``step + 1`` of ``steps``."""

    video: int
    videos: int
    step: int
    steps: int
    timestep: int | None
    sigma: float
    elapsed: float


@dataclass(frozen=True)
class Result:
    prompt: str
    seed: int
    files: dict[str, Path]
    latents: Tensor
    video: Tensor  # (F, 3, H, W) in [0, 1]
    timings: dict[str, float]


# ----------------------------------------------------------------------------------------------
# planning: every check before any weight is read


def _is_builtin(model: str) -> bool:
    return model in BUILTIN


def inspect_model(model: str) -> ModelInfo:
    """The model's :class:`ModelInfo` from its configs alone (no weights)."""
    if _is_builtin(model):
        from .models.builtin import builtin_info

        return builtin_info(i2v=model == "builtin-i2v")
    try:
        from .models.cogvideox import inspect_folder
    except ImportError as e:
        raise ValueError(
            f"model {model!r} is a CogVideoX folder, which needs diffusers and transformers: "
            f"pip install 'cogsample[cogvideox]' ({e})"
        ) from e
    try:
        return inspect_folder(model)
    except FileNotFoundError as e:
        raise ValueError(f"model {model!r}: {e}") from e


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


def _guidance(kind: str, scale: float, steps: int) -> Guidance:
    if kind == "none":
        return NoGuidance()
    if not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    if kind == "cfg":
        return CFG(scale)
    return DynamicCFG(scale, DYNAMIC_CFG_EXP, steps)


def _scheduler_config(info: ModelInfo) -> dict[str, Any]:
    """The folder's scheduler config; the built-in model takes CogVideoX-5B's."""
    if info.scheduler is not None:
        return dict(info.scheduler)
    from .models.builtin import SCHEDULER_CONFIG

    return dict(SCHEDULER_CONFIG)


def resolve_sampling(opts: GenerateOptions, info: ModelInfo) -> SamplingConfig:
    """The sampling config a request asks for: a SAT yaml, or the profile's default for the model,
    with ``--sampler`` / ``--guidance`` / ``--steps`` applied on top.

    One rule for the step count, with or without a yaml: a given ``steps`` sets both the sampler's
    steps and DynamicCFG's ``num_steps`` (:func:`~cogsample.satconfig.from_sat`), also for a
    guidance rebuilt from ``--guidance`` / ``--scale`` on top of a yaml; ``steps=None`` takes a
    yaml exactly as written (its sampler's and its guider's counts, even where they differ, as SAT
    users change steps), and 50 steps without a yaml."""
    steps = opts.steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if opts.sampler is not None:
        get_sampler(opts.sampler)  # names the allowed samplers when unknown
    _guidance(opts.guidance, opts.scale, 1)  # checks the scale whatever the branch below
    if opts.sampler_config is not None:
        if opts.profile != "sat":
            raise ValueError("--sampler-config is a SAT yaml: it goes with --profile sat")
        from .satconfig import load_sat_yaml

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
        from .profiles import diffusers_sampling

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


#: ``--fast``: the fewest-forwards configuration that matched the reference default's quality in
#: ``cogsample bench`` (see the README); steps is its step count.
FAST: dict[str, Any] = {
    "sampler": "vpode_dpmpp_2m",
    "grid": "logsnr",
    "cfg_index": "loop",
    "cfg_interval": (0.4, 1.0),
    "skip_unit_cfg": True,
    "steps": 8,
}


def fast_options(opts: GenerateOptions, steps_given: bool = False) -> GenerateOptions:
    """``opts`` with the :data:`FAST` settings (its own step count kept when ``steps_given``, its
    own sampler when it names one)."""
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
        kind = opts.cache_kind or ("output" if _is_builtin(opts.model) else "first-block")
        _check_choice("cache_kind", kind, CACHE_KINDS)
        if kind == "first-block" and _is_builtin(opts.model):
            raise ValueError(
                "cache_kind 'first-block' caches a CogVideoX transformer's blocks: use 'output' with the built-in model"
            )
        changes["cache"] = CacheConfig(opts.cache, kind)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _load_image(path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"image {path!r} does not exist or is not a file")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {path!r} cannot be read as an image: {e}") from e


def _prepare_image(image: Any, opts: GenerateOptions, info: ModelInfo, height: int, width: int, from_image: bool):
    """The I2V first frame at ``height x width``, as each profile prepares it."""
    if opts.profile == "diffusers":
        from diffusers.video_processor import VideoProcessor

        # diffusers' own preprocessing (a plain resize to the size), so the profile sees its pixels
        return VideoProcessor(vae_scale_factor=8).preprocess(image, height=height, width=width)
    from .models.cogvideox import resize_image_for_i2v

    # the reference: 1.5 scales the short side to 768 px; otherwise cover-resize and centre-crop
    return resize_image_for_i2v(image) if from_image else resize_image_for_i2v(image, height, width)


def plan(opts: GenerateOptions) -> Plan:
    """Check everything about ``opts`` and resolve its defaults; raises ``ValueError`` naming the
    parameter, the value and what is allowed. Reads configs and the image, never weights."""
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
    dtype = _resolve_dtype(opts.dtype, device, info, builtin)

    if opts.image is not None and not info.i2v:
        hint = " (use --model builtin-i2v)" if builtin else ""
        raise ValueError(f"--image given, but model {info.name!r} is text-to-video{hint}")
    if opts.image is None and info.i2v:
        raise ValueError(f"model {info.name!r} is image-to-video: give --image PATH")
    image = _load_image(opts.image) if opts.image is not None else None

    frames = opts.frames if opts.frames is not None else info.frames
    height, width = opts.height, opts.width
    size_from_image = image is not None and info.patch_size_t is not None and height is None and width is None
    if size_from_image:
        # CogVideoX 1.5 I2V takes its size from the image, as the reference does
        from .models.cogvideox import i2v_size

        height, width = i2v_size(*image.size[::-1])
    height = height if height is not None else info.height
    width = width if width is not None else info.width
    shape = latent_shape(1, frames, height, width, info.latent_channels)  # names the bad parameter
    _check_model_size(info, opts.model, frames, height, width)

    pad = 0
    if info.patch_size_t:
        pad = (-shape[1]) % info.patch_size_t
        shape = (shape[0], shape[1] + pad, *shape[2:])

    uncond = opts.uncond or ("negative-prompt" if opts.profile == "diffusers" else "zero")
    if opts.negative_prompt is not None and opts.uncond is None:
        uncond = "negative-prompt"
    if uncond == "zero" and opts.negative_prompt is not None:
        raise ValueError("--negative-prompt with --uncond zero: the zero embedding ignores it; drop one of them")
    negative = None
    if uncond == "negative-prompt":
        negative = opts.negative_prompt if opts.negative_prompt is not None else ""

    sampling = apply_speedups(resolve_sampling(opts, info), opts, info)
    _check_choice("offload", opts.offload, OFFLOAD)
    if opts.offload != "none":
        if builtin:
            raise ValueError(f"offload {opts.offload!r} moves a CogVideoX model's parts; the built-in model has none")
        from .offload import check_offload

        check_offload(opts.offload, device)
    check_combination(sampling, sampling.grid())
    if "image" in sampling.spec.needs:
        raise ValueError(f"sampler {sampling.sampler!r} edits a given clean latent (SDEdit); generate cannot run it")
    if image is not None:
        image = _prepare_image(image, opts, info, height, width, size_from_image)

    initial = None if opts.initial_noise is None else load_initial_noise(opts.initial_noise, shape, len(prompts))
    out = outputs.check_writable(opts.out)
    stems: list[str] = []
    for k, p in enumerate(prompts):
        stems.append(outputs.free_stem(out, f"{outputs.slug(p)}-s{opts.seed + k}", set(stems)))
    fps = opts.fps or int(info.extra.get("fps", 8))
    return Plan(
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
        out=out,
        stems=stems,
        fps=fps,
        image=image,
        text_len=info.text_len(opts.profile),
        initial_noise=initial,
    )


def load_initial_noise(path: str, shape: Sequence[int], videos: int) -> Tensor:
    """The initial noise in ``path`` (``.safetensors``: its one tensor, or the one named ``noise``;
    ``.pt``: a tensor, or such a mapping) as ``(B, T, C, H, W)`` float32 on the CPU, checked against
    the sampled latent ``shape`` ``(1, T, C, H, W)``: ``B`` is 1 (every video starts from it) or
    ``videos`` (video k from row k); a ``(T, C, H, W)`` tensor counts as ``B = 1``."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"initial_noise {path!r} does not exist or is not a file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            data: Any = load_file(str(p))
        elif p.suffix in (".pt", ".pth"):
            data = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise ValueError(f"initial_noise {path!r} must be a .safetensors or .pt file")
    except ValueError:
        raise
    except Exception as e:
        raise ValueError(f"initial_noise {path!r} cannot be read: {type(e).__name__}: {e}") from e
    if isinstance(data, dict):
        tensors = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
        if "noise" in tensors:
            data = tensors["noise"]
        elif len(tensors) == 1:
            data = next(iter(tensors.values()))
        else:
            raise ValueError(f"initial_noise {path!r} holds {sorted(tensors)}: give one tensor, or name it 'noise'")
    if not isinstance(data, torch.Tensor) or not data.is_floating_point():
        raise ValueError(f"initial_noise {path!r} must hold a floating-point tensor, got {type(data).__name__}")
    want = tuple(shape[1:])
    x = data.unsqueeze(0) if data.ndim == len(want) else data
    if x.ndim != len(want) + 1 or tuple(x.shape[1:]) != want or x.shape[0] not in (1, videos):
        rows = "1" if videos == 1 else f"1 or {videos}"
        raise ValueError(
            f"initial_noise {path!r} has shape {tuple(data.shape)}; this request samples latents "
            f"({rows}, {', '.join(map(str, want))}) (B, T, C, H/8, W/8), B = {rows}"
        )
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"initial_noise {path!r} holds NaN or infinite values")
    return x.to(torch.float32)


def _check_model_size(info: ModelInfo, model: str, frames: int, height: int, width: int) -> None:
    """Model-specific size limits, from the configs alone."""
    if _is_builtin(model):
        return
    from .models.cogvideox import check_size_for

    check_size_for(info, frames, height, width)


# ----------------------------------------------------------------------------------------------
# running


def load_model(p: Plan) -> VideoModel:
    if _is_builtin(p.options.model):
        from .models.builtin import BuiltinModel

        return BuiltinModel(i2v=p.info.i2v, device=p.device, dtype=p.dtype)
    from .models.cogvideox import load_cogvideox

    # SAT leaves 1.5's image latent unscaled where diffusers divides it by the scaling factor
    scaling = "diffusers" if p.options.profile == "diffusers" else "sat"
    return load_cogvideox(
        p.options.model, dtype=p.dtype, device=p.device, image_scaling=scaling, offload=p.options.offload
    )


def _image_tensor(image: Any, device: torch.device, dtype: torch.dtype) -> Tensor:
    """PIL image -> (1, 3, H, W) in [-1, 1] (or diffusers' already preprocessed tensor)."""
    if isinstance(image, torch.Tensor):
        return image.to(device=device, dtype=dtype)
    from .models.cogvideox import image_to_tensor

    return image_to_tensor(image).to(device=device, dtype=dtype)


def _image_latents(model: VideoModel, img: Tensor, noise: NoiseSource, frames: int) -> Tensor:
    """``(1, T, C, h, w)``: the encoded image at frame 0, zeros after (both pipelines' layout).

    The VAE's posterior is sampled from the profile's generator before the initial noise is
    drawn, as diffusers' I2V pipeline does (the global generator for ``sat``)."""
    first = model.encode_image(img, getattr(noise, "generator", None))
    return torch.cat([first, first.new_zeros(first.shape[0], frames - 1, *first.shape[2:])], dim=1)


def _noise(p: Plan, seed: int) -> NoiseSource:
    if p.options.profile == "diffusers":
        from .noise import DiffusersNoise

        return DiffusersNoise(torch.Generator("cpu").manual_seed(seed))
    torch.manual_seed(seed)  # the reference seeds torch's global generators
    return GlobalNoise()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("cogsample", "torch", "diffusers", "transformers", "av", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def run_plan(
    p: Plan,
    *,
    model: VideoModel | None = None,
    progress: Callable[[StepEvent], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Result]:
    """Load the model (unless given), encode every prompt, free the text encoder, then sample,
    decode and save each video in turn. Returns one :class:`Result` per prompt."""
    say = log or (lambda _msg: None)
    opts = p.options
    t0 = time.perf_counter()
    if model is None:
        say(f"loading {p.info.name} on {p.device} ({str(p.dtype).removeprefix('torch.')})")
        model = load_model(p)
    t_load = time.perf_counter() - t0

    t0 = time.perf_counter()
    contexts = [model.encode_prompts([q], max_length=p.text_len) for q in opts.prompts]
    negative = None
    if p.negative_prompt is not None:
        negative = model.encode_prompts([p.negative_prompt], max_length=p.text_len)
    model.release_text_encoder()
    t_encode = time.perf_counter() - t0

    img = None if p.image is None else _image_tensor(p.image, p.device, p.dtype)
    ofs = torch.full((1,), 2.0, device=p.device, dtype=p.dtype) if p.info.uses_ofs else None

    spec = p.sampling.spec
    results = []
    for k, (prompt, context) in enumerate(zip(opts.prompts, contexts, strict=True)):
        seed = opts.seed + k
        noise = _noise(p, seed)
        image_latents = None if img is None else _image_latents(model, img, noise, p.shape[1])
        cond = Conditioning(context=context, uncond_context=negative, image_latents=image_latents, ofs=ofs)
        x = _initial(p, noise, k)
        guided, grid = build_model(model.network, x, cond, p.sampling)
        start = time.perf_counter()
        with torch.inference_mode():
            callback = _progress_callback(progress, grid, k, len(opts.prompts), start)
            try:
                latents = spec.fn(guided, x, grid, noise, callback=callback, **p.sampling.options)
            finally:
                release(guided)
        if p.device.type == "cuda":
            torch.cuda.synchronize(p.device)
        t_sample = time.perf_counter() - start

        t0 = time.perf_counter()
        with torch.inference_mode():
            clean = latents[:, p.pad_frames :].to(p.dtype)
            for_vae = model.latents_for_vae(clean)
            model.prepare_decode()
            tiling = vae_tiling(p.options.vae_tiling, model, clean.shape, p.device, opts.profile)
            video = model.decode(clean, tiling=tiling["tiled"], reference=opts.profile)[0].float().cpu()
        t_decode = time.perf_counter() - t0

        t0 = time.perf_counter()
        timings = {"load_s": t_load, "encode_s": t_encode, "sample_s": t_sample, "decode_s": t_decode}
        files = _save(p, k, prompt, seed, latents, for_vae, video, timings, tiling)
        timings["save_s"] = time.perf_counter() - t0
        say(f"wrote {files['video']} ({t_sample:.1f} s sampling, {t_decode:.1f} s decoding)")
        results.append(Result(prompt, seed, files, latents, video, timings))
    return results


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
    given = p.initial_noise[k if p.initial_noise.shape[0] > 1 else 0][None]
    return given.to(device=p.device, dtype=dtype)


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device`` (CUDA: the driver's free memory plus what torch's
    allocator holds unused; CPU: the kernel's MemAvailable), None where unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


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


def _save(
    p: Plan,
    k: int,
    prompt: str,
    seed: int,
    latents: Tensor,
    for_vae: Tensor,
    video: Tensor,
    timings: dict,
    tiling: dict[str, Any],
) -> dict[str, Path]:
    """Write the four files of video ``k``, each atomically; on failure none of them is left."""
    files = {role: p.out / f"{p.stems[k]}{suf}" for role, suf in outputs.SUFFIXES.items()}
    frames_u8 = outputs.to_uint8(video, UINT8[p.options.profile])
    meta = _metadata(p, prompt, seed, files, latents, timings)
    meta["vae_tiling"] = tiling
    outputs.write_all(
        [
            (files["latents"], lambda d: outputs.write_latents(d, {"latents": latents, "latents_for_vae": for_vae})),
            (files["video"], lambda d: outputs.write_mp4(d, frames_u8, p.fps)),
            (files["sheet"], lambda d: outputs.write_contact_sheet(d, frames_u8)),
            (files["meta"], lambda d: outputs.write_json(d, meta)),
        ]
    )
    return files


def _progress_callback(
    progress: Callable[[StepEvent], None] | None, grid: Any, video: int, videos: int, start: float
) -> Callable[[int, Tensor, Tensor], None] | None:
    """The sampler callback that reports a :class:`StepEvent` (levels read from the host-side grid)."""
    if progress is None:
        return None
    sigmas = grid.sigmas().tolist()  # host-side grid: no device read in the loop
    levels = [(grid.timesteps[i] if grid.timesteps is not None else None, sigmas[i]) for i in range(grid.num_steps)]

    def callback(i: int, _x: Tensor, _denoised: Tensor) -> None:
        t, sigma = levels[i]
        progress(StepEvent(video, videos, i, grid.num_steps, t, sigma, time.perf_counter() - start))

    return callback


def _metadata(p: Plan, prompt: str, seed: int, files: dict[str, Path], latents: Tensor, timings: dict) -> dict:
    opts = p.options
    return {
        "prompt": prompt,
        "negative_prompt": p.negative_prompt,
        "uncond": p.uncond,
        "seed": seed,
        "profile": opts.profile,
        "model": {
            "name": p.info.name,
            "path": opts.model,
            "i2v": p.info.i2v,
            "uses_ofs": p.info.uses_ofs,
            "patch_size_t": p.info.patch_size_t,
        },
        "image": opts.image,
        "frames": p.frames,
        "height": p.height,
        "width": p.width,
        "fps": p.fps,
        "latent_shape": list(latents.shape),
        "pad_frames": p.pad_frames,
        "text_len": p.text_len,
        "initial_noise": opts.initial_noise,
        "uint8": UINT8[opts.profile],
        "steps": p.sampling.steps,
        "sampling": p.sampling.to_dict(),
        "dtype": str(p.dtype).removeprefix("torch."),
        "device": str(p.device),
        "files": {k: v.name for k, v in files.items()},
        "versions": _versions(),
        "timings_s": timings,
        "command": _command(p, prompt, seed),
        "argv": sys.argv,
    }


def _command(p: Plan, prompt: str, seed: int) -> list[str]:
    """The ``cogsample generate`` arguments that reproduce this one video."""
    o = p.options
    cmd = [
        "cogsample",
        "generate",
        "--model",
        o.model,
        "--prompt",
        prompt,
        "--seed",
        str(seed),
        "--profile",
        o.profile,
        "--frames",
        str(p.frames),
        "--height",
        str(p.height),
        "--width",
        str(p.width),
        "--guidance",
        o.guidance,
        "--scale",
        repr(o.scale),
        "--dtype",
        str(p.dtype).removeprefix("torch."),
        "--uncond",
        p.uncond,
    ]
    if o.steps is not None:
        cmd += ["--steps", str(o.steps)]
    if o.sampler_config:
        cmd += ["--sampler-config", o.sampler_config]
    if o.sampler:
        cmd += ["--sampler", o.sampler]
    if p.negative_prompt is not None:
        cmd += ["--negative-prompt", p.negative_prompt]
    if o.image:
        cmd += ["--image", o.image]
    if o.grid != "reference":
        cmd += ["--grid", o.grid]
    if o.cfg_index != "reference":
        cmd += ["--cfg-index", o.cfg_index]
    if o.cfg_interval is not None:
        cmd += ["--cfg-interval", f"{o.cfg_interval[0]!r}:{o.cfg_interval[1]!r}"]
    if o.skip_unit_cfg:
        cmd.append("--skip-unit-cfg")
    if p.sampling.cache is not None:
        cmd += ["--cache", repr(p.sampling.cache.threshold), "--cache-kind", p.sampling.cache.kind]
    if o.offload != "none":
        cmd += ["--offload", o.offload]
    if o.vae_tiling != "auto":
        cmd += ["--vae-tiling", o.vae_tiling]
    if o.initial_noise is not None:
        cmd += ["--initial-noise", o.initial_noise]
    return cmd


def generate(opts: GenerateOptions, **kw: Any) -> list[Result]:
    """:func:`plan` then :func:`run_plan`."""
    return run_plan(plan(opts), **kw)
