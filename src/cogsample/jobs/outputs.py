"""Writing a generated video: ``NAME.mp4``, ``NAME.latents.safetensors``, ``NAME.json``, ``NAME.png``.

Every file is written under a temporary name in the destination directory and renamed into
place (``os.replace`` is atomic on one filesystem), so a crash or a full disk never leaves a
half-written output. Which names a video gets is :mod:`cogsample.jobs.naming`'s business, when it
counts as finished :mod:`cogsample.jobs.outdir`'s; the uint8 frames come from the pipeline
(:func:`cogsample.pipeline.pipeline.to_uint8`).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .interrupts import uninterrupted

Tensor = torch.Tensor

__all__ = [
    "SUFFIXES",
    "atomic_path",
    "check_writable",
    "contact_sheet",
    "write_contact_sheet",
    "write_json",
    "write_latents",
    "write_mp4",
]

#: The files one video produces, by role.
SUFFIXES = {"video": ".mp4", "latents": ".latents.safetensors", "meta": ".json", "sheet": ".png"}


def check_writable(directory: str | Path, name: str = "out directory") -> Path:
    """Create ``directory`` if needed and prove a file can be written there; ``ValueError`` naming
    it (as ``name``) if not: a file where the folder (or one above it) should be, a folder that
    cannot be made, or one that takes no file."""
    path = Path(directory)
    blocker = next((a for a in (path, *path.parents) if a.exists() or a.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        what = "it" if blocker == path else repr(str(blocker))
        raise ValueError(f"{name} {str(path)!r} is not writable: {what} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{name} {str(path)!r} cannot be made: {e.strerror or e}") from e
    try:
        fd, probe = tempfile.mkstemp(prefix=".cogsample-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{name} {str(path)!r} is not writable: {e.strerror or e}") from e
    return path


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``, on error delete it."""
    dest = Path(dest)
    tmp = None
    try:
        with uninterrupted():  # a signal cannot leave a temporary file nobody owns
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part" + dest.suffix, dir=dest.parent)
            os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the user's usual mode
        os.replace(tmp, dest)
    except BaseException:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: libx264's settings. ``threads=1``: x264's output depends on its thread count, which by default
#: follows the CPUs the process may run on (``sched_getaffinity``), so the same frames gave other
#: bytes under ``taskset``, in a container or beside another job; one thread makes the bytes a
#: function of the frames alone (measured: +35% encode time, a second or two a video).
X264_OPTIONS = {"preset": "medium", "threads": "1"}

# BT.601 limited range in 16-bit fixed point: Y = 16 + 219/255 (Kr R + Kg G + Kb B),
# Cb = 128 + 224/255 (B - Y')/(2 (1 - Kb)), Cr = 128 + 224/255 (R - Y')/(2 (1 - Kr)).
_KR, _KB = 0.299, 0.114
_KG = 1 - _KR - _KB
_Y = [round(219 / 255 * k * 65536) for k in (_KR, _KG, _KB)]
_CB_R, _CB_B = round(-224 / 255 * _KR / (2 - 2 * _KB) * 65536), round(224 / 255 / 2 * 65536)
_CR_R, _CR_B = round(224 / 255 / 2 * 65536), round(-224 / 255 * _KB / (2 - 2 * _KR) * 65536)
# the green weight is what makes each chroma row sum to zero exactly, so grey has Cb = Cr = 128
_CB = [_CB_R, -_CB_R - _CB_B, _CB_B]
_CR = [_CR_R, -_CR_R - _CR_B, _CR_B]


