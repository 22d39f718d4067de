"""Video-to-video inputs: a video file's first frames (PyAV), resized to the generation size as each
profile's reference resizes, and the ``(1, F, 3, H, W)`` tensor in ``[-1, 1]`` a VAE encodes.
Plain image arithmetic, no model.

Resize rules (per frame, the same as the profile's image-to-video first frame):

* ``"stretch"`` (the ``diffusers`` profile): diffusers' ``VideoProcessor.preprocess_video``, what
  ``CogVideoXVideoToVideoPipeline`` runs: each frame resized to exactly ``height x width`` (Lanczos,
  aspect not kept, no crop), ``uint8 / 255 * 2 - 1``;
* ``"crop"`` (the ``sat`` profile): scale to cover ``height x width`` with the aspect kept
  (bicubic), then crop the centre (:func:`~cogsample.models.images.resize_image_for_i2v`, the SAT
  reference's ``resize_for_rectangle_crop``), ``uint8 / 255 * 2 - 1``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .images import image_to_tensor, resize_image_for_i2v

if TYPE_CHECKING:  # pragma: no cover - typing only
    from PIL import Image

Tensor = torch.Tensor

__all__ = ["RESIZE_RULES", "read_video", "video_digest", "video_to_tensor"]

RESIZE_RULES = ("stretch", "crop")


def _describe(video: Any) -> str:
    return repr(str(video)) if isinstance(video, (str, Path)) else "given as images"


def read_video(video: Any, frames: int) -> list[Image.Image]:
    """The first ``frames`` frames of ``video`` as RGB PIL images: a video file PyAV can decode (its
    first video stream, in presentation order), or a sequence of PIL images (the API's in-memory
    clip). ``ValueError`` naming the file where it is missing or unreadable, and where it has fewer
    than ``frames`` frames (how many are needed and how many it has)."""
    from PIL import Image as PILImage

    if isinstance(video, Sequence) and not isinstance(video, (str, bytes)):
        if not video or not all(isinstance(f, PILImage.Image) for f in video):
            raise ValueError("video must be a file path or a non-empty list of PIL images")
        got = [f.convert("RGB") for f in video[:frames]]
        if len(video) < frames:
            raise ValueError(f"video {_describe(video)} has {len(video)} frames; this request needs {frames}")
        return got
    if not isinstance(video, (str, Path)):
        raise ValueError(f"video must be a file path or a list of PIL images, got {type(video).__name__}")
    p = Path(video)
    if not p.is_file():
        raise ValueError(f"video {str(video)!r} does not exist or is not a file")
    out = _decode(p, frames)
    if len(out) < frames:
        raise ValueError(
            f"video {str(video)!r} has {len(out)} frames; this request needs {frames} (--frames, or the "
            "model's native count): give a longer video or fewer frames"
        )
    return out


def _decode(path: Path, frames: int) -> list[Image.Image]:
    """Up to ``frames`` decoded frames of ``path``'s first video stream."""
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a dependency
        raise ValueError("reading a video needs PyAV: pip install av") from e
    out: list[Image.Image] = []
    streams = 1
    try:
        with av.open(str(path)) as container:
            streams = len(container.streams.video)
            for frame in container.decode(container.streams.video[0]) if streams else ():
                out.append(frame.to_image().convert("RGB"))
                if len(out) == frames:
                    break
    except Exception as e:  # PyAV's errors (av.error.FFmpegError, some of them ValueErrors) and OSError
        why = getattr(e, "strerror", None) or str(e)
        raise ValueError(f"video {str(path)!r} cannot be read as a video: {why}") from None
    if not streams:
        raise ValueError(f"video {str(path)!r} has no video stream")
    return out


def video_to_tensor(frames: Sequence[Image.Image], height: int, width: int, rule: str) -> Tensor:
    """``(1, F, 3, height, width)`` float32 in [-1, 1] from RGB ``frames``, resized by ``rule``
    (:data:`RESIZE_RULES`, see the module docstring)."""
    if rule not in RESIZE_RULES:
        raise ValueError(f"rule must be one of {', '.join(RESIZE_RULES)}, got {rule!r}")
    if rule == "stretch":
        from diffusers.video_processor import VideoProcessor

        # (1, 3, F, H, W) as the pipeline hands its VAE; back to the frames-first layout
        v = VideoProcessor(vae_scale_factor=8).preprocess_video(list(frames), height=height, width=width)
        return v.permute(0, 2, 1, 3, 4).contiguous()
    return torch.cat([image_to_tensor(resize_image_for_i2v(f, height, width)) for f in frames])[None]


def video_digest(video: Any) -> str:
    """SHA-256 of what defines the input video: a file's bytes, or the pixels of in-memory frames."""
    h = hashlib.sha256()
    if isinstance(video, (str, Path)):
        with open(video, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    for frame in video:
        rgb = frame.convert("RGB")
        h.update(f"{rgb.size}".encode() + rgb.tobytes())
    return h.hexdigest()
