"""``--keyframe FRAME=PATH`` and ``--last-image PATH``: checked and resized at planning (before any
weight loads), encoded by the model and held while sampling
(:mod:`cogsample.sampling.keyframes`).

Video frame ``F`` lives in latent frame 0 for ``F = 0`` and ``(F - 1) // 4 + 1`` after (the causal
VAE's 4x time compression), shifted by the padding frames a model with temporal patches samples
in front; ``--last-image`` is frame ``frames - 1``. One keyframe per latent frame; on an
image-to-video model frame 0 is its ``--image`` and cannot also be a keyframe.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models import ModelInfo, VideoModel
from ..models.images import image_to_tensor, load_image
from ..sampling.keyframes import Keyframes, latent_frame

Tensor = torch.Tensor

__all__ = ["Keyframe", "encode_keyframes", "keyframe_items", "rebase_keyframes", "resolve_keyframes"]

_SPEC = re.compile(r"^\s*(-?\d+)\s*=(.+)$", re.S)


@dataclass(frozen=True)
class Keyframe:
    """One checked keyframe: video ``frame``, the sampled latent's frame ``latent`` (padding
    included), the ``image`` at the run's size (PIL, or diffusers' preprocessed tensor),
    ``source``: the path given (None for an in-memory image), and ``sha256``: of the given
    image's pixels (as a video's name hashes its ``--image``)."""

    frame: int
    latent: int
    image: Any
    source: str | None
    sha256: str

    def describe(self) -> dict[str, Any]:
        """What a video's JSON says of it."""
        return {"frame": self.frame, "latent_frame": self.latent, "path": self.source, "sha256": self.sha256}


def keyframe_items(keyframes: Any) -> list[tuple[int, Any]]:
    """``(frame, path or image)`` pairs from what a request may hold: None, a mapping
    ``{FRAME: PATH}`` (keys ints or digit strings, JSONL's object), or a sequence of
    ``"FRAME=PATH"`` strings (the command line, JSONL's list) or ``(frame, image)`` pairs."""
    if keyframes is None:
        return []
    if isinstance(keyframes, Mapping):
        pairs = list(keyframes.items())
    elif isinstance(keyframes, (str, bytes)) or not isinstance(keyframes, Sequence):
        raise ValueError(
            f"keyframes must be a mapping {{FRAME: PATH}} or a list of 'FRAME=PATH', got {type(keyframes).__name__}"
        )
    else:
        pairs = []
        for item in keyframes:
            if isinstance(item, str):
                m = _SPEC.match(item)
                if m is None or not m.group(2).strip():
                    raise ValueError(
                        f"--keyframe {item!r} must be FRAME=PATH (FRAME a video frame index, e.g. 48=end.png)"
                    )
                pairs.append((m.group(1), m.group(2).strip()))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                raise ValueError(f"--keyframe {item!r} must be FRAME=PATH or a (frame, image) pair")
    out = []
    for frame, image in pairs:
        if isinstance(frame, str) and re.fullmatch(r"\s*-?\d+\s*", frame):
            frame = int(frame)
        if isinstance(frame, bool) or not isinstance(frame, int):
            raise ValueError(f"--keyframe {frame!r}={image}: FRAME must be an integer video frame index")
        out.append((frame, image))
    return out


def rebase_keyframes(keyframes: Any, base: Path) -> list[str]:
    """``keyframes`` (as :func:`keyframe_items` reads them) as ``["FRAME=PATH", ...]`` with each
    relative path resolved against ``base`` (a JSONL file's folder, as its ``image``)."""
    items = keyframe_items(keyframes)
    return [f"{f}={base / p if isinstance(p, str) and not Path(p).is_absolute() else p}" for f, p in items]


def resolve_keyframes(
    last_image: Any, keyframes: Any, info: ModelInfo, frames: int, pad: int, prepare: Callable[[Any], Any]
) -> tuple[Keyframe, ...]:
    """Every keyframe of a request, checked (syntax, range, duplicates, frame 0 on an I2V model,
    a readable image) and ``prepare``-d to the run's size as ``--image`` is, sorted by frame."""
    items = [(f, img, f"--keyframe {f}={_name(img)}") for f, img in keyframe_items(keyframes)]
    if last_image is not None:
        items.append((frames - 1, last_image, f"--last-image {_name(last_image)}"))
    seen: dict[int, str] = {}
    latents: dict[int, str] = {}
    out = []
    for frame, image, what in items:
        if not 0 <= frame <= frames - 1:
            raise ValueError(f"{what}: frame {frame} is outside the video's frames [0, {frames - 1}]")
        if frame in seen:
            raise ValueError(f"{what}: frame {frame} is already given by {seen[frame]}")
        if frame == 0 and info.i2v:
            raise ValueError(f"{what}: frame 0 of image-to-video model {info.name!r} is its --image; drop one of them")
        j = latent_frame(frame)
        if j in latents:
            raise ValueError(
                f"{what}: frame {frame} falls in latent frame {j} (video frames {max(0, 4 * j - 3)}..{4 * j}) with "
                f"{latents[j]}; give one keyframe per latent frame"
            )
        seen[frame], latents[j] = what, what
        rgb = load_image(image)
        digest = hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()
        out.append(Keyframe(frame, j + pad, prepare(rgb), _source(image), digest))
    return tuple(sorted(out, key=lambda k: k.frame))


def _name(image: Any) -> str:
    return str(image) if isinstance(image, (str, Path)) else f"<{type(image).__name__}>"


def _source(image: Any) -> str | None:
    return str(image) if isinstance(image, (str, Path)) else None


def encode_keyframes(
    model: VideoModel, keyframes: Sequence[Keyframe], device: Any, dtype: Any, seed: int | None = None
) -> Keyframes | None:
    """The model's encodings of ``keyframes`` as the sampling layer's :class:`Keyframes` (None for
    none). ``seed``: draw the held frames' noise from a CPU generator of this seed (for a start that
    is not pure noise, ``--video``); None: the initial noise's own frames."""
    if not keyframes:
        return None
    zs, masks = [], []
    for k in keyframes:
        img = k.image if isinstance(k.image, torch.Tensor) else image_to_tensor(k.image)
        z, mask = model.encode_keyframe(img.to(device=device, dtype=dtype), k.frame)
        zs.append(z.to(device=device, dtype=torch.float32))
        masks.append(mask)
    mask = None
    if any(m is not None for m in masks):
        full = torch.ones(1, 1, zs[0].shape[2], 1, 1, dtype=torch.bool, device=device)
        mask = torch.cat([full if m is None else m.to(device) for m in masks], dim=1)
    z = torch.cat(zs, dim=1)
    eps = None
    if seed is not None:
        eps = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).to(device)
    return Keyframes(z, tuple(k.latent for k in keyframes), mask, eps)
