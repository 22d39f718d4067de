"""The trained built-in model: a small diffusers CogVideoX transformer that learned :data:`FAMILY`.

The exact built-in model's denoiser is a closed-form posterior mean: no learned error, nothing for
guidance to correct. This one is a real ``CogVideoXTransformer3DModel`` (3 blocks of 4 heads x 32,
1.0-style 3D rotary positions, ``ofs`` embedding as CogVideoX 1.5 I2V, ``in_channels`` 32) trained
with CogVideoX's objective on data whose distribution is known exactly (the clip family's Gaussian
mixture, :mod:`cogsample.models.family`), so its samples can still be scored exactly.

* **Text encoder** (:class:`CaptionEncoder`, fixed, no weights): four tokens, one per attribute
  slot (colour, shape, motion, background), each the sum of fixed +-1/sqrt(D) vectors (one per
  slot and canonical word) of the words the prompt names in that slot (:func:`~cogsample.models.builtin.parse_prompt`),
  zero where it names none. The empty prompt is all zeros: the unconditional branch.
* **Objective**: v-prediction MSE on the ZeroSNR DDPM table with CogVideoX-5B's shift (1.0),
  timesteps uniform over 0..999 (SAT's ``VideoDiffusionLoss`` weights the x0 error by
  ``1 / (1 - alpha^2)``, which for the v-parameterization is exactly this). Each training caption
  keeps each attribute slot with probability 1/2 and is dropped whole 10% of the time (caption
  dropout, so CFG has something to do); p(clip | caption) is then uniform over the clips the
  caption allows, :func:`~cogsample.models.family.family_weights`. Half the samples carry their
  first latent frame in the image channels (image-to-video), the rest zeros (text-to-video).
* **Weights** ship in the package (``trained_weights/``, a diffusers transformer folder) and are
  what :func:`train` with the defaults writes (``cogsample train-tiny``).

The model works at its training size only: 9 frames of 64 x 96 px (latents 3 x 8 x 12).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..sampling.noise import LATENT_CHANNELS, latent_shape
from ..sampling.schedules import ZeroSNRDDPM
from .base import ModelInfo
from .builtin import DEFAULT_TAU, BlockVAE, BlockVAEModel, MixtureNetwork, parse_prompt
from .cogvideox import CogVideoXTransformerNetwork
from .family import FAMILY

Tensor = torch.Tensor

__all__ = [
    "FRAMES",
    "HEIGHT",
    "LORAS",
    "TEXT_DIM",
    "TRANSFORMER_CONFIG",
    "WEIGHTS",
    "WIDTH",
    "CaptionEncoder",
    "TextToVideoNetwork",
    "TrainConfig",
    "TrainedModel",
    "load_transformer",
    "train",
    "trained_info",
]

#: The training size (video frames, pixels); latents (3, 16, 8, 12).
FRAMES, HEIGHT, WIDTH = 9, 64, 96
#: Text token width and count (one token per attribute slot).
TEXT_DIM, TEXT_SLOTS = 32, 4
#: The shipped weights: a diffusers ``CogVideoXTransformer3DModel`` folder.
WEIGHTS = Path(__file__).with_name("trained_weights")
#: LoRAs trained on it (:mod:`cogsample.models.lora_training`): ``black-background``, ``red-object``.
LORAS = Path(__file__).with_name("trained_loras")

TRANSFORMER_CONFIG: dict[str, Any] = {
    "num_attention_heads": 6,
    "attention_head_dim": 32,
    "in_channels": 2 * LATENT_CHANNELS,
    "out_channels": LATENT_CHANNELS,
    "time_embed_dim": 64,
    "ofs_embed_dim": 64,  # summed with the time embedding: the same width
    "text_embed_dim": TEXT_DIM,
    "num_layers": 4,
    "max_text_seq_length": TEXT_SLOTS,
    "sample_frames": FRAMES,
    "sample_height": HEIGHT // 8,
    "sample_width": WIDTH // 8,
    "patch_size": 2,
    "temporal_compression_ratio": 4,
    "use_rotary_positional_embeddings": True,
    "use_learned_positional_embeddings": False,
}

#: What the I2V pipeline passes as ``ofs`` (and training used throughout).
OFS = 2.0


#: The attribute slots, in token order.
SLOTS = ("color", "shape", "motion", "background")


def _slot_vector(slot: str, word: str) -> Tensor:
    """A fixed +-1/sqrt(D) vector for a canonical word in a slot, from their SHA-256 (the same
    everywhere). Per slot, because CogVideoX gives text tokens no position: "white" the colour and
    "white" the background must differ in the token itself."""
    bits = int.from_bytes(hashlib.sha256(f"cogsample:{slot}:{word}".encode()).digest(), "big")
    signs = [1.0 if bits >> i & 1 else -1.0 for i in range(TEXT_DIM)]
    return torch.tensor(signs, dtype=torch.float32) / math.sqrt(TEXT_DIM)


class CaptionEncoder:
    """``encode(prompts) -> (B, 4, 32)``: one token per attribute slot (colour, shape, motion,
    background), the sum of the slot's named words' fixed vectors; zero for an unnamed slot."""

    def encode(self, prompts: Sequence[str]) -> Tensor:
        rows = []
        for p in prompts:
            a = parse_prompt(p)
            named = [a.colors, a.shapes, a.motions, a.backgrounds]
            rows.append(torch.stack([self.slot(slot, words) for slot, words in zip(SLOTS, named, strict=True)]))
        return torch.stack(rows) if rows else torch.zeros(0, TEXT_SLOTS, TEXT_DIM)

    @staticmethod
    def slot(slot: str, words: Sequence[str] | frozenset[str] | set[str]) -> Tensor:
        """The token of ``slot`` (one of :data:`SLOTS`) naming ``words`` (canonical; none: zero)."""
        out = torch.zeros(TEXT_DIM)
        for w in sorted(words):
            out += _slot_vector(slot, w)
        return out

    def clip_tokens(self, clips: Sequence[Any]) -> Tensor:
        """Every slot of every clip's full caption: ``(K, 4, 32)``."""
        named = [[{c.color}, {c.shape}, set(c.motion), {c.background}] for c in clips]
        return torch.stack(
            [torch.stack([self.slot(slot, w) for slot, w in zip(SLOTS, row, strict=True)]) for row in named]
        )


