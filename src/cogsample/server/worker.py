"""The server's worker: a thread that makes the queue's jobs, oldest first, through the batch
engine (:func:`~cogsample.jobs.batch.run_batch`), one at a time, with the model loaded once."""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..jobs.batch import BatchItem, batch_options, entry_options, plan_jobs, run_batch
from ..pipeline.events import StepEvent
from ..pipeline.options import GenerateOptions
from ..pipeline.pipeline import Pipeline
from .jobqueue import Job, JobQueue

__all__ = ["Stopped", "Worker", "plan_request"]

#: How long a job another process holds is left alone before it is looked at again (s).
HELD_RETRY_S = 2.0


class Stopped(BaseException):
    """The server is stopping: unwinds the video being made (its temporary files removed, its
    claim let go), which stays queued for the next start."""


def plan_request(base: GenerateOptions, request: dict[str, Any], out: Path) -> BatchItem:
    """The video a request asks for, planned on top of the server's options (every check of
    ``generate``; ``ValueError`` says what cannot run)."""
    entry = entry_options(request, out)
    return plan_jobs(batch_options(base, [("", entry)]))[0]


class Worker(threading.Thread):
    """Makes the queue's jobs whose name this server's options give (a job accepted under other
    options waits for a server that has them)."""

    def __init__(
        self,
        queue: JobQueue,
        base: GenerateOptions,
        *,
        log: Callable[[str], None] = print,
        load: Callable[[], Pipeline] | None = None,
    ):
        super().__init__(name="cogsample-worker", daemon=True)
        self.queue, self.base, self.log = queue, base, log
        self._load = load or (lambda: Pipeline.for_options(base, log=log))
        self._pipe: Pipeline | None = None
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._later: dict[str, float] = {}  # job id -> when to look at it again
        self._foreign: set[str] = set()  # jobs accepted under other options

    def pipeline(self) -> Pipeline:
        """The model, loaded at the first job; its text encoder kept for the prompts to come."""
        if self._pipe is None:
            self._pipe = self._load()
            self._pipe.keep_text_encoder = True
        return self._pipe

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            job = self._next()
            if job is None:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            try:
                self._make(job)
            except Stopped:
                return

    def _next(self) -> Job | None:
        now = time.time()
        for job in self.queue.jobs():
            if job.id in self._foreign or self._later.get(job.id, 0) > now:
                continue
            if self.queue.status(job)["status"] == "queued":
                return job
        return None

    def _make(self, job: Job) -> None:
        try:
            item = plan_request(self.base, job.request, self.queue.out.path)
        except ValueError as e:
            self.queue.fail(job, str(e))
            return
        if item.stem != job.name:
            self._foreign.add(job.id)
            self.log(f"job {job.id} was accepted under other options than this server's: left for a server with them")
            return
        started = time.perf_counter()

        def progress(event: Any) -> None:
            if self.stopping.is_set():
                raise Stopped()
            if isinstance(event, StepEvent):
                self.queue.progress(job, step=event.step + 1, steps=event.steps, forwards=event.forwards)

        try:
            self.queue.progress(job, step=0, steps=0, forwards=0)
            made = run_batch(
                [item],
                self.queue.out,
                pipeline=self.pipeline,
                wait=False,
                keep=self.queue.wanted,
                progress=progress,
                run={"engine": "serve"},
            )
        except Exception as e:  # a job that cannot be made is recorded as failed; the server goes on
            self.queue.fail(job, f"{type(e).__name__}: {e}")
            self.log(f"job {job.id} failed:\n{traceback.format_exc()}")
            return
        finally:
            self.queue.done(job)
            if self._pipe is not None:
                self._pipe.forget_prompts()
        if made and not made[0].skipped:
            self.log(f"job {job.id} finished: {job.name} ({time.perf_counter() - started:.1f} s)")
        elif not made:
            self._later[job.id] = time.time() + HELD_RETRY_S  # another process holds it
