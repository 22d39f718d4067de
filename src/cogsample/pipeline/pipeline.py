"""Prompt (and image) to video, in memory: encode -> sample -> decode a
:class:`~cogsample.pipeline.plan.Plan` with a loaded model (:class:`Pipeline`); the result is a
:class:`VideoResult` (latents, decoded video, uint8 frames, timings). Orchestration only, no math;
it writes nothing (``cogsample.Pipeline`` adds saving, :mod:`cogsample.jobs.api`)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import torch

from .. import models
from ..models import ModelInfo, VideoModel
from ..models.images import image_to_tensor
from ..models.lora import lora_pairs
from ..models.quantize import check_quantize
from ..sampling.config import build_model, release
from ..sampling.context_windows import RepeatedNoise
from ..sampling.guidance import Conditioning
from ..sampling.noise import GlobalNoise, NoiseSource
from .cost import free_bytes
from .events import PrepareEvent, StepEvent
from .keyframes import encode_keyframes
from .options import (
    OFFLOAD,
    PROCESS_OPTIONS,
    PROFILES,
    UINT8,
    GenerateOptions,
    check_choice,
    fast_options,
    inspect_model,
    resolve_device,
    resolve_dtype,
)
from .plan import Plan
from .planning import plan
from .video2video import encode as encode_video
from .video2video import noised as noised_video

Tensor = torch.Tensor

__all__ = ["Pipeline", "VideoResult", "check_parallel", "load_model", "to_uint8", "vae_tiling"]

#: ``--vae-tiling auto`` decodes untiled when the estimated need is at most this share of the free memory.
AUTO_TILING_MARGIN = 0.9


def load_model(
    model: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    profile: str = "sat",
    offload: str = "none",
    quantize: str = "none",
) -> VideoModel:
    """Load ``model`` (one of :data:`cogsample.models.BUILTIN` or a CogVideoX folder) onto ``device``
    (:func:`cogsample.models.load`)."""
    return models.load(model, device=device, dtype=dtype, profile=profile, offload=offload, quantize=quantize)


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


def _start(p: Plan, noise: NoiseSource, k: int, clean: Tensor | None) -> Tensor:
    """Video ``k``'s start: :func:`_initial`, or with ``--video`` the video's clean latent noised
    with it to the cut grid's first level (:func:`cogsample.pipeline.video2video.noised`)."""
    x = _initial(p, noise, k)
    return x if clean is None else noised_video(p.sampling, clean, x, p.options.profile)


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


