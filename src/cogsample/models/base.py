"""What the pipeline needs of a model: a network in the core's protocol, a text encoder, a VAE.

A :class:`VideoModel` bundles the three parts of a text-to-video (or image-to-video) model so
that :mod:`cogsample.pipeline.pipeline` can run ``encode prompt -> sample -> decode`` on any of them: the
built-in exact model (:mod:`cogsample.models.builtin`) and a diffusers-format CogVideoX folder
(:mod:`cogsample.models.cogvideox`) alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..sampling.denoiser import Network
from ..sampling.noise import TEMPORAL_COMPRESSION
from .images import i2v_size

Tensor = torch.Tensor

__all__ = ["CallableNetwork", "ModelInfo", "VideoModel"]


@dataclass(frozen=True)
class ModelInfo:
    """Static facts about a model, known before any weight is touched.

    ``i2v``: the network takes image latents on the channel axis (``in_channels = 2 * 16``);
    ``uses_ofs``: it also takes CogVideoX 1.5 I2V's ``ofs`` input; ``patch_size_t``: temporal
    patch size (1.5), the latent frame count the network sees must be a multiple of it;
    ``max_text_len``: prompt tokens (226 for the released models);
    ``frames``, ``height``, ``width``: the model's native sample size (the CLI's defaults);
    ``scheduler``: the folder's ``scheduler/scheduler_config.json`` (None for the built-in model);
    ``sat_text_len``: the prompt tokens SAT's config for this model encodes (224 for CogVideoX
    1.5; None: ``max_text_len``); ``accelerator_dtype``: what the released weights run in on a GPU
    (SAT's configs and the model cards: float16 for CogVideoX-2B, bfloat16 otherwise).

    Size rules (read by :meth:`check_size` and :meth:`size_for_image`): ``size_multiple``: height
    and width are multiples of it (VAE factor x patch size); ``fixed_size``: None, or why only the
    native ``frames x height x width`` works (the error says it: learned positional embeddings,
    a model trained at one size); ``max_height``, ``max_width``: the largest sizes its positional
    table covers (CogVideoX 1.5's rotary table; None: no limit); ``image_short_side``: an I2V
    model that takes its size from the image gives it this short side (CogVideoX 1.5 I2V: 768 px;
    None: the native size). ``attention_heads``: heads of the network's attention, what Ulysses
    sequence parallel splits over ranks (None: the network has no attention to shard);
    ``attention_head_dim`` and ``patch_size`` (the transformer's spatial patch): with
    ``attention_heads`` and ``patch_size_t``, the transformer's tokens and width, what a memory
    estimate reads (None: no transformer, the exact model). ``blocks``: the transformer's blocks,
    what PAG and SLG perturb (None: no blocks, the exact model).
    ``context_windows``: a latent longer than the native one is sampled in temporal context
    windows of the native length by default (the network was trained at ``frames``); False where
    the network is exact at any length (the built-in model).
    """

    name: str
    i2v: bool = False
    uses_ofs: bool = False
    patch_size_t: int | None = None
    latent_channels: int = 16
    max_text_len: int = 226
    frames: int = 49
    height: int = 480
    width: int = 720
    scheduler: dict[str, Any] | None = None
    sat_text_len: int | None = None
    accelerator_dtype: str = "bfloat16"
    extra: dict[str, Any] = field(default_factory=dict)
    size_multiple: int = 16
    fixed_size: str | None = None
    max_height: int | None = None
    max_width: int | None = None
    image_short_side: int | None = None
    attention_heads: int | None = None
    attention_head_dim: int | None = None
    patch_size: int | None = None
    blocks: int | None = None
    context_windows: bool = True

    @property
    def native_latent_frames(self) -> int:
        """Latent frames of the native ``frames`` as sampled (padded to the temporal patch)."""
        t = (self.frames - 1) // TEMPORAL_COMPRESSION + 1
        return t + (-t % self.patch_size_t if self.patch_size_t else 0)

    def text_len(self, profile: str) -> int:
        """Prompt tokens the ``profile`` (``sat`` or ``diffusers``) encodes for this model."""
        return self.sat_text_len if profile == "sat" and self.sat_text_len is not None else self.max_text_len

    def check_size(self, frames: int, height: int, width: int, window: int | None = None) -> None:
        """``ValueError`` naming the parameter for a size this model cannot generate, before any work.

        Positive integers; ``frames = 4k + 1`` (the VAE compresses time 4x); height and width
        multiples of :attr:`size_multiple`; with :attr:`fixed_size` the native size only; at most
        :attr:`max_height` x :attr:`max_width`. (The latent frame count may be odd where the
        network has temporal patches: it is padded.) ``window``: the latent frames of each context
        window when the latent is sampled in windows; then :attr:`fixed_size` asks the native
        length of the window (``context_frames``) and at least the native ``frames``.
        """
        sizes = (("frames", frames), ("height", height), ("width", width))
        for name, v in sizes:
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if (frames - 1) % TEMPORAL_COMPRESSION:
            lo = frames - (frames - 1) % TEMPORAL_COMPRESSION
            raise ValueError(
                f"frames must be of the form 4k+1 (the VAE compresses time 4x), got {frames}; "
                f"nearest: {lo} or {lo + TEMPORAL_COMPRESSION}"
            )
        multiple = self.size_multiple
        for name, v in sizes[1:]:
            if v % multiple:
                lo = v - v % multiple
                raise ValueError(
                    f"{name} must be a multiple of {multiple} (VAE x patch size), got {v}; "
                    f"nearest: {max(lo, multiple)} or {lo + multiple}"
                )
        if self.fixed_size is not None:
            native = {"frames": self.frames, "height": self.height, "width": self.width}
            for name, v in sizes:
                if window is not None and name == "frames":
                    if v < self.frames:
                        raise ValueError(f"frames must be at least {self.frames} for {self.fixed_size}, got {v!r}")
                elif v != native[name]:
                    longer = ""
                    if name == "frames" and v > native[name]:
                        longer = "; longer videos in context windows (--context auto)"
                    raise ValueError(f"{name} must be {native[name]} for {self.fixed_size}, got {v!r}{longer}")
            if window is not None and window != self.native_latent_frames:
                raise ValueError(
                    f"context_frames must be {self.native_latent_frames} (latent frames of its native {self.frames}) "
                    f"for {self.fixed_size}, got {window!r}"
                )
        for name, v, top in (("height", height, self.max_height), ("width", width, self.max_width)):
            if top is not None and v > top:
                raise ValueError(f"{name} must be at most {top} for {self.name} (its rotary table), got {v}")

    def check_ulysses(self, ranks: int) -> None:
        """``ValueError`` unless this model's attention heads split over ``ranks`` sequence-parallel ranks."""
        if ranks == 1:
            return
        if self.attention_heads is None:
            raise ValueError(
                f"--parallel ulysses={ranks} shards a transformer's attention over ranks; model {self.name!r} "
                "has none (its network is exact): use --parallel cfg=2"
            )
        if self.attention_heads % ranks:
            divisors = [d for d in range(2, self.attention_heads + 1) if self.attention_heads % d == 0]
            raise ValueError(
                f"--parallel ulysses={ranks}: model {self.name!r} has {self.attention_heads} attention heads, "
                f"which must divide over the ranks; allowed: ulysses = {', '.join(map(str, divisors))}"
            )

    def size_for_image(self, image_height: int, image_width: int) -> tuple[int, int] | None:
        """The ``(height, width)`` this model generates for an ``image_height x image_width`` px
        first frame when no size is asked for: the short side :attr:`image_short_side`, the long side
        the nearest multiple of 16 keeping the aspect (:func:`~cogsample.models.images.i2v_size`); None
        where the model has a native size instead."""
        if self.image_short_side is None:
            return None
        return i2v_size(image_height, image_width, self.image_short_side)


class VideoModel:
    """Interface the pipeline drives. Shapes: latents ``(B, T, 16, H/8, W/8)``, video ``(B, F, 3, H, W)``.

    * ``network(x, t, context, ofs=None)``: the core's :class:`~cogsample.sampling.denoiser.Network`,
      v-prediction (the CogVideoX parameterization, :class:`~cogsample.sampling.scalings.VideoScaling`);
    * ``encode_prompts(prompts, max_length=None) -> (B, L, D)``; ``release_text_encoder()`` frees it;
    * ``encode_image(images (B, 3, H, W) in [-1, 1]) -> (B, 1, 16, H/8, W/8)``, already multiplied
      by the VAE's scaling factor (I2V models only);
    * ``encode_video(video (B, F, 3, H, W) in [-1, 1], generator=None) -> (B, T, 16, H/8, W/8)``,
      F = 4k + 1, already multiplied by the VAE's scaling factor (video to video; any model);
    * ``encode_keyframe(image (1, 3, H, W), frame) -> (latent, mask)``: a video frame's image as the
      clean latent (and held channels) of its latent frame, for ``--keyframe``;
    * ``latents_for_vae(latents) -> Tensor``: exactly what the VAE decoder is handed;
      ``decode(latents, tiling=False, reference="diffusers") -> (B, F, 3, H, W)`` float32 in [0, 1],
      decoded as the ``reference`` implementation (``sat`` or ``diffusers``) decodes, tiled or not;
      ``untiled_decode_bytes(latents_shape, reference)``: the memory an untiled decode needs (None: unknown);
    * ``check_size(frames, height, width)``: ``ValueError`` naming the parameter for a size the
      model cannot take, before any work (by default :meth:`ModelInfo.check_size`).
    """

    info: ModelInfo
    network: Network
    dtype: torch.dtype = torch.float32
    device: torch.device = torch.device("cpu")

    def encode_prompts(self, prompts: Sequence[str], max_length: int | None = None) -> Tensor:
        raise NotImplementedError

    def release_text_encoder(self) -> None:
        """Free the text encoder's memory (called once all prompts are encoded)."""

    def encode_image(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``generator``: where a stochastic VAE posterior is sampled from (None: torch's global one)."""
        raise NotImplementedError

    def encode_keyframe(self, image: Tensor, frame: int) -> tuple[Tensor, Tensor | None]:
        """Video frame ``frame`` given as ``image (1, 3, H, W)`` in [-1, 1] -> ``(latent, mask)``: the
        clean latent ``(1, 1, C, H/8, W/8)`` of the latent frame holding it, in the sampler's
        latent space, and the bool ``(1, 1, C, 1, 1)`` channels of it that the image fixes (None:
        all). See :mod:`cogsample.sampling.keyframes`; deterministic (a posterior's mean)."""
        raise ValueError(f"model {self.info.name!r} cannot encode keyframes")

    def encode_video(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The whole video's latents (video to video); ``generator``: where a stochastic VAE
        posterior is sampled from (None: torch's global one)."""
        raise NotImplementedError

    def use_loras(self, loras: Sequence[Any], *, fuse: bool = False) -> None:
        """Run the next calls with ``loras`` (:class:`~cogsample.models.lora.LoraFile`, at their
        weights) on the model's diffusers transformer (``self.transformer``), loaded once each;
        ``fuse``: merge them into the weights for good (:class:`~cogsample.models.lora.Adapters`)."""
        adapters = getattr(self, "_adapters", None)
        if adapters is None:
            if not loras and not fuse:
                return
            transformer = getattr(self, "transformer", None)
            if transformer is None:
                raise ValueError(f"--lora adapts a diffusers transformer; model {self.info.name!r} has none")
            from .lora import Adapters

            adapters = self._adapters = Adapters(transformer)
        if fuse:
            adapters.fuse(loras)
        else:
            adapters.use(loras)

    def latents_for_vae(self, latents: Tensor) -> Tensor:
        raise NotImplementedError

    def decode(self, latents: Tensor, *, tiling: bool = False, reference: str = "diffusers") -> Tensor:
        raise NotImplementedError

    def prepare(self, shape: Sequence[int], progress: Callable[[int, int, str], None] | None = None) -> None:
        """Once-per-size work before sampling latents of ``shape`` ``(B, T, C, h, w)`` (the built-in
        model renders its clips), reporting ``progress(done, total, what)``; nothing by default."""

    def prepare_decode(self) -> None:
        """Free what decoding does not need on the device (called before the tiling decision)."""

    def enable_sequence_parallel(self, group: Any, rank: int, size: int) -> None:
        """Shard the network's tokens over ``size`` ranks of ``group`` (Ulysses; this is ``rank``):
        asks the network (``network.sequence_parallel``); ``ValueError`` where it has none."""
        self.info.check_ulysses(size)
        attach = getattr(self.network, "sequence_parallel", None)
        if attach is None:
            raise ValueError(f"model {self.info.name!r}: its network cannot be sharded over ranks (no attention)")
        attach(group, rank, size)

    def untiled_decode_bytes(self, shape: Sequence[int], reference: str = "diffusers") -> int | None:
        """Peak memory of an untiled :meth:`decode` of latents of ``shape`` (None: no tiling to choose)."""
        return None

    def check_size(self, frames: int, height: int, width: int, window: int | None = None) -> None:
        """Raise ``ValueError`` for a size this model cannot generate (its :class:`ModelInfo`'s rules;
        ``window``: latent frames per context window, see there)."""
        self.info.check_size(frames, height, width, window)


class CallableNetwork:
    """Any callable ``f(x, t, context, ofs=None) -> (N, T, 16, H, W)`` as a :class:`Network`,
    checked on every call for the protocol's shapes (for users bringing their own network)."""

    def __init__(self, fn: Callable[..., Tensor], out_channels: int = 16):
        if not callable(fn):
            raise TypeError(f"network must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.out_channels = out_channels

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        out = self.fn(x, t, context, ofs=ofs)
        want = (x.shape[0], x.shape[1], self.out_channels, x.shape[3], x.shape[4])
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"network returned {got}; the protocol needs (N, T, {self.out_channels}, H, W) = {want}")
        return out