def trained_info(i2v: bool = False) -> ModelInfo:
    name = "builtin-trained-i2v" if i2v else "builtin-trained"
    return ModelInfo(
        name=name,
        i2v=i2v,
        uses_ofs=i2v,
        max_text_len=TEXT_SLOTS,
        frames=FRAMES,
        height=HEIGHT,
        width=WIDTH,
        scheduler=None,
        extra={"fps": 8, "clips": len(FAMILY), "context_dim": TEXT_DIM, "tau": DEFAULT_TAU, "weights": "trained"},
        attention_heads=int(TRANSFORMER_CONFIG["num_attention_heads"]),
        attention_head_dim=int(TRANSFORMER_CONFIG["attention_head_dim"]),
        patch_size=int(TRANSFORMER_CONFIG["patch_size"]),
        blocks=int(TRANSFORMER_CONFIG["num_layers"]),
        fixed_size=f"the trained built-in model (trained at {FRAMES} frames of {HEIGHT}x{WIDTH} px only)",
    )


def load_transformer(
    path: str | Path = WEIGHTS, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Any:
    """The shipped (or a :func:`train`-written) transformer folder as a ``CogVideoXTransformer3DModel``."""
    try:
        from diffusers import CogVideoXTransformer3DModel
    except ImportError as e:
        raise ValueError(
            f"the trained built-in model is a diffusers CogVideoX transformer: pip install 'cogsample[cogvideox]' ({e})"
        ) from e
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no transformer weights in {path} (config.json missing)")
    model = CogVideoXTransformer3DModel.from_pretrained(str(path), torch_dtype=dtype, low_cpu_mem_usage=False)
    return model.to(device=device).eval()


class TextToVideoNetwork(CogVideoXTransformerNetwork):
    """The joint transformer as text-to-video: ``x (N, T, 16, h, w)`` gets zero image channels
    (what training fed it half the time). A :class:`CogVideoXTransformerNetwork` otherwise, so the
    first-block cache and everything else that takes one takes this."""

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[2] != LATENT_CHANNELS:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"the trained text-to-video network takes x of (N, T, 16, h, w), got {got}")
        return super().__call__(torch.cat([x, torch.zeros_like(x)], dim=2), t, context, ofs)


