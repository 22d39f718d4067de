"""The Python entry point, ``cogsample.Pipeline``: the pipeline's :class:`~cogsample.pipeline.pipeline.Pipeline`
whose calls return a :class:`VideoResult` that knows its file name (:attr:`VideoResult.stem`) and
saves itself (:meth:`VideoResult.save`): the CLI's four files, under the same names and rules.
Computing stays in the pipeline, which writes nothing; saving is this layer's."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from torch import Tensor

from ..pipeline import pipeline
from ..pipeline.events import StepEvent
from .naming import video_stem
from .write import save

__all__ = ["Pipeline", "VideoResult"]


@dataclasses.dataclass(frozen=True)
class VideoResult(pipeline.VideoResult):
    """One generated video, in memory (nothing written until :meth:`save`): what
    ``cogsample.Pipeline(...)(prompt)`` returns (the fields: :class:`cogsample.pipeline.pipeline.VideoResult`)."""

    @classmethod
    def of(cls, r: pipeline.VideoResult) -> VideoResult:
        """``r``'s fields, as a result that can be saved."""
        return cls(**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)})

    @functools.cached_property
    def stem(self) -> str:
        """The file name stem this video gets in an out folder (:func:`~cogsample.jobs.naming.video_stem`);
        worked out once, as it hashes the bytes of the video's image and initial noise."""
        return video_stem(self.plan, self.k)

    def save(self, out: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
        """Write the four files into ``out`` under the out folder's rules (:mod:`cogsample.jobs.outdir`):
        a finished video of the same name is the same video and is kept unless ``overwrite``."""
        return save(self, self.stem, out, overwrite=overwrite)


class Pipeline(pipeline.Pipeline):
    """:class:`cogsample.pipeline.pipeline.Pipeline` (load a model once, then ``pipe(prompt, **options)``)
    whose calls return a :class:`VideoResult` that can be saved."""

    def __call__(
        self,
        prompt: str,
        image: Any = None,
        *,
        progress: bool | TextIO = True,
        callback: Callable[[StepEvent, Tensor, Tensor], None] | None = None,
        **options: Any,
    ) -> VideoResult:
        """One video of ``prompt``: :meth:`cogsample.pipeline.pipeline.Pipeline.__call__`, nothing written."""
        return VideoResult.of(super().__call__(prompt, image, progress=progress, callback=callback, **options))
