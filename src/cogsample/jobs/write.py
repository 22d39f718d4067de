"""A computed video into its four files in an out folder, under its claim: :func:`write_video`
(the batch runners, under a claim they hold), :func:`save` (one video, claiming its name itself);
:class:`Result` is the record of a video written (or found finished)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..pipeline.pipeline import VideoResult
from . import outputs
from .metadata import metadata
from .outdir import Claim, OutDir

Tensor = torch.Tensor

__all__ = ["Result", "save", "write_video"]


@dataclass(frozen=True)
class Result:
    """A video written to the out folder. ``skipped``: it was finished before (by an earlier run or
    another process) and not made again; then ``video`` is None and ``latents`` are read back."""

    prompt: str
    seed: int
    files: dict[str, Path]
    latents: Tensor | None  # None when skipped (read them from files["latents"])
    video: Tensor | None  # (F, 3, H, W) in [0, 1]
    timings: dict[str, float]
    skipped: bool = False


def write_video(out: OutDir, claim: Claim, r: VideoResult, run: dict[str, Any] | None = None) -> dict[str, Path]:
    """Commit ``r``'s four files under ``claim`` (the JSON last); ``run`` adds to the JSON (engine,
    rank, world size, worker). On failure nothing of it is left (:meth:`OutDir.commit`)."""
    run = {"engine": "local", "rank": 0, "world_size": 1, **(run or {})}
    files = out.files(claim.stem)
    meta = metadata(r, files, run)
    tensors = {"latents": r.latents, "latents_for_vae": r.latents_for_vae}
    return out.commit(
        claim,
        [
            ("latents", lambda d: outputs.write_latents(d, tensors)),
            ("video", lambda d: outputs.write_mp4(d, r.frames, r.fps)),
            ("sheet", lambda d: outputs.write_contact_sheet(d, r.frames)),
            ("meta", lambda d: outputs.write_json(d, meta)),
        ],
    )


def save(r: VideoResult, stem: str, out: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write ``r``'s four files as ``stem`` (its :func:`~cogsample.jobs.naming.video_stem`) into ``out``
    under the out folder's rules (:mod:`cogsample.jobs.outdir`): a finished video of the same name is
    the same video and is kept unless ``overwrite``."""
    if r.frames is None:
        raise ValueError("this result was not decoded (run(..., decode=False)): it has no video to save")
    d = OutDir(out)
    d.check_writable()
    with d.claimed(stem, wait=True) as claim:
        assert claim is not None
        if d.finished(stem) and not overwrite:
            return d.files(stem)
        d.remove(claim)
        return write_video(d, claim, r)
