"""The engines that make a planned batch: this process (alone or as a torchrun rank) or Ray's workers."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pipeline.progress import Progress
    from .generate_plan import Batch


def run_here(batch: Batch, finished: Callable[[Any], None], progress: Progress | None) -> None:
    """Make this process's share: the pipeline loaded when a video first needs it."""
    from ..jobs.batch import run_batch
    from ..pipeline.pipeline import Pipeline

    args, base, groups = batch.args, batch.base, batch.groups

    def load() -> Pipeline:
        return Pipeline.for_options(base, log=batch.log, parallel=groups)

    record = batch.launch.record()
    if groups is not None:
        record.update(parallel=groups.config.to_dict(), video_group=groups.group, ranks=groups.ranks)
    run_batch(
        batch.mine,
        batch.out,
        pipeline=load,
        overwrite=args.overwrite,
        run=record,
        group=groups,
        on_result=finished,
        progress=progress,
        log=batch.log,
    )


def run_on_ray(batch: Batch, finished: Callable[[Any], None]) -> None:
    """Make the whole batch on a Ray cluster's workers; their messages go to stderr, as this process's do."""
    import contextlib

    from ..jobs.raybatch import run_on_ray as run_jobs

    args = batch.args
    with contextlib.redirect_stdout(sys.stderr):
        run_jobs(
            batch.jobs,
            batch.out,
            address=args.ray or None,
            workers=args.workers,
            overwrite=args.overwrite,
            on_result=finished,
            log=batch.log,
            quiet=batch.quiet,
        )
