"""Planning: :func:`plan` checks a request completely and cheaply (model folder, sizes, image,
sampler combination, initial noise, memory) before any weight is loaded, and resolves it into a
:class:`~cogsample.pipeline.plan.Plan`; the pipeline then runs it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import models
from ..models import ModelInfo
from ..models.images import load_image, resize_image_for_i2v
from ..models.lora import lora_pairs
from ..models.quantize import check_quantize
from ..sampling.config import SamplingConfig, check_combination, check_perturbation
from ..sampling.context_windows import ContextWindows
from ..sampling.noise import latent_shape
from .cost import check_memory, cond_only_calls
from .keyframes import resolve_keyframes
from .options import (
    CONTEXT,
    CONTEXT_OVERLAP_SHARE,
    OFFLOAD,
    PROFILES,
    UNCOND,
    VAE_TILING,
    GenerateOptions,
    Uncond,
    apply_speedups,
    check_choice,
    inspect_model,
    parse_guidance,
    resolve_device,
    resolve_dtype,
    resolve_sampling,
)
from .plan import Plan
from .video2video import check_strength, read_request, truncate_sampling
from .video2video import prepare as prepare_video

Tensor = torch.Tensor

__all__ = ["default_overlap", "load_initial_noise", "plan", "resolve_frames", "resolve_windows"]


def plan(opts: GenerateOptions, *, memory: bool = True, noise_rows: int | None = None) -> Plan:
    """Check everything about ``opts`` and resolve its defaults; raises ``ValueError`` naming the
    parameter, the value and what is allowed. Reads configs and the image, never weights.

    ``memory``: also refuse a video that cannot fit in the device's available memory
    (:func:`cogsample.pipeline.cost.check_memory`; off where another process will run it, as a Ray
    driver's plans). ``noise_rows``: the videos of the batch that share ``initial_noise`` (one row
    each), for the expected shape an error states (default: what ``initial_noise_row`` says)."""
    prompts = _check_request(opts)
    device = resolve_device(opts.device)
    info = inspect_model(opts.model)
    models.check_installed(opts.model, opts.profile)  # the optional modules it needs, named with their extra
    dtype = resolve_dtype(opts.dtype, device, info, models.is_builtin(opts.model))
    image = _first_frame(opts, info)
    clip = read_request(opts.video, opts.strength, resolve_frames(opts.frames, info), opts.profile)
    if image is None and clip is not None and info.i2v:
        image = clip.frames[0]  # an I2V model given --video and no --image starts from the video's first frame
    frames, height, width, short_side = _resolve_size(opts, info, image)
    shape, pad = _sampled_shape(frames, height, width, info)
    windows = resolve_windows(opts, info, shape[1])
    # the model's own limits, from its configs alone (a fixed-size model: per window)
    info.check_size(frames, height, width, None if windows is None else windows.frames)
    uncond, negative = _resolve_uncond(opts)
    sampling = _resolve_run(opts, info, windows, device)
    if sampling.guider is not None:
        sampling.guider.check(tuple(shape))  # a rule that cannot run on this latent (FDG's pyramid)
    if image is not None:
        image = _prepare_image(image, opts, height, width, short_side)
    keyframes = resolve_keyframes(
        opts.last_image,
        opts.keyframes,
        info,
        frames,
        pad,
        lambda im: _prepare_image(im, opts, height, width, short_side),
    )
    loras = models.check_loras(opts.model, lora_pairs(opts.lora))
    video = None if clip is None else prepare_video(clip, info, pad, height, width)
    initial = _initial_noise(opts, shape, len(prompts), noise_rows)
    if not isinstance(opts.out, (str, Path)) or not str(opts.out):
        raise ValueError(f"out must be a directory path, got {opts.out!r}")
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
        fps=opts.fps or int(info.extra.get("fps", 8)),
        image=image,
        keyframes=keyframes,
        loras=loras,
        video=video,
        text_len=info.text_len(opts.profile),
        initial_noise=initial,
    )
    if memory:
        check_memory(p)
    return p


def _check_request(opts: GenerateOptions) -> tuple[str, ...]:
    """The prompts, and the options checked without the model (profile, guidance, uncond, seed,
    fps, VAE tiling)."""
    prompts = tuple(opts.prompts)
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) or --prompts-file FILE")
    for k, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"prompt {k + 1} is empty")
    check_choice("profile", opts.profile, PROFILES)
    parse_guidance(opts.guidance)  # none, cfg, dynamic or RULE[:key=value,...]
    if opts.uncond is not None:
        check_choice("uncond", opts.uncond, UNCOND)
    if isinstance(opts.seed, bool) or not isinstance(opts.seed, int) or not 0 <= opts.seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {opts.seed!r}")
    if opts.fps is not None and (not isinstance(opts.fps, int) or opts.fps < 1):
        raise ValueError(f"fps must be an integer >= 1, got {opts.fps!r}")
    check_choice("vae_tiling", opts.vae_tiling, VAE_TILING)
    return prompts


def _first_frame(opts: GenerateOptions, info: ModelInfo) -> Any:
    """The I2V image as given (a PIL image, RGB), None for a text-to-video model; ``ValueError``
    where the image and the model do not go together."""
    if opts.image is not None and not info.i2v:
        hint = f" (use --model {opts.model}-i2v)" if models.is_builtin(opts.model) else ""
        raise ValueError(f"--image given, but model {info.name!r} is text-to-video{hint}")
    if opts.image is None and info.i2v and opts.video is None:
        raise ValueError(f"model {info.name!r} is image-to-video: give --image PATH (or --video PATH)")
    return load_image(opts.image) if opts.image is not None else None


def _resolve_size(opts: GenerateOptions, info: ModelInfo, image: Any) -> tuple[int, int, int, int | None]:
    """``(frames, height, width, short_side)``: the asked size, else the model's native one;
    ``short_side``: the image gave the size (:meth:`ModelInfo.size_for_image`), else None."""
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
    return frames, height, width, None if from_image is None else info.image_short_side


def _sampled_shape(frames: int, height: int, width: int, info: ModelInfo) -> tuple[tuple[int, ...], int]:
    """The sampled latent's shape, padded at the front to the model's temporal patch, and the padding."""
    shape = latent_shape(1, frames, height, width, info.latent_channels)  # names the bad parameter
    pad = 0
    if info.patch_size_t:
        pad = (-shape[1]) % info.patch_size_t
        shape = (shape[0], shape[1] + pad, *shape[2:])
    return shape, pad


def _resolve_uncond(opts: GenerateOptions) -> tuple[Uncond, str | None]:
    """The unconditional branch (``zero`` or ``negative-prompt``) and its negative prompt."""
    uncond = opts.uncond or ("negative-prompt" if opts.profile == "diffusers" else "zero")
    if opts.negative_prompt is not None and opts.uncond is None:
        uncond = "negative-prompt"
    if uncond == "zero" and opts.negative_prompt is not None:
        raise ValueError("--negative-prompt with --uncond zero: the zero embedding ignores it; drop one of them")
    negative = None
    if uncond == "negative-prompt":
        negative = opts.negative_prompt if opts.negative_prompt is not None else ""
    return uncond, negative


def _resolve_run(
    opts: GenerateOptions, info: ModelInfo, windows: ContextWindows | None, device: torch.device
) -> SamplingConfig:
    """The sampling config with the speed-ups and context windows on it, checked with the offload
    mode and as a whole (a sampler that runs on this grid and guidance, and that generates)."""
    sampling = apply_speedups(resolve_sampling(opts, info), opts, info)
    # video to video: the grid cut to where --strength starts (before the combination is checked)
    sampling = truncate_sampling(sampling, check_strength(opts.video, opts.strength), opts.profile)
    if windows is not None:
        sampling = dataclasses.replace(sampling, context=windows)
    check_perturbation(sampling, info.blocks, f"model {opts.model!r}")  # PAG, SLG: before anything loads
    if sampling.cache is not None:  # what a cache cannot mix, refused before anything loads
        models.check_cache(sampling.cache, windows=windows is not None, cond_only_calls=cond_only_calls(sampling))
    check_choice("offload", opts.offload, OFFLOAD)
    if opts.offload != "none":
        if models.is_builtin(opts.model):
            raise ValueError(f"offload {opts.offload!r} moves a CogVideoX model's parts; the built-in model has none")
        from ..models.offload import check_offload

        check_offload(opts.offload, device)
    check_quantize(opts.quantize, device, model=opts.model, has_transformer=opts.model not in models.EXACT)
    check_combination(sampling, sampling.grid())
    if "image" in sampling.spec.needs:
        raise ValueError(f"sampler {sampling.sampler!r} edits a given clean latent (SDEdit); generate cannot run it")
    return sampling


def _initial_noise(opts: GenerateOptions, shape: Sequence[int], videos: int, noise_rows: int | None) -> Tensor | None:
    """``--initial-noise`` read and checked against the sampled ``shape`` (:func:`load_initial_noise`), or None."""
    row = opts.initial_noise_row
    if row is not None and (isinstance(row, bool) or not isinstance(row, int) or row < 0):
        raise ValueError(f"initial_noise_row must be an integer >= 0, got {row!r}")
    if row is not None and opts.initial_noise is None:
        raise ValueError("initial_noise_row picks a row of --initial-noise, which is not given")
    if opts.initial_noise is None:
        return None
    return load_initial_noise(opts.initial_noise, shape, videos, first_row=row, rows=noise_rows)


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
    check_choice("context", opts.context, CONTEXT)
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
