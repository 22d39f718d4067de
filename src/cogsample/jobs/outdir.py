"""The out folder: which videos are finished, and one process at a time on each.

A video ``NAME`` is the files ``NAME.latents.safetensors``, ``NAME.mp4``, ``NAME.png`` and
``NAME.json``. The rules, for any number of processes on one folder (also over NFS, whose
``flock`` the Linux client maps to POSIX locks):

* **Finished** means ``NAME.json`` is in place and names files that all exist. Each file is
  written under a temporary name and renamed into place, the JSON last, so a video is either
  finished or it is not; there is no half-written state a reader can see as finished.
* **Claimed**: a process works on ``NAME`` only while it holds an exclusive ``flock`` on
  ``.NAME.lock``. The kernel drops the lock when its process ends, however it ends (``SIGKILL``
  included), so a dead process never blocks the name.
* **Resumed**: under the claim, what an unfinished ``NAME`` left (final files without their JSON,
  temporary ``.NAME.*.part*`` files of a killed writer) is removed before it is made again.
* The holder removes ``.NAME.lock`` before it lets go; a process that then gets the lock of the
  removed file sees that the path no longer names it and takes the lock anew.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .interrupts import uninterrupted
from .outputs import SUFFIXES, check_writable

__all__ = ["Claim", "OutDir", "WriteError"]


class WriteError(OSError):
    """Writing one output failed (disk full, a directory where the file goes, ...); ``path`` is the
    file the user would have got, not the temporary name the error happened on."""

    def __init__(self, path: Path, cause: OSError):
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        self.path = Path(path)
        self.cause = cause

    def __str__(self) -> str:
        reason = self.cause.strerror or str(self.cause) or type(self.cause).__name__
        return f"cannot write {self.path}: {reason}"


@dataclass
class Claim:
    """An exclusive hold on one name (see the module docstring); ``fd`` is the locked file."""

    stem: str
    lock: Path
    fd: int


class OutDir:
    """One output folder shared by any number of processes (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def check_writable(self) -> Path:
        """Create the folder if needed and prove it takes a file; ``ValueError`` naming it if not."""
        return check_writable(self.path)

    def files(self, stem: str) -> dict[str, Path]:
        """The final path of each of a video's files, by role (``video``, ``latents``, ``meta``, ``sheet``)."""
        return {role: self.path / f"{stem}{suffix}" for role, suffix in SUFFIXES.items()}

    def finished(self, stem: str) -> bool:
        """Whether ``stem``'s JSON is in place and every file it names exists."""
        meta = self.files(stem)["meta"]
        try:
            names = json.loads(meta.read_text(encoding="utf-8")).get("files", {})
        except (OSError, ValueError, AttributeError):
            return False
        if not isinstance(names, dict) or not names:
            return False
        return all(isinstance(n, str) and (self.path / n).is_file() for n in names.values())

    def leftovers(self, stem: str) -> list[Path]:
        """What an unfinished (or interrupted) ``stem`` left: its temporary files, and its final
        files when its JSON is missing. Only meaningful to the claim's holder."""
        found = list(self._temporaries(stem))
        if not self.files(stem)["meta"].exists():
            found += [p for p in self.files(stem).values() if p.exists()]
        return found

    def _temporaries(self, stem: str) -> Iterator[Path]:
        # outputs.atomic_path names them ".<final name>.<random>.part<suffix>"
        for suffix in SUFFIXES.values():
            yield from self.path.glob(f".{_glob_escape(stem)}{suffix}.*.part*")

    # ------------------------------------------------------------------------------------------
    # claims

    def try_claim(self, stem: str) -> Claim | None:
        """The claim on ``stem``, or None while another live process holds it."""
        return self._lock(stem, wait=False)

    def wait_claim(self, stem: str) -> Claim:
        """The claim on ``stem``, waiting for the process that holds it to let go (or die)."""
        claim = self._lock(stem, wait=True)
        assert claim is not None
        return claim

    def _lock(self, stem: str, wait: bool) -> Claim | None:
        path = self.path / f".{stem}.lock"
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return Claim(stem, path, fd)
            # the previous holder removed the file as it let go: this lock guards nothing
            os.close(fd)

    def release(self, claim: Claim) -> None:
        """Let go of ``claim``, removing its lock file first (see the module docstring)."""
        with uninterrupted():
            try:
                claim.lock.unlink(missing_ok=True)
            finally:
                os.close(claim.fd)

    @contextmanager
    def claimed(self, stem: str, wait: bool = False) -> Iterator[Claim | None]:
        """``with out.claimed(stem) as claim:`` the claim (None if taken and not ``wait``), released
        after; a signal cannot fall between taking it and holding it (waiting stays interruptible)."""
        claim = None
        try:
            if wait:
                claim = self.wait_claim(stem)
            else:
                with uninterrupted():
                    claim = self.try_claim(stem)
            yield claim
        finally:
            if claim is not None:
                self.release(claim)

    # ------------------------------------------------------------------------------------------
    # changes, each only under the name's claim

    def clean(self, claim: Claim) -> list[Path]:
        """Remove what an unfinished ``claim.stem`` left; returns the removed paths."""
        removed = self.leftovers(claim.stem)
        for p in removed:
            p.unlink(missing_ok=True)
        return removed

    def remove(self, claim: Claim) -> None:
        """Remove a finished video (``--overwrite``): the JSON first, so it is unfinished at once."""
        files = self.files(claim.stem)
        files["meta"].unlink(missing_ok=True)
        for p in files.values():
            p.unlink(missing_ok=True)
        self.clean(claim)

    def commit(self, claim: Claim, writers: Sequence[tuple[str, Callable[[Path], None]]]) -> dict[str, Path]:
        """Write a video: each ``(role, writer)`` writes its file (atomically, via
        :func:`~cogsample.jobs.outputs.atomic_path`), the ``meta`` role last whatever the order given.
        On any failure the files this call wrote are removed and :class:`WriteError` (for an
        ``OSError``) names the file that could not be written."""
        files = self.files(claim.stem)
        ordered = sorted(writers, key=lambda rw: rw[0] == "meta")
        done: list[Path] = []
        try:
            for role, writer in ordered:
                dest = files[role]
                done.append(dest)  # before it exists: a signal after its rename still finds it
                try:
                    writer(dest)
                except WriteError:
                    raise
                except OSError as e:
                    raise WriteError(dest, e) from e
        except BaseException:
            for p in reversed(done):
                p.unlink(missing_ok=True)
            raise
        return {role: files[role] for role, _ in writers}


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