def rgb_to_yuv420p(frame: np.ndarray) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 RGB frame as planar BT.601 limited-range 4:2:0, ``(H * 3/2, W)`` uint8:
    the Y plane, then U and V (``(H/2, W/2)`` each, laid out as libav's ``yuv420p`` ndarray).

    Integer arithmetic throughout (chroma from each 2x2 block's sum), so the result is the same on
    every processor; swscale's SIMD paths round differently from its C path (2% of samples off by
    one, measured), which made the mp4's bytes depend on the CPU."""
    h, w, _ = frame.shape
    rgb = frame.astype(np.int32)
    y = (rgb @ np.array(_Y, np.int32) + (16 << 16) + (1 << 15)) >> 16
    quad = rgb.reshape(h // 2, 2, w // 2, 2, 3).sum(axis=(1, 3))  # 0..1020: sums of 4 samples
    u = (quad @ np.array(_CB, np.int32) + (128 << 18) + (1 << 17)) >> 18
    v = (quad @ np.array(_CR, np.int32) + (128 << 18) + (1 << 17)) >> 18
    planes = [y, u.reshape(h // 4, w), v.reshape(h // 4, w)]
    return np.concatenate(planes).astype(np.uint8)


#: glibc's ``mallopt`` parameter that fills each new (and each freed) heap block with a set byte.
_M_PERTURB = -6
_PERTURB_BYTE = 85


@contextmanager
def _defined_heap() -> Iterator[None]:
    """Within the block, every heap block glibc hands out holds a set byte, not what was there.

    x264 (through libav) reads some heap bytes it never wrote: measured, the same frames gave other
    mp4 bytes as a process's first encode than as its later ones, and others again under another
    ``MALLOC_PERTURB_``; with the heap's new blocks defined, every encode gives the same bytes,
    whatever the process did before. Elsewhere than glibc nothing changes."""
    global _MALLOPT
    if _MALLOPT is None:
        try:
            import ctypes

            _MALLOPT = ctypes.CDLL("libc.so.6").mallopt
        except (OSError, AttributeError):
            _MALLOPT = False
    if not _MALLOPT:
        yield
        return
    with _PERTURB_LOCK:  # process-wide: one encode at a time sets and restores it
        _MALLOPT(_M_PERTURB, _PERTURB_BYTE)
        try:
            yield
        finally:
            _MALLOPT(_M_PERTURB, 0)


_MALLOPT: Any = None
_PERTURB_LOCK = threading.Lock()


def write_mp4(dest: Path, frames: np.ndarray, fps: int, crf: int = 17) -> None:
    """H.264 (yuv420p, so every player takes it; BT.601 limited range, tagged) via PyAV.
    ``frames``: ``(F, H, W, 3)`` uint8. The same frames give the same bytes on any processor:
    the colour conversion is :func:`rgb_to_yuv420p`'s integer math and x264 runs one thread
    (:data:`X264_OPTIONS`); x264's assembly matches its C code bit for bit."""
    import av

    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"H.264 needs an even frame size, got {w}x{h}")
    with atomic_path(dest) as tmp, _defined_heap():
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.codec_context.colorspace = av.video.reformatter.Colorspace.ITU601
            stream.codec_context.color_range = av.video.reformatter.ColorRange.MPEG
            stream.options = {"crf": str(crf), **X264_OPTIONS}
            for rgb in frames:
                frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(rgb), format="yuv420p")
                frame.colorspace = av.video.reformatter.Colorspace.ITU601
                frame.color_range = av.video.reformatter.ColorRange.MPEG
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def contact_sheet(frames: np.ndarray, columns: int = 8, max_frames: int = 16, gap: int = 2) -> np.ndarray:
    """Up to ``max_frames`` evenly spaced frames (first and last included) tiled ``columns`` wide."""
    f, h, w, _ = frames.shape
    n = min(f, max_frames)
    picks = np.unique(np.round(np.linspace(0, f - 1, n)).astype(int))
    cols = min(columns, len(picks))
    rows = -(-len(picks) // cols)
    sheet = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, dtype=np.uint8)
    for k, idx in enumerate(picks):
        r, c = divmod(k, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = frames[idx]
    return sheet


def write_contact_sheet(dest: Path, frames: np.ndarray, **kw: Any) -> None:
    from PIL import Image

    with atomic_path(dest) as tmp:
        Image.fromarray(contact_sheet(frames, **kw)).save(tmp, format="PNG")


def write_latents(dest: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> None:
    from safetensors.torch import save

    # clone: two keys may view one buffer (latents_for_vae can be the latents themselves)
    data = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    blob = save(data, metadata=dict(metadata or {}))
    with atomic_path(dest) as tmp:
        tmp.write_bytes(blob)  # Python's own write: a full disk is an OSError, not a library's error


def write_json(dest: Path, data: Mapping[str, Any]) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.dtype):
        return str(obj).removeprefix("torch.")
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
