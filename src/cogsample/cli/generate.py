"""``cogsample generate``: check and plan every video, say what the batch is, make this process's
share on its engine, and report how it ended."""

from __future__ import annotations

import argparse
import warnings
from typing import TYPE_CHECKING

from ..pipeline.progress import quiet_libraries, say
from .announce import announce
from .display import Display
from .errors import usage_error
from .generate_args import declare
from .generate_plan import plan

if TYPE_CHECKING:
    from ..jobs.batch import Interrupted
    from .generate_plan import Batch


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``generate`` and its options, run by :func:`run`."""
    declare(sub).set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """0 when every video is made; 2 for a usage error (before any work); an interruption's code;
    1 when a video cannot be written."""
    from ..jobs.distributed import Launch

    warnings.formatwarning = _warning_line
    launch = None
    try:
        launch = Launch.from_env()
        batch = plan(args, launch)
    except ValueError as e:
        return usage_error(f"cogsample generate: error: {e}", launch)
    if batch.quiet and batch.base.model not in ("builtin", "builtin-i2v"):
        quiet_libraries()
    announce(batch)
    return _make(batch)


def _warning_line(message: Warning | str, category: type[Warning], *_a: object, **_k: object) -> str:
    """A warning is a message to the user here, not a source location."""
    return f"cogsample generate: warning ({category.__name__}): {message}\n"


def _make(batch: Batch) -> int:
    """Make the videos on the engine the options picked (Ray, else this process or torchrun rank)."""
    from ..jobs.batch import Interrupted, signals_raise
    from .engines import run_here, run_on_ray

    display = Display(batch)
    try:
        with signals_raise():
            if batch.args.ray is not None:
                run_on_ray(batch, display.finished)
            else:
                run_here(batch, display.finished, display.steps)
    except Interrupted as e:
        display.close()
        return _interrupted(batch, e)
    except OSError as e:
        display.close()
        return _write_failed(batch, display, e)
    finally:
        display.close()
    if batch.leads:
        batch.log(display.videos.summary())
    if batch.groups is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _interrupted(batch: Batch, e: Interrupted) -> int:
    """How far the batch got, and how to resume it; the signal's exit code."""
    from ..jobs.batch import count_finished

    if batch.groups is not None and not batch.groups.leader:
        return e.exit_code  # the leader reports for its group
    done, total = getattr(e, "finished", None) or count_finished(batch.mine, batch.out)
    say(f"{batch.prefix}interrupted: {done} of {total} videos finished; run the same command again to resume")
    return e.exit_code


def _write_failed(batch: Batch, display: Display, e: OSError) -> int:
    """A video that cannot be written: one line, the summary so far, exit 1."""
    from ..jobs.outdir import WriteError

    what = str(e) if isinstance(e, WriteError) else f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    say(f"{batch.prefix}cogsample generate: error: {what}")
    if batch.leads:
        batch.log(display.videos.summary(failed=1))
    return 1
