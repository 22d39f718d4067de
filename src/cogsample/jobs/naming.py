"""Which name a video gets in an out folder: ``<prompt slug>-s<seed>-<10 hex>``, the hex a
SHA-256 of what defines the video (:func:`video_identity`). The same request always gets the same
name, so a rerun finds its finished videos; any change to what defines a video gives another name,
so nothing is overwritten."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..models import is_builtin
from ..models.images import load_image
from ..pipeline.options import UINT8
from ..pipeline.plan import Plan

__all__ = ["slug", "video_identity", "video_stem"]


def slug(text: str, max_len: int = 48) -> str:
    """A file-name-safe lower-case stem of ``text`` (``"A red ball!"`` -> ``"a-red-ball"``)."""
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (s[:max_len].rstrip("-")) or "video"


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _image_digest(image: Any) -> str:
    # its pixels define the video, whether given as a file or a PIL image (Pipeline)
    rgb = load_image(image)
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def video_identity(p: Plan, k: int) -> dict[str, Any]:
    """What defines video ``k`` of ``p``: every resolved input that changes its latents or files
    (prompt, seed, model, size, sampling, dtype, the bytes of its image and initial noise, ...),
    and nothing that does not (out folder, device index, offload, process). Equal identities give
    equal videos, so they share a name (:func:`video_stem`)."""
    o = p.options
    model = o.model if is_builtin(o.model) else str(Path(o.model).resolve())
    noise = None
    if o.initial_noise is not None:
        noise = {"sha256": _sha256(o.initial_noise), "row": p.noise_row(k)}
    return {
        "naming": 1,
        "model": model,
        "profile": o.profile,
        "prompt": o.prompts[k],
        "seed": o.seed + k,
        "negative_prompt": p.negative_prompt,
        "uncond": p.uncond,
        "image": None if o.image is None else _image_digest(o.image),
        "frames": p.frames,
        "height": p.height,
        "width": p.width,
        "fps": p.fps,
        "dtype": str(p.dtype).removeprefix("torch."),
        "sampling": p.sampling.to_dict(),
        "vae_tiling": o.vae_tiling,
        "initial_noise": noise,
        "uint8": UINT8[o.profile],
        # only where set, so that every video made before windows keeps its name
        **({"noise_repeat": True} if o.noise_repeat else {}),
        **({"video": {"sha256": p.video.sha256, "strength": p.video.strength}} if p.video is not None else {}),
        **({"quantize": o.quantize} if o.quantize != "none" else {}),
        # a LoRA by its bytes and weight (not its path), and whether it was merged into the weights
        **_lora_identity(p),
        **({"keyframes": [{"frame": kf.frame, "sha256": kf.sha256} for kf in p.keyframes]} if p.keyframes else {}),
    }


def _lora_identity(p: Plan) -> dict[str, Any]:
    """The LoRAs by their bytes and weight (not their path); at weight 0 a LoRA is off and the video
    the base model's, so it is left out, as is fusing where nothing is merged."""
    on = [{"sha256": x.sha256, "weight": x.weight} for x in p.loras if x.weight != 0]
    if not on:
        return {}
    return {"lora": on, **({"lora_fuse": True} if p.options.lora_fuse else {})}


def video_stem(p: Plan, k: int) -> str:
    """Video ``k``'s file name stem: ``<prompt slug>-s<seed>-<10 hex of its identity's SHA-256>``."""
    text = json.dumps(video_identity(p, k), sort_keys=True, separators=(",", ":"), default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return f"{slug(p.options.prompts[k], 40)}-s{p.options.seed + k}-{digest}"
