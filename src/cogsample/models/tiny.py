"""Tiny random-weight CogVideoX folders in diffusers format, built offline in about a second.

``build_tiny_folder(path, kind)`` writes what ``CogVideoXPipeline.save_pretrained`` writes for a
real checkpoint (``model_index.json``, ``text_encoder/``, ``tokenizer/``, ``transformer/``,
``vae/``, ``scheduler/``), with every part shrunk but structurally faithful to the released
configs:

* ``"t2v"``: CogVideoX-5B style (3D rotary embeddings, ``CogVideoXDPMScheduler``, SNR shift 1);
* ``"t2v-2b"``: CogVideoX-2B style (sin-cos positional embeddings, no rotary, DDIM, SNR shift 3);
* ``"i2v"``: CogVideoX-5B-I2V (``in_channels`` 32, rotary and learned positional embeddings,
  so only the native size works);
* ``"t2v-1.5"``: CogVideoX1.5-5B (``patch_size_t`` 2, no patch bias, slice rotary grid,
  VAE ``invert_scale_latents``);
* ``"i2v-1.5"``: CogVideoX1.5-5B-I2V (as t2v-1.5 with ``in_channels`` 32 and ``ofs_embed_dim``).

Default sizes (:class:`TinySize`): transformer 1 layer of 2 heads x 16 dims (the rotary
embedding splits the head dim into ``dim/4 + 3 dim/8 + 3 dim/8`` halves, so 16 is the smallest
head that works, and any multiple of 16 works), text width 32, 16 prompt tokens; VAE with 4 blocks
(8x spatial) and ``temporal_compression_ratio`` 4, exactly the released compression; a 1-layer T5
encoder with a 40-token Unigram vocabulary. The benchmark builds a larger transformer (more
layers, heads and head dims) so that its forward, not the sampler, dominates a step.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["KINDS", "NATIVE", "TEXT_LEN", "TinySize", "build_tiny_folder", "tiny_transformer"]

KINDS = ("t2v", "t2v-2b", "i2v", "t2v-1.5", "i2v-1.5")

#: Prompt tokens of the tiny models (the transformer's ``max_text_seq_length``).
TEXT_LEN = 16
#: Native latent sample size (H, W) of the 1.0-style tiny transformers: 32 x 48 px, 9 frames.
NATIVE = {"latent_height": 4, "latent_width": 6, "frames": 9}

_WORDS = (
    "a cat dog runs on the grass under blue sky in slow motion red car drives through city at night "
    "beautiful ocean waves"
).split()


@dataclass(frozen=True)
class TinySize:
    """Transformer and text-encoder size knobs; the defaults are what the tests use.

    ``num_layers`` transformer blocks of ``num_heads x head_dim`` (``head_dim`` a multiple of 16,
    see the module docstring); ``text_dim``: the T5 width, which is also the transformer's
    ``text_embed_dim`` (a multiple of 4: T5 runs 4 heads of ``text_dim / 4``); ``text_len``:
    prompt tokens (``max_text_seq_length``). ``latent_height``, ``latent_width``, ``frames``:
    the 1.0-style transformers' native sample size (the 1.5 ones keep their 16 x 16 rotary
    table), in latents and video frames.
    """

    num_layers: int = 1
    num_heads: int = 2
    head_dim: int = 16
    text_dim: int = 32
    text_len: int = TEXT_LEN
    latent_height: int = NATIVE["latent_height"]
    latent_width: int = NATIVE["latent_width"]
    frames: int = NATIVE["frames"]

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.head_dim % 16:
            raise ValueError(f"head_dim must be a multiple of 16 (the 3D rotary split), got {self.head_dim}")
        if self.text_dim % 4:
            raise ValueError(f"text_dim must be a multiple of 4 (4 T5 heads), got {self.text_dim}")
        if self.latent_height % 2 or self.latent_width % 2:
            raise ValueError(
                f"latent_height and latent_width must be even (2x2 patches), got {self.latent_height} x "
                f"{self.latent_width}"
            )
        if (self.frames - 1) % 4:
            raise ValueError(f"frames must be of the form 4k+1, got {self.frames}")


def _tokenizer() -> Any:
    from transformers import T5Tokenizer

    # T5's layout: pad 0, eos 1, unk 2, then SentencePiece pieces ("▁" marks a word start).
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0 - 0.01 * i) for i, w in enumerate(_WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def _text_encoder(vocab_size: int, size: TinySize) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=size.text_dim,
        d_kv=size.text_dim // 4,
        d_ff=2 * size.text_dim,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as the released CogVideoX text encoder
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
    )
    return T5EncoderModel(config).eval()


def tiny_transformer(kind: str = "t2v", size: TinySize | None = None) -> Any:
    """The random-weight ``CogVideoXTransformer3DModel`` of a tiny ``kind`` folder (torch's global
    RNG draws its weights), structurally faithful to the released configs."""
    from diffusers import CogVideoXTransformer3DModel

    size = size or TinySize()

    is_15 = kind.endswith("1.5")
    i2v = kind.startswith("i2v")
    kwargs: dict[str, Any] = dict(
        num_attention_heads=size.num_heads,
        attention_head_dim=size.head_dim,
        in_channels=32 if i2v else 16,
        out_channels=16,
        time_embed_dim=16,
        text_embed_dim=size.text_dim,
        num_layers=size.num_layers,
        max_text_seq_length=size.text_len,
        temporal_compression_ratio=4,
    )
    if is_15:
        # 1.5: sample_height/width are the slice-rotary table size (300 for the released models).
        kwargs.update(
            patch_size=2,
            patch_size_t=2,
            patch_bias=False,
            sample_height=16,
            sample_width=16,
            sample_frames=13,
            use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=False,
            ofs_embed_dim=16 if i2v else None,  # must equal time_embed_dim: the two are summed
        )
    else:
        kwargs.update(
            patch_size=2,
            sample_height=size.latent_height,
            sample_width=size.latent_width,
            sample_frames=size.frames,
            use_rotary_positional_embeddings=kind != "t2v-2b",
            use_learned_positional_embeddings=kind == "i2v",
        )
    return CogVideoXTransformer3DModel(**kwargs).eval()


def _vae(kind: str) -> Any:
    from diffusers import AutoencoderKLCogVideoX

    blocks = 4  # 2 ** (4 - 1) = 8x spatial compression; time: temporal_compression_ratio
    return AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * blocks,
        up_block_types=("CogVideoXUpBlock3D",) * blocks,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=4,
        # Tiling splits frames larger than half these (48 x 80 px, 6 x 10 latents), so 32 x 48 px
        # videos decode whole and 64 x 96 px ones in tiles. diffusers' tile arithmetic only adds
        # up (tiles of 8 x overlap px) for some sizes: 6 and 10 latents work, like the real 30 x 45.
        sample_height=96,
        sample_width=160,
        scaling_factor=0.7 if kind != "t2v-2b" else 1.15258426,
        invert_scale_latents=kind.endswith("1.5"),
    ).eval()


def _scheduler(kind: str) -> Any:
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    # The released scheduler_config.json values: 5B / 1.5 use SNR shift 1.0, 2B uses 3.0.
    config = dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        snr_shift_scale=3.0 if kind == "t2v-2b" else 1.0,
    )
    cls = CogVideoXDDIMScheduler if kind == "t2v-2b" else CogVideoXDPMScheduler
    return cls(**config)


def build_tiny_folder(path: str | Path, kind: str = "t2v", seed: int = 0, size: TinySize | None = None) -> Path:
    """Write a tiny random-weight diffusers CogVideoX folder of ``kind`` (see :data:`KINDS`) at ``path``.

    Weights are float32 and depend only on ``seed`` and ``size`` (default :class:`TinySize`()).
    Returns ``Path(path)``.
    """
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    size = size or TinySize()
    path = Path(path)
    # A private generator would be nicer, but the parts' constructors draw from the global one.
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    parts = dict(
        tokenizer=tokenizer,
        text_encoder=_text_encoder(len(tokenizer), size),
        vae=_vae(kind),
        transformer=tiny_transformer(kind, size),
        scheduler=_scheduler(kind),
    )
    cls = CogVideoXImageToVideoPipeline if kind.startswith("i2v") else CogVideoXPipeline
    cls(**parts).save_pretrained(str(path))
    # A record of what was built, for test messages (ignored by the loader).
    (path / "tiny_kind.json").write_text(json.dumps({"kind": kind, "seed": seed, "size": asdict(size)}))
    return path