class TrainedModel(BlockVAEModel):
    """The trained network as a :class:`VideoModel`: :class:`CaptionEncoder` for text, the built-in
    :class:`BlockVAE` for images and decoding, the transformer through the same adapter as a real
    CogVideoX folder (:class:`~cogsample.models.cogvideox.CogVideoXTransformerNetwork`)."""

    def __init__(
        self,
        i2v: bool = False,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        weights: str | Path = WEIGHTS,
        quantize: str = "none",
    ):
        self.info = trained_info(i2v)
        self.device = torch.device(device)
        self.dtype = dtype
        self.vae = BlockVAE()
        self.text = CaptionEncoder()
        self.transformer = load_transformer(weights, self.device, dtype)
        if quantize != "none":  # the transformer's Linear weights (:mod:`cogsample.models.quantize`)
            from .quantize import quantize_transformer

            quantize_transformer(self.transformer, quantize)
        self.quantize = quantize
        cls = CogVideoXTransformerNetwork if i2v else TextToVideoNetwork
        self.network = cls(self.transformer, device=self.device)
        self.clips = FAMILY

    def captions(self) -> list[str]:
        return [c.caption for c in self.clips]

    def encode_prompts(self, prompts: Sequence[str], max_length: int | None = None) -> Tensor:
        if isinstance(prompts, str):
            prompts = [prompts]
        return self.text.encode(prompts).to(device=self.device, dtype=self.dtype)


# ----------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class TrainConfig:
    """``steps`` AdamW steps of ``batch`` samples (lr ``lr`` after ``warmup`` steps, cosine to
    ``lr / 20``), weight EMA ``ema``; ``seed`` fixes every draw (deterministic on one machine and
    thread count)."""

    steps: int = 7000
    batch: int = 64
    lr: float = 1.5e-3
    warmup: int = 100
    ema: float = 0.999
    keep: float = 0.5  # probability that a training caption names each attribute
    drop: float = 0.1  # probability that it is empty
    i2v_share: float = 0.5
    tau: float = DEFAULT_TAU
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("keep", "drop", "i2v_share", "ema"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if not (self.lr > 0 and self.tau > 0):
            raise ValueError(f"lr and tau must be > 0, got {self.lr!r} and {self.tau!r}")


def _lr(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    u = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * u)))


@functools.lru_cache(maxsize=2)
def _latents(clips: tuple[Any, ...], t: int, h: int, w: int) -> Tensor:
    """The clips' latents ``(K, d)`` float64, rendered once per process."""
    return MixtureNetwork(clips).means(t, h, w).mu


