"""What a run reports while it works: a :class:`StepEvent` after each sampler step, a
:class:`PrepareEvent` for the once-per-size work before the first (shown by
:mod:`cogsample.pipeline.progress`, handed to a ``Pipeline`` call's ``callback``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PrepareEvent", "StepEvent"]


@dataclass(frozen=True)
class StepEvent:
    """Progress of one sampler step: video ``video`` of ``videos``, step ``step + 1`` of ``steps``;
    ``forwards``: network evaluations per sample so far (each context window counts), ``windows``:
    context windows per call (1: none)."""

    video: int
    videos: int
    step: int
    steps: int
    timestep: int | None
    sigma: float
    elapsed: float
    forwards: int = 0
    windows: int = 1


@dataclass(frozen=True)
class PrepareEvent:
    """Work a model does once per size before video ``video``'s first step (the built-in model
    renders its clips): ``done`` of ``total`` parts of ``what``."""

    video: int
    videos: int
    done: int
    total: int
    what: str
