"""What a LoRA does on the trained built-in model, measured against the truth.

For each setup (no LoRA, each LoRA alone, several together) the reference default samples each
full caption of :data:`~cogsample.bench.truth.CAPTIONS` once per seed through ``cogsample.Pipeline``
(the user's path: the LoRA loaded by peft, unfused), and each sample's nearest true clip is read:
the share whose attribute is the LoRA's target (**moved**, over the captions that name another
value), and the share that keeps the caption's other attributes (**kept**). Each with its count.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..models.family import FAMILY
from .harness import sq_distances
from .truth import CAPTIONS

__all__ = ["lora_effect", "shipped_setups"]

_ATTRS = ("color", "shape", "motion", "background")


def _clip_of(caption: str) -> Any:
    return next(c for c in FAMILY if c.caption == caption)


def _nearest(latents: torch.Tensor, mu: torch.Tensor) -> Any:
    return FAMILY[int(sq_distances(latents.reshape(1, -1).double(), mu).argmin())]


def _score(samples: Sequence[tuple[Any, Any]], target: Mapping[str, str]) -> dict[str, Any]:
    """``samples``: (caption's clip, nearest clip) pairs; per target attribute the moved count, and
    the kept count of the attributes no target names."""
    out: dict[str, Any] = {"samples": len(samples)}
    for attr, value in target.items():
        eligible = [(c, n) for c, n in samples if getattr(c, attr) != value]
        hits = sum(getattr(n, attr) == value for _, n in eligible)
        out[f"moved_{attr}"] = {"to": value, "count": hits, "of": len(eligible), "share": hits / max(1, len(eligible))}
    for attr in _ATTRS:
        if attr in target:
            continue
        hits = sum(getattr(n, attr) == getattr(c, attr) for c, n in samples)
        out[f"kept_{attr}"] = {"count": hits, "of": len(samples), "share": hits / max(1, len(samples))}
    return out


def lora_effect(
    setups: Mapping[str, tuple[Sequence[tuple[str, float]], Mapping[str, str]]],
    *,
    seeds: Sequence[int] = (0,),
    captions: Sequence[str] = CAPTIONS,
    steps: int | None = None,
) -> dict[str, Any]:
    """``setups``: name -> (LoRAs as ``(path, weight)``, the attribute values they should set).
    Returns per setup :func:`_score` of its samples, and the seconds it took."""
    from ..models.trained import FRAMES, HEIGHT, WIDTH, _latents
    from ..pipeline.pipeline import Pipeline

    pipe = Pipeline.load("builtin-trained", device="cpu")
    mu = _latents(tuple(FAMILY), 3, HEIGHT // 8, WIDTH // 8)
    size = {"frames": FRAMES, "height": HEIGHT, "width": WIDTH, **({"steps": steps} if steps else {})}
    results: dict[str, Any] = {}
    for name, (loras, target) in setups.items():
        t0, samples = time.perf_counter(), []
        for caption in captions:
            for seed in seeds:
                r = pipe(caption, seed=seed, lora=list(loras), progress=False, **size)
                samples.append((_clip_of(caption), _nearest(r.latents.cpu(), mu)))
        results[name] = {"lora": [list(x) for x in loras], **_score(samples, target),
                         "seconds": time.perf_counter() - t0}  # fmt: skip
    return results


def shipped_setups() -> dict[str, tuple[list[tuple[str, float]], dict[str, str]]]:
    """No LoRA, each shipped LoRA of the trained model alone, and both together, at weight 1."""
    from ..models.trained import LORAS

    black, red = str(LORAS / "black-background.safetensors"), str(LORAS / "red-object.safetensors")
    return {
        "none": ([], {"background": "black", "color": "red"}),
        "black-background": ([(black, 1.0)], {"background": "black"}),
        "red-object": ([(red, 1.0)], {"color": "red"}),
        "both": ([(black, 1.0), (red, 1.0)], {"background": "black", "color": "red"}),
    }


if __name__ == "__main__":  # pragma: no cover - `python -m cogsample.bench.lora docs/bench/lora.json`
    import json
    import sys
    from pathlib import Path

    # every full caption, two seeds: 96 samples a setup at the reference default (50 steps)
    result = lora_effect(shipped_setups(), seeds=(0, 1))
    Path(sys.argv[1]).write_text(json.dumps(result, indent=1) + "\n")
