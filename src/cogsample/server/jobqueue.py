"""The server's queue: every accepted job is a file in ``OUT/.queue/``, so it outlives any process.

* ``ID.json``, written atomically before the request is answered: the request as accepted, the
  video's name (``ID`` is that name's hash) and when it was accepted. It never changes.
* What became of a job is read from other files, never kept in memory alone: the video's own files
  (finished: :meth:`~cogsample.jobs.outdir.OutDir.finished`), ``ID.cancelled`` and
  ``ID.failed.json`` (written under the video's claim, so no process is making it then), and
  ``ID.progress.json`` (the step a live process is at; its pid tells a dead one's from a live one's).
* Making a job is the batch engine's claim on its name (:mod:`cogsample.jobs.outdir`), so any number
  of servers and ``generate`` runs share one out folder and make each video once.

Files rather than SQLite: the out folder's claims already decide who makes a video, and a job's
state then lives where its video does; a database beside them would be a second truth to keep in
step, and SQLite's locking is unsafe on the network file systems that out folders often sit on.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..jobs.outdir import OutDir
from ..jobs.outputs import atomic_path

__all__ = ["Busy", "Job", "JobQueue", "job_id"]

QUEUE = ".queue"


class Busy(Exception):
    """The job cannot change now (running, or already finished): HTTP 409."""


def job_id(name: str) -> str:
    """A job's id: the hash at the end of its video's name (``<slug>-s<seed>-<10 hex>``)."""
    return name.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class Job:
    """An accepted job: its id, its video's name, the request (a JSONL line's keys) and when (s)."""

    id: str
    name: str
    request: dict[str, Any]
    accepted: float


class JobQueue:
    """The jobs of one out folder (see the module docstring)."""

    def __init__(self, out: OutDir):
        self.out = out
        self.path = out.path / QUEUE

    def _file(self, job_id: str, suffix: str) -> Path:
        return self.path / f"{job_id}{suffix}"

    def _write(self, dest: Path, data: Any) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    # ------------------------------------------------------------------------------------------
    # jobs

    def submit(self, name: str, request: dict[str, Any]) -> Job:
        """Accept a job (idempotent: the same video asked again is the same job); a failed or
        cancelled one is queued again. On disk before this returns."""
        jid = job_id(name)
        job = self.get(jid)
        if job is None:
            job = Job(jid, name, request, time.time())
            self._write(
                self._file(jid, ".json"), {"id": jid, "name": name, "request": request, "accepted": job.accepted}
            )
            return job
        with self.out.claimed(name) as claim:
            if claim is not None:  # nobody is making it: clear the end it came to
                self._file(jid, ".failed.json").unlink(missing_ok=True)
                self._file(jid, ".cancelled").unlink(missing_ok=True)
        return job

    def get(self, jid: str) -> Job | None:
        """The job ``jid``, or None (also for an id that is not a job's: no path is built from it)."""
        if not (len(jid) == 10 and all(c in "0123456789abcdef" for c in jid)):
            return None
        try:
            d = json.loads(self._file(jid, ".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return Job(d["id"], d["name"], d["request"], float(d["accepted"]))

    def jobs(self) -> list[Job]:
        """Every accepted job, oldest first."""
        found = (self.get(p.name[:-5]) for p in self.path.glob("[0-9a-f]*.json") if len(p.name) == 15)
        return sorted((j for j in found if j is not None), key=lambda j: (j.accepted, j.id))

    # ------------------------------------------------------------------------------------------
    # states

    def status(self, job: Job) -> dict[str, Any]:
        """``queued``, ``running`` (with ``step``, ``steps``, ``forwards``), ``finished`` (with the
        files' names), ``failed`` (with ``error``) or ``cancelled``."""
        base = {"id": job.id, "name": job.name, "prompt": job.request.get("prompt"), "accepted": job.accepted}
        if self.out.finished(job.name):
            files = {role: p.name for role, p in self.out.files(job.name).items()}
            return {**base, "status": "finished", "files": files}
        if self._file(job.id, ".cancelled").exists():
            return {**base, "status": "cancelled"}
        failed = _read(self._file(job.id, ".failed.json"))
        if failed is not None:
            return {**base, "status": "failed", "error": failed.get("error", "failed")}
        progress = _read(self._file(job.id, ".progress.json"))
        if progress is not None and _alive(progress):
            keys = ("step", "steps", "forwards", "video_s")
            return {**base, "status": "running", **{k: progress[k] for k in keys if k in progress}}
        return {**base, "status": "queued"}

    def wanted(self, name: str) -> bool:
        """Whether ``name``'s job is still to be made (asked under its claim: not cancelled)."""
        return not self._file(job_id(name), ".cancelled").exists()

    def cancel(self, job: Job) -> None:
        """Cancel a queued job; :class:`Busy` while it runs or once it is finished."""
        with self.out.claimed(job.name) as claim:
            if claim is None:
                raise Busy(f"job {job.id} is running: it can no longer be cancelled")
            if self.out.finished(job.name):
                raise Busy(f"job {job.id} is finished")
            self._write(self._file(job.id, ".cancelled"), {"cancelled": time.time()})

    def fail(self, job: Job, error: str) -> None:
        """Record why ``job`` failed; it is not tried again until it is submitted again."""
        self._write(self._file(job.id, ".failed.json"), {"error": error, "at": time.time()})
        self.done(job)

    def progress(self, job: Job, **fields: Any) -> None:
        """Record the step this process is at (``step``, ``steps``, ``forwards``)."""
        self._write(
            self._file(job.id, ".progress.json"),
            {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time(), **fields},
        )

    def done(self, job: Job) -> None:
        """This process no longer works on ``job``."""
        self._file(job.id, ".progress.json").unlink(missing_ok=True)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(progress: dict[str, Any]) -> bool:
    """Whether the process that wrote ``progress`` still runs (on another host: whether it wrote
    in the last minute)."""
    if progress.get("host") != socket.gethostname():
        return time.time() - float(progress.get("at", 0)) < 60
    try:
        os.kill(int(progress["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        return False
    except PermissionError:
        return True
    return True
