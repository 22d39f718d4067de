"""A diffusers-format CogVideoX folder (2B, 5B, 5B-I2V, 1.5-5B, 1.5-5B-I2V) as a :class:`VideoModel`.

:func:`load_cogvideox` checks the folder's layout from its JSON files before touching a weight,
then loads the five parts with ``local_files_only=True`` (nothing here ever reaches the Hub).
:class:`CogVideoXTransformerNetwork` adapts diffusers' ``CogVideoXTransformer3DModel`` to the
core's :class:`~cogsample.sampling.denoiser.Network` protocol so that every sampler of :mod:`cogsample`
can drive it; the transformer sees exactly the inputs the diffusers pipelines give it.

The folder's size rules are data on its :class:`ModelInfo` (:meth:`ModelInfo.check_size`,
:meth:`ModelInfo.size_for_image`); the reference's I2V image helpers live in :mod:`cogsample.models.images`
(re-exported here).

Layouts: latents ``(B, T, 16, H/8, W/8)`` (frames before channels, as diffusers and SAT both
use for the transformer); the VAE takes ``(B, 16, T, H/8, W/8)``; videos ``(B, F, 3, H, W)``.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import warnings
import weakref
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..sampling.cache import CacheConfig
from ..sampling.calls import current_call
from .base import ModelInfo, VideoModel
from .hook_caches import HookCachedNetwork
from .images import i2v_size, image_to_tensor, resize_image_for_i2v  # model-agnostic; re-exported here
from .layer_skip import perturbed
from .offload import Offload, OffloadMode, check_offload, offload_parts
from .quantize import check_quantize, quantize_transformer
from .ulysses import SequenceParallel

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image

Tensor = torch.Tensor

__all__ = [
    "PIPELINE_CLASSES",
    "CogVideoXModel",
    "CogVideoXTransformerNetwork",
    "check_size_for",
    "first_frame_batch",
    "i2v_size",
    "image_to_tensor",
    "inspect_folder",
    "load_cogvideox",
    "resize_image_for_i2v",
    "untiled_decode_estimate",
    "vae_frame_batch",
    "validate_cogvideox_folder",
]

logger = logging.getLogger(__name__)

#: model_index.json ``_class_name`` values this loader accepts.
PIPELINE_CLASSES = ("CogVideoXPipeline", "CogVideoXImageToVideoPipeline")
PARTS = ("text_encoder", "tokenizer", "transformer", "vae", "scheduler")
TRANSFORMER_CLASS = "CogVideoXTransformer3DModel"
VAE_CLASS = "AutoencoderKLCogVideoX"
TEMPORAL_COMPRESSION = 4
#: The value diffusers' I2V pipeline feeds CogVideoX 1.5 I2V's ``ofs`` input (SAT uses the same).
DEFAULT_OFS = 2.0
#: Native size (height, width) of the released 1.5 models. Their transformer config's
#: sample_height/width (300) is the size of the rotary table, not a generation size (2400 px).
NATIVE_15 = (768, 1360)
#: The short side (px) CogVideoX 1.5 I2V gives the video it makes from an image (the SAT reference's rule).
I2V_SHORT_SIDE_15 = 768
#: Prompt tokens of SAT's CogVideoX 1.5 configs (``max_length: 224``); diffusers' folders say 226.
SAT_TEXT_LEN_15 = 224
#: Latent frames diffusers' VAE decodes at a time (the first batch also takes the odd one).
VAE_FRAME_BATCH = 2
#: Peak bytes of an untiled decode per (first-batch latent frame x output pixel x element size),
#: measured on the released VAE (``benchmarks/vae_memory.py``: 7631-7650 at 1.0's and 1.5's shapes
#: on an H100 in bf16), rounded up for a margin.
VAE_DECODE_BYTES_PER_PX = 8000
#: The released VAE's ``block_out_channels`` (every CogVideoX release), which that figure was measured on.
RELEASED_VAE_CHANNELS = (128, 256, 256, 512)


def first_frame_batch(frames: int, batch: int) -> int:
    """Latent frames in the VAE decoder's first (largest) call: ``batch`` plus the remainder."""
    return batch + frames % batch if frames >= batch else frames