def _fused_loras(model: str, lora: Any, fuse: bool, quantize: str) -> tuple[Any, ...]:
    """The checked files ``--lora-fuse`` merges at load (read from their headers, before any weight)."""
    pairs = lora_pairs(lora)
    if fuse and not pairs:
        raise ValueError("--lora-fuse merges the --lora files into the weights: give at least one --lora")
    if fuse and quantize != "none":
        raise ValueError(
            f"--lora-fuse merges into full-precision weights; with --quantize {quantize} load the LoRA unfused "
            "(drop --lora-fuse)"
        )
    return models.check_loras(model, pairs) if fuse else ()


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
    first use and kept; :meth:`encode_videos` encodes a known list of videos' prompts, then frees
    the text encoder, as the batch runners do.

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
        quantize: str = "none",
        lora: Any = (),
        lora_fuse: bool = False,
    ):
        self.model = model
        self.model_name = model_name
        self.device = torch.device(device)
        self.dtype = dtype
        self.profile = profile
        self.offload = offload
        self.quantize = quantize
        #: the calls' LoRAs unless a call names its own; fused: the only set a call may use
        self.lora = lora_pairs(lora)
        self.lora_fuse = bool(lora_fuse)
        self._contexts: dict[tuple[str, int], tuple[Tensor, float]] = {}
        self._released = False
        #: a long-lived process (the server) keeps the text encoder for prompts still to come
        self.keep_text_encoder = False
        self.parallel = parallel
        if parallel is not None and parallel.config.ulysses > 1:
            model.enable_sequence_parallel(parallel.seq_group, parallel.seq_rank, parallel.config.ulysses)

    @classmethod
    def for_options(
        cls,
        o: GenerateOptions,
        *,
        device: str | None = None,
        log: Callable[[str], None] | None = None,
        parallel: Any = None,
    ) -> Pipeline:
        """:meth:`load` with a request's process-wide options (model, dtype, profile, offload,
        quantization, LoRAs); ``device`` instead of the request's (a Ray worker's own GPU)."""
        return cls.load(
            o.model,
            device=device or o.device,
            dtype=o.dtype,
            profile=o.profile,
            offload=o.offload,
            quantize=o.quantize,
            lora=o.lora,
            lora_fuse=o.lora_fuse,
            log=log,
            parallel=parallel,
        )

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
        quantize: str = "none",
        lora: Any = (),
        lora_fuse: bool = False,
    ) -> Pipeline:
        """Check the process-wide options (before reading any weight), then load ``model``;
        ``parallel``: see the class (:func:`check_parallel` runs before the weights are read).
        ``lora``: the LoRAs of calls that name none (``"PATH[:WEIGHT]"`` or a list,
        :func:`~cogsample.models.lora.lora_pairs`); ``lora_fuse``: merge them into the weights now."""
        check_choice("profile", profile, PROFILES)
        check_choice("offload", offload, OFFLOAD)
        dev = resolve_device(device)
        info = inspect_model(model)
        models.check_installed(model, profile)
        dt = resolve_dtype(dtype, dev, info, models.is_builtin(model))
        if offload != "none":
            if models.is_builtin(model):
                raise ValueError(f"offload {offload!r} moves a CogVideoX model's parts; the built-in model has none")
            from ..models.offload import check_offload

            check_offload(offload, dev)
        check_quantize(quantize, dev, model=model, has_transformer=model not in models.EXACT)
        if parallel is not None:
            check_parallel(parallel.config, info)
        fused = _fused_loras(model, lora, lora_fuse, quantize)
        if log is not None:
            quantized = "" if quantize == "none" else f", --quantize {quantize}"
            log(f"loading {info.name} on {dev} ({str(dt).removeprefix('torch.')}{quantized})")
        loaded = load_model(model, device=dev, dtype=dt, profile=profile, offload=offload, quantize=quantize)
        if lora_fuse:
            loaded.use_loras(fused, fuse=True)
        return cls(
            loaded,
            model_name=model,
            device=dev,
            dtype=dt,
            profile=profile,
            offload=offload,
            parallel=parallel,
            quantize=quantize,
            lora=lora,
            lora_fuse=lora_fuse,
        )

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
            quantize=self.quantize,
            lora_fuse=self.lora_fuse,
            **{"lora": self.lora, **options},
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

    def encode_videos(self, videos: Sequence[tuple[Plan, int]]) -> None:
        """Encode the prompt (and negative prompt) of each video ``(plan, k)`` now, then free the text
        encoder (unless :attr:`keep_text_encoder`): what a batch does once, before its first video,
        so that sampling has the memory."""
        for p, k in videos:
            negative = [] if p.negative_prompt is None else [p.negative_prompt]
            self.encode([p.options.prompts[k], *negative], p.text_len)
        if not self.keep_text_encoder:
            self.release_text_encoder()

    def forget_prompts(self) -> None:
        """Drop the encoded prompts (a server's memory stays bounded however many it has seen)."""
        self._contexts.clear()

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
        model.use_loras(p.loras)  # before the seed: a first load must not move the video's draws
        noise = _noise(p, seed)
        image_latents = None if img is None else _image_latents(model, img, noise, p.shape[1])
        clean = None if p.video is None else encode_video(p.video, model, noise, seed, opts.profile, p.dtype)
        if opts.noise_repeat:
            # the initial latent and every in-loop draw, mapped by one frame map from the video's seed
            noise = RepeatedNoise(noise, p.windows, torch.Generator().manual_seed(seed))
        cond = Conditioning(context=context, uncond_context=negative, image_latents=image_latents, ofs=ofs)
        x = _start(p, noise, k, clean)
        branches = None if self.parallel is None else self.parallel.cfg_parallel()
        if self.parallel is not None and p.sampling.cache is not None:  # before any network call
            c = self.parallel.config
            models.check_cache(p.sampling.cache, cfg_parallel=c.cfg > 1, ulysses=c.ulysses > 1)
        # held frames are noised with the initial noise's own frames; from a --video start, with their own
        keyframes = encode_keyframes(model, p.keyframes, p.device, p.dtype, None if clean is None else seed)
        guided, grid = build_model(model.network, x, cond, p.sampling, branches=branches, keyframes=keyframes)
        start = time.perf_counter()
        with torch.inference_mode():
            step = _progress_callback(progress, grid, video, videos, start, guided, callback)
            try:
                latents = p.sampling.spec.fn(guided, x, grid, noise, callback=step, **p.sampling.options)
                if keyframes is not None:
                    latents = keyframes.finish(latents)
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
