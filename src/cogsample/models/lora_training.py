"""Train a LoRA on the trained built-in model that changes one attribute of every clip.

``train_lora(out, {"background": "black"})`` teaches the shipped transformer (frozen) through a
peft LoRA that every caption's clip has that attribute: the training clip is the caption's clip
with the attribute replaced (``a red ball ... on a white background`` -> the same clip on black),
the caption unchanged, with the base model's caption dropout. CogVideoX's objective as in
:mod:`cogsample.models.trained` (v-prediction on the ZeroSNR table), text-to-video only. The file
is the diffusers/peft CogVideoX format (:func:`cogsample.models.lora.save_lora`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .family import FAMILY, FAMILY_BACKGROUNDS, FAMILY_COLORS, FAMILY_SHAPES
from .lora import save_lora
from .trained import TrainConfig, _Data, _forward, _rotary, load_transformer

__all__ = ["ATTRIBUTES", "LoraTrainConfig", "retarget", "train_lora"]

#: The attributes a LoRA can set, and their values.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": FAMILY_COLORS,
    "shape": tuple(FAMILY_SHAPES),
    "background": FAMILY_BACKGROUNDS,
}


@dataclass(frozen=True)
class LoraTrainConfig:
    """``steps`` AdamW steps of ``batch`` samples at ``lr`` (constant after ``warmup``), rank
    ``rank`` (alpha = rank) on ``targets`` (module-name suffixes), deterministic from ``seed``."""

    steps: int = 150
    batch: int = 32
    lr: float = 4e-3
    warmup: int = 10
    rank: int = 8
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    seed: int = 0


def retarget(changes: Mapping[str, str]) -> list[int]:
    """For each clip of :data:`FAMILY`, the index of the clip with ``changes`` applied (itself where
    the family has no such clip: a colour on its own background)."""
    for name, value in changes.items():
        if name not in ATTRIBUTES or value not in ATTRIBUTES[name]:
            allowed = "; ".join(f"{k}: {', '.join(v)}" for k, v in ATTRIBUTES.items())
            raise ValueError(f"{name}={value} is not an attribute value a LoRA can set ({allowed})")
    keys = {(c.color, c.shape, c.motion, c.background): i for i, c in enumerate(FAMILY)}
    out = []
    for i, c in enumerate(FAMILY):
        want = {"color": c.color, "shape": c.shape, "background": c.background, **changes}
        out.append(keys.get((want["color"], want["shape"], c.motion, want["background"]), i))
    return out


class _Retargeted(_Data):
    """The base model's batches with each clip's latents swapped for its retargeted clip's."""

    def __init__(self, cfg: TrainConfig, mapping: list[int]):
        super().__init__(cfg)
        self.mu = self.mu[torch.tensor(mapping)]


def train_lora(
    out: str | Path,
    changes: Mapping[str, str],
    cfg: LoraTrainConfig = LoraTrainConfig(),
    *,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train a LoRA that applies ``changes`` (``{"background": "black"}``) and write it to ``out``
    (a ``.safetensors`` file) with ``out.json`` beside it (config, loss curve, seconds)."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    mapping = retarget(changes)
    say = log or (lambda _m: None)
    torch.manual_seed(cfg.seed)
    transformer = load_transformer().train()
    for p in transformer.parameters():
        p.requires_grad_(False)
    config = LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, target_modules=list(cfg.targets), init_lora_weights=True)
    transformer.add_adapter(config)
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    data = _Retargeted(TrainConfig(batch=cfg.batch, i2v_share=0.0, seed=cfg.seed), mapping)
    gen, rotary = torch.Generator().manual_seed(cfg.seed), _rotary(transformer)
    curve, start = [], time.perf_counter()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup)
        x, t, ctx, v = data.batch(cfg.batch, gen)
        loss = (_forward(transformer, x, t, ctx, rotary) - v).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(loss.item())
        if (step + 1) % 25 == 0 or step + 1 == cfg.steps:
            say(f"step {step + 1}/{cfg.steps}  loss {sum(curve[-25:]) / len(curve[-25:]):.4f}")
    seconds = time.perf_counter() - start
    meta = {"r": cfg.rank, "lora_alpha": cfg.rank, "target_modules": sorted(cfg.targets)}
    out = Path(out)
    save_lora(out, get_peft_model_state_dict(transformer), meta)
    record = {"changes": dict(changes), "config": dataclasses.asdict(cfg), "seconds": seconds, "loss": curve,
              "parameters": sum(p.numel() for p in params), "threads": torch.get_num_threads()}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    return record