def vae_frame_batch(
    info: ModelInfo, frames: int, reference: str = "diffusers", *, warn: bool = True, stacklevel: int = 2
) -> int:
    """Latent frames per decoder call: diffusers' :data:`VAE_FRAME_BATCH` (the first call takes the
    odd one too; SAT's 1.0 code, v1.0, decodes the same 3, 2, 2, ... chunks of an odd count).
    SAT's 1.5 code (7a1af71) cuts ``frames`` into ``min(10, frames // 2)`` near-equal chunks,
    the larger first: for 21 and 41 frames (81 and 161 video frames) that is diffusers' plan with
    2 and 4 frames a batch. Other counts give chunks diffusers' decoder cannot run the same
    way (it treats every odd-length chunk as holding frame 0): diffusers' plan, with a warning.
    From the model's :class:`ModelInfo` alone, so a plan can ask before anything loads."""
    n = min(10, frames // 2)
    if reference != "sat" or info.patch_size_t is None or n == 0:
        return VAE_FRAME_BATCH
    batch = frames // n
    if frames % n <= 1 and frames // batch == n:
        return batch
    if warn:
        warnings.warn(
            f"SAT decodes {frames} latent frames in {n} chunks of {batch} or {batch + 1}, which diffusers' VAE "
            f"cannot reproduce; decoding in diffusers' batches of {VAE_FRAME_BATCH} instead",
            stacklevel=stacklevel,
        )
    return VAE_FRAME_BATCH


def untiled_decode_estimate(shape: Sequence[int], frame_batch: int, esize: int, *, slicing: bool = False) -> int:
    """Peak memory (bytes) of an untiled decode of latents ``(B, T, 16, h, w)`` in batches of
    ``frame_batch`` latent frames with ``esize``-byte elements: :data:`VAE_DECODE_BYTES_PER_PX` x
    the first batch's frames (the largest; the decoder's activations dominate) x ``64 h w`` x
    element size, plus the decoded video twice (the batches and their concatenation)."""
    b, t, _, h, w = shape
    first = first_frame_batch(t, frame_batch)
    pixels = 64 * h * w
    video = 2 * b * (4 * (t - 1) + 1) * 3 * pixels * esize
    slices = 1 if slicing else b
    return VAE_DECODE_BYTES_PER_PX * slices * first * pixels * esize + video


def planned_decode_estimate(info: ModelInfo, shape: Sequence[int], reference: str, esize: int) -> int | None:
    """Peak memory (bytes) of an untiled decode of latents ``shape`` ``(B, T, 16, h, w)`` for the
    folder of ``info`` as ``reference`` decodes them, with ``esize``-byte elements, from its configs
    alone (:func:`untiled_decode_estimate`); None where its VAE is not the released one
    (:data:`RELEASED_VAE_CHANNELS`), which the estimate was measured on."""
    if tuple(info.extra.get("vae_block_out_channels", ())) != RELEASED_VAE_CHANNELS:
        return None
    batch = vae_frame_batch(info, shape[1], reference, warn=False)
    return untiled_decode_estimate(shape, batch, esize)


# --------------------------------------------------------------------------- the network adapter


def _crop_region(grid_h: int, grid_w: int, base_w: int, base_h: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where a ``grid_h x grid_w`` token grid lands when fitted, aspect kept, into the
    ``base_h x base_w`` grid the 1.0 models were trained on: ``((top, left), (bottom, right))``.

    Uses Python's ``round`` (half to even) like the diffusers pipeline, so the rotary
    coordinates are the same floats.
    """
    if grid_h / grid_w > base_h / base_w:
        fit_h, fit_w = base_h, round(base_h / grid_h * grid_w)
    else:
        fit_w, fit_h = base_w, round(base_w / grid_w * grid_h)
    top = round((base_h - fit_h) / 2.0)
    left = round((base_w - fit_w) / 2.0)
    return (top, left), (top + fit_h, left + fit_w)


class CogVideoXTransformerNetwork:
    """``net(x (N, T, Cin, H, W), t (N,), context (N, L, D), ofs=None) -> (N, T, 16, H, W)``.

    Calls diffusers' ``CogVideoXTransformer3DModel`` the way ``CogVideoXPipeline`` /
    ``CogVideoXImageToVideoPipeline`` do:

    * ``hidden_states=x`` (diffusers' layout is also frames before channels) and
      ``encoder_hidden_states=context``, both cast to the transformer's dtype and device, where
      the pipelines keep them; the output stays in the transformer's dtype (the core casts);
    * ``timestep``: the pipelines pass the scheduler's int64 timestep expanded to the batch; the
      core passes a float tensor holding that integer, which goes in as float32 (see
      :meth:`timestep`: the same embedding, bit for bit). Note: a timestep above 256 held in
      bfloat16 is already rounded (999 -> 1000) before it gets here; keep ``x`` in float32 (the
      alpha-space samplers do) for exact timesteps;
    * ``image_rotary_emb``: as the pipelines' ``_prepare_rotary_positional_embeddings`` (1.0:
      linspace grid cropped into the training grid; 1.5: slice of the ``sample_height x
      sample_width`` table over ``ceil(T / patch_size_t)`` frames), cached per (T, H, W, device);
    * ``ofs`` (1.5 I2V, ``ofs_embed_dim`` set): passed through; when None, a ``(1,)`` tensor of
      2.0 in the input's dtype, what the I2V pipeline passes;
    * ``device``: where inputs go, the execution device; None (default) reads it from the
      transformer's parameters, which is wrong under CPU offload (:mod:`cogsample.models.offload`), where
      the parameters wait on the CPU and only visit the device: offloaded models pass it;
    * temporal patches (1.5, ``patch_size_t``): the transformer needs ``T % patch_size_t == 0``.
      The pipelines make the *sampled* latent longer and drop the extra leading frames after
      sampling; a plain caller may hand any ``T``, so the adapter prepends copies of frame 0
      (noise and image channels alike: I2V image latents become ``[image, image, 0, ...]``, the
      layout the 1.5 pipeline's ``prepare_latents`` builds for an odd latent count), runs the
      padded input and drops the same leading frames of the output: the result always has the
      input's ``T``. A caller that pads itself (as the pipelines do) hands an even ``T``.
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        *,
        vae_scale_factor_spatial: int = 8,
        device: torch.device | str | None = None,
    ):
        config = getattr(transformer, "config", None)
        if config is None or not hasattr(config, "patch_size_t") or not hasattr(config, "in_channels"):
            raise TypeError(f"expected a {TRANSFORMER_CLASS}, got {type(transformer).__name__}")
        self.transformer = transformer
        self.config = config
        self.vae_scale_factor_spatial = int(vae_scale_factor_spatial)
        self.in_channels = int(config.in_channels)
        self.out_channels = int(config.out_channels or config.in_channels)
        self.patch_size = int(config.patch_size)
        self.patch_size_t = None if config.patch_size_t is None else int(config.patch_size_t)
        self.uses_rotary = bool(config.use_rotary_positional_embeddings)
        self.learned_positions = bool(config.use_learned_positional_embeddings)
        # 2B-style models add sin-cos positions over [text tokens, video tokens]: the text must be
        # exactly max_text_seq_length long for the two to line up.
        self.fixed_text_len = not self.uses_rotary or self.learned_positions
        self.uses_ofs = bool(getattr(config, "ofs_embed_dim", None))
        self._rotary: dict[tuple[int, int, int, str], tuple[Tensor, Tensor]] = {}
        #: Ulysses sequence parallel, when :meth:`sequence_parallel` was called
        self.sequence: SequenceParallel | None = None
        self._device = None if device is None else torch.device(device)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """The execution device: the one given, else the transformer's parameters' device."""
        if self._device is not None:
            return self._device
        return next(self.transformer.parameters()).device

    def padding(self, frames: int) -> int:
        """Leading frames added to a ``frames``-long latent so the transformer can take it."""
        return 0 if self.patch_size_t is None else -frames % self.patch_size_t

    def rotary(self, frames: int, height: int, width: int, device: torch.device | str) -> tuple[Tensor, Tensor] | None:
        """The pipelines' ``image_rotary_emb`` (float32 cos, sin) for ``frames`` latent frames of
        ``height x width`` latents (already padded to the temporal patch), or None without rotary."""
        if not self.uses_rotary:
            return None
        device = torch.device(device)
        key = (frames, height, width, str(device))
        if key not in self._rotary:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed

            c, p, s = self.config, self.patch_size, self.vae_scale_factor_spatial
            # The pipelines work from pixel sizes: grid = pixels // (vae factor * patch).
            grid_h, grid_w = (height * s) // (s * p), (width * s) // (s * p)
            base_h, base_w = c.sample_height // p, c.sample_width // p
            if self.patch_size_t is None:
                self._rotary[key] = get_3d_rotary_pos_embed(
                    embed_dim=c.attention_head_dim,
                    crops_coords=_crop_region(grid_h, grid_w, base_w, base_h),
                    grid_size=(grid_h, grid_w),
                    temporal_size=frames,
                    device=device,
                )
            else:
                self._rotary[key] = get_3d_rotary_pos_embed(
                    embed_dim=c.attention_head_dim,
                    crops_coords=None,
                    grid_size=(grid_h, grid_w),
                    temporal_size=-(-frames // self.patch_size_t),
                    grid_type="slice",
                    max_size=(base_h, base_w),
                    device=device,
                )
        return self._rotary[key]

    def _check(self, x: Tensor, t: Tensor, context: Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[2] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            what = " (16 noise + 16 image-latent channels)" if self.in_channels == 2 * self.out_channels else ""
            raise ValueError(
                f"x must be (N, T, Cin, H, W) with Cin = {self.in_channels}, the transformer's in_channels{what}; "
                f"got {got}"
            )
        n, _, _, h, w = x.shape
        c, p = self.config, self.patch_size
        if h % p or w % p:
            raise ValueError(f"latent height and width must be multiples of the patch size {p}, got {h} x {w}")
        if self.learned_positions and (h, w) != (c.sample_height, c.sample_width):
            raise ValueError(
                f"this transformer has learned positional embeddings for {c.sample_height} x {c.sample_width} "
                f"latents ({c.sample_height * 8} x {c.sample_width * 8} px) only; got {h} x {w}"
            )
        if not isinstance(context, torch.Tensor) or context.ndim != 3 or context.shape[0] != n:
            got = tuple(context.shape) if isinstance(context, torch.Tensor) else type(context).__name__
            raise ValueError(f"context must be (N, L, D) with N = {n} like x, got {got}")
        if context.shape[2] != c.text_embed_dim:
            raise ValueError(f"context width {context.shape[2]} != the transformer's text_embed_dim {c.text_embed_dim}")
        if self.fixed_text_len and context.shape[1] != c.max_text_seq_length:
            raise ValueError(
                f"this transformer's positional embeddings need exactly {c.max_text_seq_length} text tokens, "
                f"got {context.shape[1]}"
            )
        if t.numel() not in (1, n):
            raise ValueError(f"t must hold 1 or N = {n} values, got shape {tuple(t.shape)}")

    def hook_cache(self, config: CacheConfig, calls: int | None = None) -> HookCachedNetwork:
        """This network with diffusers' cache hooks of ``config`` on its transformer until ``detach()``
        (what :func:`~cogsample.sampling.cache.apply_cache` makes for every kind but ``output``;
        :mod:`cogsample.models.hook_caches`); ``calls``: the most calls one video makes."""
        return HookCachedNetwork(self, config, calls)

    @property
    def perturbable_blocks(self) -> int:
        """Transformer blocks a perturbed call (PAG, SLG: :mod:`cogsample.models.layer_skip`) can
        drop: a call carrying a :class:`~cogsample.sampling.calls.Perturbation` runs with it."""
        return len(self.transformer.transformer_blocks)

    def sequence_parallel(self, group: Any, rank: int, size: int) -> SequenceParallel:
        """Shard the transformer's video tokens over ``size`` ranks of ``group`` (Ulysses,
        :mod:`cogsample.models.ulysses`) from now on; the outputs stay whole on every rank."""
        if self.sequence is not None:
            raise RuntimeError("this network is already sequence-parallel")
        self.sequence = SequenceParallel(group, rank, size).attach(self.transformer)
        return self.sequence

    def timestep(self, t: Tensor | float, n: int) -> Tensor:
        """``t`` as an ``(n,)`` float32 tensor on the transformer's device.

        The pipelines pass the scheduler's int64 timestep; the transformer's only use of it is
        ``get_timestep_embedding``, whose first step is ``timesteps.float()``. float32 holds every
        integer timestep exactly, so the embedding is bit-identical, fractional values (sigma
        scalings' ``c_noise``) still work, and no device sync is needed to tell the two apart.
        """
        t = torch.as_tensor(t, device=self.device).reshape(-1).to(torch.float32)
        return t.expand(n) if t.numel() == 1 else t

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        """Transformer output ``(N, T, out_channels, H, W)`` in the transformer's dtype."""
        t = torch.as_tensor(t)
        self._check(x, t, context)
        n, frames, _, h, w = x.shape
        dtype, device = self.dtype, self.device
        x = x.to(device=device, dtype=dtype)
        context = context.to(device=device, dtype=dtype)
        pad = self.padding(frames)
        if pad:
            x = torch.cat([x[:, :1].expand(-1, pad, -1, -1, -1), x], dim=1)
        if ofs is None and self.uses_ofs:
            ofs = x.new_full((1,), DEFAULT_OFS)
        elif ofs is not None:
            ofs = torch.as_tensor(ofs, device=device).reshape(-1)
        perturb = current_call().perturb
        with torch.no_grad(), perturbed(self.transformer, perturb) if perturb is not None else nullcontext():
            out = self.transformer(
                hidden_states=x,
                encoder_hidden_states=context,
                timestep=self.timestep(t, n),
                ofs=ofs,
                image_rotary_emb=self.rotary(frames + pad, h, w, device),
                return_dict=False,
            )[0]
        return out[:, pad:] if pad else out


# --------------------------------------------------------------------------- folder checks


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def validate_cogvideox_folder(path: str | Path) -> dict[str, dict[str, Any]]:
    """Check a diffusers CogVideoX folder's layout without loading weights.

    Returns its configs: ``{"model_index", "transformer", "vae", "scheduler"}``. Raises
    ``FileNotFoundError`` for a missing folder, file or part (naming it and the path) and
    ``ValueError`` for a folder of another model.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CogVideoX folder not found: {root}")
    index_path = root / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"not a diffusers model folder: {root} has no model_index.json")
    index = _read_json(index_path)
    name = index.get("_class_name")
    if name not in PIPELINE_CLASSES:
        raise ValueError(
            f"not a CogVideoX folder: model_index.json names {name!r} ({index_path}); "
            f"expected one of {', '.join(PIPELINE_CLASSES)}"
        )
    missing = [part for part in PARTS if not (root / part).is_dir()]
    if missing:
        raise FileNotFoundError(f"CogVideoX folder {root} is missing {', '.join(p + '/' for p in missing)}")
    configs: dict[str, dict[str, Any]] = {"model_index": index}
    for part, file, cls in (
        ("transformer", "config.json", TRANSFORMER_CLASS),
        ("vae", "config.json", VAE_CLASS),
        ("scheduler", "scheduler_config.json", None),
    ):
        config = _read_json(root / part / file)
        if cls is not None and config.get("_class_name") != cls:
            raise ValueError(
                f"{root / part / file}: the {part} is a {config.get('_class_name')!r}, not a {cls} "
                "(not a CogVideoX folder)"
            )
        configs[part] = config
    return configs


def _info(root: Path, configs: dict[str, dict[str, Any]]) -> ModelInfo:
    tc, vc = configs["transformer"], configs["vae"]
    in_ch, out_ch = int(tc.get("in_channels", 16)), int(tc.get("out_channels") or tc.get("in_channels", 16))
    pipeline = configs["model_index"]["_class_name"]
    p_t = tc.get("patch_size_t")
    spatial = 2 ** (len(vc.get("block_out_channels", (0, 0, 0, 0))) - 1)
    max_h, max_w = int(tc.get("sample_height", 60)) * spatial, int(tc.get("sample_width", 90)) * spatial
    frames = int(tc.get("sample_frames", 49))
    if p_t is None:
        height, width = max_h, max_w
    else:
        height, width = min(NATIVE_15[0], max_h), min(NATIVE_15[1], max_w)
    name = root.resolve().name
    i2v = in_ch == 2 * out_ch or pipeline == "CogVideoXImageToVideoPipeline"
    learned = bool(tc.get("use_learned_positional_embeddings", False))
    return ModelInfo(
        name=name,
        i2v=i2v,
        uses_ofs=bool(tc.get("ofs_embed_dim")),
        patch_size_t=None if p_t is None else int(p_t),
        latent_channels=out_ch,
        max_text_len=int(tc.get("max_text_seq_length", 226)),
        frames=frames,
        height=height,
        width=width,
        scheduler=dict(configs["scheduler"]),
        # SAT's 1.5 configs encode prompts to 224 tokens (its 1.0 configs: 226, as diffusers)
        sat_text_len=None if p_t is None else SAT_TEXT_LEN_15,
        # CogVideoX-2B (sin-cos positions, no rotary) is run in fp16 by SAT and its model card
        accelerator_dtype="bfloat16" if tc.get("use_rotary_positional_embeddings", False) else "float16",
        extra={
            "path": str(root),
            "pipeline": pipeline,
            "patch_size": int(tc.get("patch_size", 2)),
            "vae_scale_factor_spatial": spatial,
            "vae_block_out_channels": [int(c) for c in vc.get("block_out_channels", ())],
            "vae_scaling_factor": float(vc.get("scaling_factor", 1.15258426)),
            "invert_scale_latents": bool(vc.get("invert_scale_latents", False)),
            "rotary": bool(tc.get("use_rotary_positional_embeddings", False)),
            "learned_positional_embeddings": learned,
            "max_height": max_h,
            "max_width": max_w,
            # Frame rate of the released models' videos: 8 for 1.0, 16 for 1.5.
            "fps": 8 if p_t is None else 16,
            "transformer_config": dict(tc),
        },
        # the sizes: 8x VAE times the patch; 5B-I2V's learned positions cover the native size only;
        # 1.5's rotary table caps height and width, and its I2V model takes the size from the image
        size_multiple=spatial * int(tc.get("patch_size", 2)),
        fixed_size=(
            f"{name}: its learned positional embeddings cover {frames} frames at {height} x {width} only"
            if learned
            else None
        ),
        max_height=None if p_t is None else max_h,
        max_width=None if p_t is None else max_w,
        image_short_side=I2V_SHORT_SIDE_15 if p_t is not None and i2v else None,
        attention_heads=int(tc.get("num_attention_heads", 30)),
        attention_head_dim=int(tc.get("attention_head_dim", 64)),
        patch_size=int(tc.get("patch_size", 2)),
        blocks=int(tc.get("num_layers", 30)),
    )


def inspect_folder(path: str | Path) -> ModelInfo:
    """The :class:`ModelInfo` of a CogVideoX folder, from its JSON files only (no weights)."""
    root = Path(path).expanduser()
    return _info(root, validate_cogvideox_folder(root))


# --------------------------------------------------------------------------- sizes


def check_size_for(info: ModelInfo, frames: int, height: int, width: int) -> None:
    """``ValueError`` naming the parameter for a size the model of ``info`` cannot generate:
    :meth:`ModelInfo.check_size`, whose rules :func:`inspect_folder` fills in from the configs
    (``frames = 4k + 1``; multiples of 16; 5B-I2V's learned positional embeddings: the native size
    only; 1.5: within the rotary table)."""
    info.check_size(frames, height, width)


# --------------------------------------------------------------------------- the model


class CogVideoXModel(VideoModel):
    """A loaded CogVideoX folder. Parts: ``tokenizer``, ``text_encoder`` (None once released),
    ``transformer``, ``vae``; ``network`` is the transformer's :class:`CogVideoXTransformerNetwork`.

    ``tiling``/``slicing``: :meth:`decode`'s defaults for the VAE's tiled and per-sample decoding
    (tiling off, as SAT and diffusers' pipelines decode; when on, diffusers only tiles frames larger
    than its tile, half the VAE's sample size: 240 x 360 px for the released VAE). ``image_scaling``:
    ``"diffusers"`` or ``"sat"``, see :meth:`encode_image`.

    ``offload`` (:mod:`cogsample.models.offload`; needs an accelerator ``device``, ``ValueError`` on the
    CPU): ``"model"`` keeps the parts on the CPU and brings each to ``device`` while it is in use
    (one at a time: CogVideoX-5B in bf16 then fits a 24 GB GPU, as diffusers'
    ``enable_model_cpu_offload``); ``"sequential"`` brings every submodule's weights in only
    for its forward (leanest, slowest: ``enable_sequential_cpu_offload``). ``device`` stays the
    execution device: inputs and outputs live there. :meth:`decode` ends by sending the VAE
    back, so no weight occupies the device between generations. :meth:`disable_offload` undoes it.
    """

    def __init__(
        self,
        info: ModelInfo,
        *,
        tokenizer: Any,
        text_encoder: torch.nn.Module,
        transformer: torch.nn.Module,
        vae: torch.nn.Module,
        dtype: torch.dtype,
        device: torch.device,
        tiling: bool = False,
        slicing: bool = False,
        image_scaling: str = "diffusers",
        offload: OffloadMode = "none",
    ):
        if image_scaling not in ("diffusers", "sat"):
            raise ValueError(f"image_scaling must be 'diffusers' or 'sat', got {image_scaling!r}")
        device = torch.device(device)
        check_offload(offload, device)
        self.info = info
        self.tokenizer = tokenizer
        self.text_encoder: torch.nn.Module | None = text_encoder
        self.transformer = transformer
        self.vae = vae
        self.dtype = dtype
        self.device = device
        self.tiling = tiling
        self.slicing = slicing
        self.image_scaling = image_scaling
        self.network = CogVideoXTransformerNetwork(
            transformer, vae_scale_factor_spatial=info.extra["vae_scale_factor_spatial"], device=device
        )
        self.offload: OffloadMode = offload
        # diffusers' VAE decodes and encodes without going through forward: hook those methods.
        self.offloader: Offload | None = offload_parts(
            {"text_encoder": text_encoder, "transformer": transformer, "vae": vae},
            offload,
            device,
            entry_points={"vae": ("encode", "decode")},
        )

    def disable_offload(self) -> None:
        """Remove the offload hooks and move every part to :attr:`device` (no-op without offload)."""
        if self.offloader is None:
            return
        self.offloader.remove()
        self.offloader = None
        self.offload = "none"
        for module in (self.text_encoder, self.transformer, self.vae):
            if module is not None:
                module.to(self.device)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    # -- text

    def encode_prompts(self, prompts: Sequence[str] | str, max_length: int | None = None) -> Tensor:
        """T5 embeddings ``(B, L, D)`` in the model's dtype, as diffusers' ``_get_t5_prompt_embeds``
        and SAT's T5 embedder: padded to ``L = max_length`` tokens (default ``max_text_len``; SAT's
        1.5 configs use 224, :meth:`ModelInfo.text_len`), truncated (with a warning naming what
        was cut) when longer, ``</s>`` appended."""
        if self.text_encoder is None:
            raise RuntimeError("the text encoder was released (release_text_encoder()); encode prompts before that")
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a non-empty sequence of strings, got {prompts!r}")
        length = self.info.max_text_len if max_length is None else int(max_length)
        if self.network.fixed_text_len and length != self.info.max_text_len:
            raise ValueError(
                f"max_length must be {self.info.max_text_len} for {self.info.name}: its positional embeddings "
                f"cover exactly that many text tokens, got {length}"
            )
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        full = self.tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
        if full.shape[-1] >= ids.shape[-1] and not torch.equal(ids, full):
            # As diffusers: the last kept position holds </s>, so the cut starts one token earlier.
            cut = self.tokenizer.batch_decode(full[:, length - 1 : -1])
            logger.warning("prompt truncated to %d tokens; removed: %s", length, cut)
        with torch.no_grad():
            embeds = self.text_encoder(ids.to(self.device))[0]
        return embeds.to(dtype=self.text_encoder.dtype, device=self.device)

    def release_text_encoder(self) -> None:
        """Drop the text encoder (about 9 GB for the released T5-XXL); encode_prompts then raises."""
        if self.text_encoder is None:
            return
        if self.offloader is not None:
            self.offloader.forget("text_encoder")  # the hooks hold a reference to it
        gone = weakref.ref(self.text_encoder)
        self.text_encoder = None
        # A full collection costs ~0.2 s in a big process. Refcounting frees the encoder at once
        # when nothing else holds it; a reference cycle would keep it until the collector runs,
        # which matters on an accelerator, where the transformer needs that memory next.
        if gone() is not None and self.device.type == "cuda":
            gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- images (I2V)

    def i2v_image(self, image: Image.Image, height: int | None = None, width: int | None = None) -> Tensor:
        """An image ready for :meth:`encode_image`: ``(1, 3, H, W)`` float32 in [-1, 1].

        Size: ``height x width`` when given (resize and centre-crop); else the 1.0 I2V model's
        native size, or for 1.5 the short-side-768 rule (:func:`i2v_size`).
        """
        if height is None and width is None and self.info.patch_size_t is None:
            height, width = self.info.height, self.info.width
        return image_to_tensor(resize_image_for_i2v(image, height, width))

    def encode_image(
        self,
        images: Tensor,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        *,
        sample: bool = True,
    ) -> Tensor:
        """Image latents ``(B, 1, 16, H/8, W/8)`` in the model's dtype, from ``images (B, 3, H, W)``
        in [-1, 1], as the diffusers I2V pipeline's ``prepare_latents``.

        Each image is encoded alone (``vae.encode`` of ``(1, 3, 1, H, W)``) and its posterior is
        *sampled*, ``latent_dist.sample(generator)`` with the one generator shared by all images in
        turn or ``generator[i]`` for image ``i`` (the pipeline uses its own ``generator`` here,
        before drawing the initial noise from it); ``sample=False`` takes the mean instead. Then
        the VAE's scaling: times ``scaling_factor``, or, for VAEs with ``invert_scale_latents``
        (1.5), divided by it as diffusers does. With ``image_scaling="sat"`` a 1.5 image latent is
        left unscaled instead, as SAT's ``sample_video.py`` (encode times scale, then / scale).
        """
        if not self.info.i2v:
            raise ValueError(f"{self.info.name} is a text-to-video model: it takes no image")
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be (B, 3, H, W) in [-1, 1], got {got}")
        multiple = self.info.extra["vae_scale_factor_spatial"] * self.info.extra["patch_size"]
        if images.shape[2] % multiple or images.shape[3] % multiple:
            raise ValueError(f"image height and width must be multiples of {multiple}, got {tuple(images.shape[2:])}")
        if images.is_floating_point() and images.numel() and (images.min() < -1.001 or images.max() > 1.001):
            raise ValueError(
                f"images must be in [-1, 1], got values in [{float(images.min()):.3g}, {float(images.max()):.3g}]"
            )
        b = images.shape[0]
        if isinstance(generator, Sequence) and len(generator) != b:
            raise ValueError(f"{len(generator)} generators for {b} images")
        images = images.to(device=self.device, dtype=self.dtype)
        latents = []
        # both sources encode the first frame whole; a decode's tiling must not carry over
        with torch.no_grad(), self._vae_flags(tiling=False):
            for i in range(b):
                dist = self.vae.encode(images[i : i + 1].unsqueeze(2)).latent_dist
                g = generator[i] if isinstance(generator, Sequence) else generator
                latents.append(dist.sample(g) if sample else dist.mode())
        z = torch.cat(latents).to(self.dtype).permute(0, 2, 1, 3, 4)
        if not self.vae.config.get("invert_scale_latents", False):
            return self.scaling_factor * z
        if self.image_scaling == "sat":
            return z
        # diffusers' 1.5 quirk: the image latent is divided by the scaling factor.
        return 1 / self.scaling_factor * z

    def encode_keyframe(self, image: Tensor, frame: int) -> tuple[Tensor, Tensor | None]:
        """The causal VAE's latent of video frame ``frame`` given as ``image (1, 3, H, W)``: frame 0
        encodes the image alone (latent frame 0, as an I2V first frame); a later frame sits in a
        latent frame that covers four frames, so the image is held still over them, with itself
        as the causal history (``vae.encode`` of the image repeated 5 times, latent frame 1).
        The posterior's mean, times the scaling factor (the sampled latents' space,
        :meth:`latents_for_vae`); every channel held."""
        if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[:2] != (1, 3):
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"a keyframe image must be (1, 3, H, W) in [-1, 1], got {got}")
        video = image.to(device=self.device, dtype=self.dtype).unsqueeze(2)
        if frame > 0:
            video = video.expand(-1, -1, 5, -1, -1).contiguous()
        with torch.no_grad(), self._vae_flags(tiling=False):
            z = self.vae.encode(video).latent_dist.mode()[:, :, -1:]
        return self.scaling_factor * z.to(self.dtype).permute(0, 2, 1, 3, 4), None

    def encode_video(self, video: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Video latents ``(B, T, 16, H/8, W/8)`` in the model's dtype from ``video (B, F, 3, H, W)``
        in [-1, 1], as ``CogVideoXVideoToVideoPipeline.prepare_latents``: each video encoded whole
        (``vae.encode`` of ``(1, 3, F, H, W)``, untiled), its posterior sampled with ``generator``
        (None: torch's global one), then ``.to(dtype)``, frames first, times ``scaling_factor``
        (times, also for 1.5's VAE, as that pipeline does)."""
        if not isinstance(video, torch.Tensor) or video.ndim != 5 or video.shape[2] != 3:
            got = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ValueError(f"video must be (B, F, 3, H, W) in [-1, 1], got {got}")
        video = video.to(device=self.device, dtype=self.dtype).permute(0, 2, 1, 3, 4)
        with torch.no_grad(), self._vae_flags(tiling=False):
            latents = [self.vae.encode(v.unsqueeze(0)).latent_dist.sample(generator) for v in video]
        z = torch.cat(latents, dim=0).to(self.dtype).permute(0, 2, 1, 3, 4)
        return self.scaling_factor * z

    # -- decoding

    def latents_for_vae(self, latents: Tensor) -> Tensor:
        """``(B, 16, T, H/8, W/8)`` in the VAE's dtype, ``latents (B, T, 16, H/8, W/8)`` divided by
        the scaling factor: exactly what diffusers' ``decode_latents`` hands ``vae.decode``.

        Takes the *un-padded* latents: a 1.5 pipeline that sampled extra leading frames (to make
        T a multiple of ``patch_size_t``) drops them first, as diffusers does before decoding.
        """
        if not isinstance(latents, torch.Tensor) or latents.ndim != 5 or latents.shape[2] != self.info.latent_channels:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be (B, T, {self.info.latent_channels}, H/8, W/8), got {got}")
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents.to(device=self.device, dtype=vae_dtype).permute(0, 2, 1, 3, 4)
        # Python-float reciprocal times the tensor, the same arithmetic as diffusers.
        return 1 / self.scaling_factor * z

    @contextmanager
    def _vae_flags(self, *, tiling: bool, slicing: bool | None = None, frame_batch: int | None = None):
        """The VAE's tiling / slicing / frame-batch settings for one call, restored afterwards:
        they live on the shared module, and nothing may carry from one video to the next."""
        vae = self.vae
        saved = (vae.use_tiling, vae.use_slicing, vae.num_latent_frames_batch_size)
        vae.use_tiling = tiling
        vae.use_slicing = self.slicing if slicing is None else slicing
        if frame_batch is not None:
            vae.num_latent_frames_batch_size = frame_batch
        try:
            yield vae
        finally:
            vae.use_tiling, vae.use_slicing, vae.num_latent_frames_batch_size = saved

    def frame_batch(self, frames: int, reference: str = "diffusers", *, warn: bool = True) -> int:
        """Latent frames per decoder call for this model: :func:`vae_frame_batch`."""
        return vae_frame_batch(self.info, frames, reference, warn=warn, stacklevel=4)

    def prepare_decode(self) -> None:
        """Under offload, send the resident part (the transformer, after sampling) back to the CPU now
        rather than when the VAE arrives, so the free memory the tiling decision reads is the decode's."""
        if self.offloader is not None:
            self.offloader.release()

    def untiled_decode_bytes(self, shape: Sequence[int], reference: str = "diffusers") -> int:
        """Peak memory (bytes) of an untiled :meth:`decode` of latents ``(B, T, 16, h, w)`` in the
        ``reference``'s frame batches (:meth:`frame_batch`) and the VAE's dtype:
        :func:`untiled_decode_estimate`."""
        esize = torch.finfo(next(self.vae.parameters()).dtype).bits // 8
        batch = self.frame_batch(shape[1], reference, warn=False)
        return untiled_decode_estimate(shape, batch, esize, slicing=self.slicing)

    def decode(
        self,
        latents: Tensor,
        *,
        tiling: bool | None = None,
        slicing: bool | None = None,
        reference: str = "diffusers",
    ) -> Tensor:
        """Video ``(B, F, 3, H, W)`` float32 in [0, 1], ``F = 4 (T - 1) + 1`` for odd ``T`` (diffusers'
        VAE decodes frame 0 with the first pair, then pairs: an even ``T`` gives ``4 T``).

        ``vae.decode`` of :meth:`latents_for_vae` in the VAE's dtype, in the frame batches of the
        ``reference`` (``"diffusers"`` or ``"sat"``, :meth:`frame_batch`), then ``x / 2 + 1/2``
        clamped to [0, 1] in float32 (SAT converts to float32 first; diffusers' pipeline does this in
        the VAE's dtype, which in bf16 moves values by up to a grey level; in float32 the two are the
        same). ``tiling``: spatial tiles (diffusers' tiled decode: less memory, seams blended; neither
        source tiles unless asked); None: the model's default. ``slicing``: decode a batch one sample
        at a time. The VAE's settings are restored afterwards."""
        z = self.latents_for_vae(latents)
        tiling = self.tiling if tiling is None else tiling
        batch = self.frame_batch(z.shape[2], reference)
        with torch.no_grad(), self._vae_flags(tiling=tiling, slicing=slicing, frame_batch=batch):
            frames = self.vae.decode(z).sample
        if self.offloader is not None:
            # Decoding ends a generation: leave the device empty, as diffusers' pipelines do.
            self.offloader.release()
        return (frames.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)


# --------------------------------------------------------------------------- loading


def _default_dtype(device: torch.device) -> torch.dtype:
    # Half precision where the hardware is built for it; float32 on the CPU, where bfloat16
    # matmuls are slow and float16 ones are not supported everywhere.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_cogvideox(
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    tiling: bool = True,
    slicing: bool = False,
    image_scaling: str = "diffusers",
    offload: OffloadMode = "none",
    quantize: str = "none",
) -> CogVideoXModel:
    """Load a diffusers-format CogVideoX folder from local disk (never the Hub).

    The layout is validated first (:func:`validate_cogvideox_folder`). ``dtype``: all parts'
    dtype (float32, float16 or bfloat16; default bfloat16 on CUDA, float32 elsewhere).
    ``offload``: ``"none"``, ``"model"`` or ``"sequential"`` (see :class:`CogVideoXModel`); with
    offload the parts are loaded to the CPU and stay there, ``device`` is where they run.
    ``quantize``: the transformer's Linear weights (:mod:`cogsample.models.quantize`), quantized one
    layer at a time on ``device`` (without offload) so its unquantized weights never all sit there.
    """
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import AutoTokenizer, T5EncoderModel

    root = Path(path).expanduser()
    configs = validate_cogvideox_folder(root)
    info = _info(root, configs)
    device = torch.device(device)
    check_offload(offload, device)  # before any weight is read
    check_quantize(quantize, device)
    dtype = dtype or _default_dtype(device)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    # diffusers' low-memory loading needs accelerate; without it, say so instead of letting it warn.
    low_mem = {} if importlib.util.find_spec("accelerate") else {"low_cpu_mem_usage": False}
    tokenizer = AutoTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    text_encoder = T5EncoderModel.from_pretrained(str(root / "text_encoder"), local_files_only=True, dtype=dtype)
    transformer = CogVideoXTransformer3DModel.from_pretrained(
        str(root / "transformer"), local_files_only=True, torch_dtype=dtype, **low_mem
    )
    vae = AutoencoderKLCogVideoX.from_pretrained(str(root / "vae"), local_files_only=True, torch_dtype=dtype, **low_mem)
    for module in (text_encoder, transformer, vae):
        module.eval().requires_grad_(False)
        if module is transformer and quantize != "none":
            quantize_transformer(module, quantize, device=device if offload == "none" else None)
        if offload == "none":
            module.to(device)  # offloaded parts stay on the CPU: the hooks move them
    return CogVideoXModel(
        info,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=transformer,
        vae=vae,
        dtype=dtype,
        device=device,
        tiling=tiling,
        slicing=slicing,
        image_scaling=image_scaling,
        offload=offload,
    )