class _Data:
    """Training batches: x0 ~ the family mixture, captions with attribute dropout, image channels."""

    def __init__(self, cfg: TrainConfig, clips: Sequence[Any] = FAMILY):
        self.cfg = cfg
        t, h, w = latent_shape(1, FRAMES, HEIGHT, WIDTH)[1], HEIGHT // 8, WIDTH // 8
        self.shape = (t, LATENT_CHANNELS, h, w)
        self.mu = _latents(tuple(clips), t, h, w).to(torch.float32)
        self.tokens = CaptionEncoder().clip_tokens(clips)  # (K, 4, D)
        self.alpha = ZeroSNRDDPM(1.0).table(1000).to(torch.float32)

    def batch(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(input (n, T, 32, h, w), t (n,), context (n, 4, D), v target (n, T, 16, h, w))``."""
        cfg = self.cfg
        k = torch.randint(len(self.mu), (n,), generator=gen)
        x0 = (self.mu[k] + cfg.tau * torch.randn(n, self.mu.shape[1], generator=gen)).view(n, *self.shape)
        t = torch.randint(1000, (n,), generator=gen)
        a = self.alpha[t].view(n, 1, 1, 1, 1)
        s = (1 - a * a).sqrt()
        eps = torch.randn(x0.shape, generator=gen)
        xt = a * x0 + s * eps
        keep = (torch.rand(n, TEXT_SLOTS, generator=gen) < cfg.keep) & (torch.rand(n, 1, generator=gen) >= cfg.drop)
        context = self.tokens[k] * keep.unsqueeze(-1)
        image = torch.zeros_like(x0)
        with_image = torch.rand(n, generator=gen) < cfg.i2v_share
        image[with_image, 0] = x0[with_image, 0]
        return torch.cat([xt, image], dim=2), t.to(torch.float32), context, a * eps - s * x0


def _forward(transformer: Any, x: Tensor, t: Tensor, context: Tensor, rotary: Any) -> Tensor:
    ofs = torch.full((x.shape[0],), OFS)
    return transformer(
        hidden_states=x, encoder_hidden_states=context, timestep=t, ofs=ofs, image_rotary_emb=rotary, return_dict=False
    )[0]


def _rotary(transformer: Any) -> Any:
    t = latent_shape(1, FRAMES, HEIGHT, WIDTH)[1]
    return CogVideoXTransformerNetwork(transformer, device="cpu").rotary(t, HEIGHT // 8, WIDTH // 8, "cpu")


def eval_loss(transformer: Any, cfg: TrainConfig, batches: int = 4, n: int = 64, seed: int = 12345) -> float:
    """The mean v-MSE over fixed held-out draws (the same draws for every call)."""
    data, gen = _Data(cfg), torch.Generator().manual_seed(seed)
    rotary = _rotary(transformer)
    total = 0.0
    with torch.no_grad():
        for _ in range(batches):
            x, t, ctx, v = data.batch(n, gen)
            total += float((_forward(transformer, x, t, ctx, rotary) - v).pow(2).mean())
    return total / batches


#: Steps between checkpoints (resume points) and between kept EMA snapshots (the learning curve).
CHECKPOINT_EVERY, SNAPSHOT_EVERY = 250, 1000


class _Run:
    """One training run's state: the model, its EMA, the optimizer, the data generator and the
    record so far. :meth:`save` writes it atomically to ``out/checkpoint.pt``; :meth:`resume` reads
    it back so the continued run is the uninterrupted one, bit for bit."""

    def __init__(self, cfg: TrainConfig):
        from diffusers import CogVideoXTransformer3DModel

        self.cfg = cfg
        torch.manual_seed(cfg.seed)  # the constructor's initial weights come from the global generator
        self.model = CogVideoXTransformer3DModel(**TRANSFORMER_CONFIG).train()
        self.ema = CogVideoXTransformer3DModel(**TRANSFORMER_CONFIG).eval()
        self.ema.load_state_dict(self.model.state_dict())
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step, self.seconds, self.curve, self.evals, self.losses = 0, 0.0, [], [], []
        self.initial = eval_loss(self.model, cfg)

    def state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg), "transformer": TRANSFORMER_CONFIG, "step": self.step,
            "seconds": self.seconds, "curve": self.curve, "evals": self.evals, "losses": self.losses,
            "initial": self.initial, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
            "opt": self.opt.state_dict(), "gen": self.gen.get_state(),
        }  # fmt: skip

    def save(self, out: Path) -> None:
        tmp = out / f".checkpoint.{os.getpid()}.tmp"
        torch.save(self.state(), tmp)
        os.replace(tmp, out / "checkpoint.pt")

    def resume(self, path: Path) -> None:
        """Continue from ``path``; a checkpoint of another config or architecture is refused."""
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if ck["config"] != asdict(self.cfg) or ck["transformer"] != TRANSFORMER_CONFIG:
            raise ValueError(f"{path} is a checkpoint of another run ({ck['config']}); use another --out")
        self.model.load_state_dict(ck["model"])
        self.ema.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["opt"])
        self.gen.set_state(ck["gen"])
        self.step, self.seconds, self.curve = ck["step"], ck["seconds"], ck["curve"]
        self.evals, self.losses, self.initial = ck["evals"], ck["losses"], ck["initial"]

    def advance(self, data: _Data, rotary: Any) -> float:
        """One AdamW step on a fresh batch, then the EMA update; returns the batch's loss."""
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = _lr(cfg, self.step)
        x, t, ctx, v = data.batch(cfg.batch, self.gen)
        loss = (_forward(self.model, x, t, ctx, rotary) - v).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        with torch.no_grad():
            # early on the EMA follows closely (warm-up), later it averages over ~1/(1-ema) steps
            decay = min(cfg.ema, (1 + self.step) / (10 + self.step))
            for pe, pm in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        self.step += 1
        return loss.item()


def train(
    out: str | Path,
    cfg: TrainConfig = TrainConfig(),
    *,
    log: Callable[[str], None] | None = None,
    every: int = 50,
) -> dict[str, Any]:
    """Train (from ``out/checkpoint.pt`` where a run of the same config left one, else from
    scratch) and write ``out/``: a diffusers transformer folder of the EMA weights and
    ``train.json`` (the config, the loss every ``every`` steps, the EMA's held-out loss at each
    checkpoint, the wall time summed over runs). Checkpoints every :data:`CHECKPOINT_EVERY` steps;
    EMA snapshots every :data:`SNAPSHOT_EVERY` in ``out/snapshots/`` (kept: the learning curve)."""
    say = log or (lambda _m: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    run, data = _Run(cfg), _Data(cfg)
    if (out / "checkpoint.pt").is_file():
        run.resume(out / "checkpoint.pt")
        say(f"resumed at step {run.step}/{cfg.steps} ({run.seconds:.0f} s so far)")
    rotary = _rotary(run.model)
    start = time.perf_counter() - run.seconds
    while run.step < cfg.steps:
        run.losses.append(run.advance(data, rotary))
        run.seconds = time.perf_counter() - start
        if run.step % every == 0 or run.step == cfg.steps:
            mean = sum(run.losses) / len(run.losses)
            run.curve.append({"step": run.step, "loss": mean, "seconds": run.seconds})
            say(f"step {run.step}/{cfg.steps}  loss {mean:.4f}  {run.seconds:.0f} s")
            run.losses = []
        if run.step % CHECKPOINT_EVERY == 0 or run.step == cfg.steps:
            _checkpoint(run, out, cfg)
    return _finish(run, out, cfg)


def _checkpoint(run: _Run, out: Path, cfg: TrainConfig) -> None:
    """Record the EMA's held-out loss, keep a snapshot where due, save the resume point."""
    run.evals.append({"step": run.step, "eval_loss": eval_loss(run.ema, cfg), "seconds": run.seconds})
    if run.step % SNAPSHOT_EVERY == 0:
        snaps = out / "snapshots"
        snaps.mkdir(exist_ok=True)
        tmp = snaps / f".{run.step}.{os.getpid()}.tmp"
        torch.save(run.ema.state_dict(), tmp)
        os.replace(tmp, snaps / f"ema-{run.step:06d}.pt")
    run.save(out)


def _finish(run: _Run, out: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Write the EMA transformer and ``train.json``; the resume point is then spent."""
    run.ema.save_pretrained(str(out))
    record = {
        "config": asdict(cfg),
        "transformer": TRANSFORMER_CONFIG,
        "parameters": sum(p.numel() for p in run.ema.parameters()),
        "clips": len(FAMILY),
        "seconds": run.seconds,
        "threads": torch.get_num_threads(),
        "initial_eval_loss": run.initial,
        "eval_loss": eval_loss(run.ema, cfg),
        "curve": run.curve,
        "evals": run.evals,
    }
    tmp = out / f".train.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out / "train.json")
    (out / "checkpoint.pt").unlink(missing_ok=True)
    return record
