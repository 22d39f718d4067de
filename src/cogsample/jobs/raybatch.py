"""Batches on a Ray cluster: one actor per GPU (or one per CPU worker on a cluster without GPUs),
each with its own loaded :class:`~cogsample.pipeline.pipeline.Pipeline`, all writing into one out folder
that every node sees, under the same claims and names as any other process
(:mod:`cogsample.jobs.outdir`). The driver hands out one video at a time to whichever actor is free.

A worker that dies is restarted and its video retried by Ray (``max_restarts``,
``max_task_retries``); the kernel released its claim when it died, so the retry removes what it
left and makes the video again. Interrupted, the driver stops the actors, then removes what their
unfinished videos left.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..pipeline.options import GenerateOptions
from .outdir import OutDir
from .write import Result

__all__ = ["RETRIES", "check_ray", "run_on_ray"]

#: How often Ray restarts a dead worker and retries its video before the batch fails.
RETRIES = 3


def check_ray() -> None:
    """``ValueError`` with the install command when Ray is missing."""
    if importlib.util.find_spec("ray") is None:
        raise ValueError("--ray needs Ray: pip install 'cogsample[ray]'")


class Worker:
    """One Ray actor: plans the batch where it runs (its device), loads the model on first use."""

    def __init__(
        self,
        index: int,
        workers: int,
        jobs: Sequence[tuple[str, GenerateOptions]],
        out: str,
        overwrite: bool,
        quiet: bool,
    ):
        import dataclasses

        import torch

        self.index, self.workers = index, workers
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # Ray gave this actor one GPU, or none
        self.jobs = [(w, dataclasses.replace(o, device=self.device)) for w, o in jobs]
        self.out = OutDir(out)
        self.overwrite = overwrite
        self.quiet = quiet
        self._items: list | None = None
        self._pipe = None

    def items(self) -> list:
        if self._items is None:
            from .batch import plan_jobs

            self._items = plan_jobs(self.jobs)
        return self._items

    def stems(self) -> list[str]:
        """Each job's name, as planned here."""
        return [item.stem for item in self.items()]

    def pid(self) -> int:
        return os.getpid()

    def _pipeline(self):
        if self._pipe is None:
            from ..pipeline.pipeline import Pipeline

            if self.quiet:
                from ..pipeline.progress import quiet_libraries

                quiet_libraries()
            o = self.jobs[0][1]
            pipe = Pipeline.for_options(o, device=self.device)
            # the videos this actor will get are not known yet: encode every prompt once, then free T5
            pipe.encode_videos([(item.plan, item.k) for item in self.items()])
            self._pipe = pipe
        return self._pipe

    def make(self, i: int) -> dict[str, Any]:
        """Make job ``i`` (or find it finished) under its claim; a summary for the driver."""
        import socket

        from .batch import run_batch

        item = self.items()[i]
        # rank / world_size: this worker's place among the batch's workers, as under torchrun
        run = {
            "engine": "ray",
            "rank": self.index,
            "world_size": self.workers,
            "worker": self.index,
            "node": socket.gethostname(),
            "pid": os.getpid(),
        }
        (r,) = run_batch([item], self.out, pipeline=self._pipeline, overwrite=self.overwrite, run=run)
        return {
            "prompt": r.prompt,
            "seed": r.seed,
            "files": {k: str(v) for k, v in r.files.items()},
            "timings": r.timings,
            "skipped": r.skipped,
            "worker": self.index,
        }


def run_on_ray(
    jobs: Sequence[tuple[str, GenerateOptions]],
    out: OutDir,
    *,
    address: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    on_result: Callable[[Result], None] | None = None,
    log: Callable[[str], None] | None = None,
    quiet: bool = False,
) -> list[Result]:
    """Make ``jobs`` (:func:`~cogsample.jobs.batch.batch_options`) on Ray: the cluster at ``address``,
    or a new local one; ``workers`` actors (default: one per GPU, else 1). One
    :class:`~cogsample.jobs.write.Result` per distinct video, in order; ``on_result`` hears of each
    as soon as it is finished."""
    import ray

    from .batch import Interrupted

    say = log or (lambda _m: None)
    tell = on_result or (lambda _r: None)
    ours = not ray.is_initialized()
    if ours:
        quiet_kw = {"log_to_driver": not quiet, **({"logging_level": logging.ERROR} if quiet else {})}
        if address:
            ray.init(address=address, **quiet_kw)
        else:
            cpus = max(os.cpu_count() or 1, workers or 1)
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, **quiet_kw)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        n = workers or max(1, gpus)
        resources = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
        actor = ray.remote(max_restarts=RETRIES, max_task_retries=RETRIES, **resources)(Worker)
        pool = [actor.remote(i, n, list(jobs), str(out.path.resolve()), overwrite, quiet) for i in range(n)]
        stems = ray.get(pool[0].stems.remote())
        first = {}
        for i, stem in enumerate(stems):
            first.setdefault(stem, i)  # a video asked for twice is made once
        say(f"ray: {n} worker(s) on {'a GPU each' if gpus else 'the CPU'}, {len(first)} video(s)")
        queue = deque(first.values())
        results: dict[str, Result] = {}
        busy: dict[Any, tuple[Any, int]] = {}
        idle = list(pool)
        try:
            while queue or busy:
                while idle and queue:
                    a = idle.pop(0)
                    i = queue.popleft()
                    busy[a.make.remote(i)] = (a, i)
                done, _ = ray.wait(list(busy), num_returns=1)
                for ref in done:
                    a, i = busy.pop(ref)
                    idle.append(a)
                    info = _get(ray, ref, stems[i])
                    # the workers write to the resolved folder; name the files as --out was given, as
                    # the other engines do
                    files = {k: out.path / Path(v).name for k, v in info["files"].items()}
                    r = Result(info["prompt"], info["seed"], files, None, None, info["timings"], info["skipped"])
                    results[stems[i]] = r
                    if not r.skipped:
                        say(f"worker {info['worker']} wrote {files['video']}")
                    tell(r)
        except Interrupted as e:
            for a in pool:
                ray.kill(a, no_restart=True)
            _clean_after(out, [stems[i] for _, i in busy.values()])
            e.finished = (sum(out.finished(s) for s in first), len(first))  # type: ignore[attr-defined]
            raise
        return [results[s] for s in first]
    finally:
        if ours:
            ray.shutdown()


def _get(ray: Any, ref: Any, stem: str) -> dict[str, Any]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        raise RuntimeError(f"{stem}: its Ray worker died {RETRIES + 1} times ({e})") from e
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else None
        if isinstance(cause, (OSError, ValueError)):
            raise cause from e
        raise


def _clean_after(out: OutDir, stems: Sequence[str], timeout: float = 30.0) -> None:
    """Remove what the killed workers' unfinished videos left, once their claims are free."""
    deadline = time.monotonic() + timeout
    for stem in stems:
        while True:
            claim = out.try_claim(stem)
            if claim is not None:
                try:
                    if not out.finished(stem):
                        out.clean(claim)
                finally:
                    out.release(claim)
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
