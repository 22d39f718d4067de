"""What a run shows while it works, on stderr (never stdout, which holds only video paths):

* :class:`Progress`: each video's steps, a bar on a terminal, a log line per 10% of steps
  otherwise (the CLI's display, and ``Pipeline.__call__(..., progress=True)``'s);
* :class:`BatchProgress`: a batch's videos: ``video k of N done ..., ETA ...`` after each one made,
  and a summary at the end (made, finished before, failed, time).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from .events import PrepareEvent

__all__ = ["BatchProgress", "Progress", "duration", "quiet_libraries", "say"]


def say(line: str, stream=None) -> None:
    """Write ``line`` and its newline in one call, then flush. ``print`` writes them apart, and
    with an unbuffered stream (``PYTHONUNBUFFERED=1``) ranks sharing a pipe could join two lines."""
    stream = stream or sys.stderr
    stream.write(f"{line}\n")
    stream.flush()


class Progress:
    """A bar (step, noise level, rate, ETA) on a terminal; a log line per 10% of steps otherwise.
    Work before the first step (a :class:`~cogsample.pipeline.events.PrepareEvent`) is shown too."""

    def __init__(self, stream=None, bar: bool | None = None, prefix: str = ""):
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self.prefix = prefix
        self._tqdm = None
        self._video = -1
        self._said = -1

    def _prepare(self, ev) -> None:
        # a line at the start and at each quarter: enough to show it is working
        quarter = 4 * ev.done // max(1, ev.total)
        if ev.done == 0 or quarter > self._said:
            self._said = quarter
            line = f"{self.prefix}video {ev.video + 1}/{ev.videos}: {ev.what} ({ev.done}/{ev.total})"
            say(line, self.stream)

    def __call__(self, ev) -> None:
        if isinstance(ev, PrepareEvent):
            self.close()
            self._prepare(ev)
            return
        level = f"sigma={ev.sigma:.3g}" if ev.timestep is None else f"t={ev.timestep} sigma={ev.sigma:.3g}"
        if ev.forwards:
            level += f" fwd={ev.forwards}" + (f" ({ev.windows} windows)" if ev.windows > 1 else "")
        if self.bar:
            from tqdm import tqdm

            if ev.video != self._video:
                self.close()
                self._video = ev.video
                self._tqdm = tqdm(
                    total=ev.steps,
                    desc=f"{self.prefix}video {ev.video + 1}/{ev.videos}",
                    unit="step",
                    file=self.stream,
                    dynamic_ncols=True,
                )
            self._tqdm.set_postfix_str(level, refresh=False)
            self._tqdm.update(1)
            if ev.step + 1 == ev.steps:
                self.close()
            return
        every = max(1, ev.steps // 10)
        if (ev.step + 1) % every == 0 or ev.step + 1 == ev.steps:
            rate = (ev.step + 1) / ev.elapsed if ev.elapsed > 0 else float("inf")
            eta = (ev.steps - ev.step - 1) / rate if rate > 0 else 0.0
            say(
                f"{self.prefix}video {ev.video + 1}/{ev.videos} step {ev.step + 1}/{ev.steps} {level} "
                f"{rate:.2f} step/s eta {eta:.0f}s",
                self.stream,
            )

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


def duration(seconds: float) -> str:
    """``seconds`` for a person: ``0.4 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = max(0.0, seconds)
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class BatchProgress:
    """A batch's progress by video: :meth:`result` for each finished video
    (a batch's ``Result``, made or skipped: its ``skipped`` and ``timings``), :meth:`summary` at the end.

    After each video made in a batch of several: ``video k of N done (T s); ETA E``, ``k``
    counting the ones finished before too, the ETA the videos left times the mean time of those
    made so far (the model's loading left out). ``say`` gets each line; ``clock`` is for tests."""

    def __init__(self, total: int, say: Callable[[str], None], clock: Callable[[], float] = time.perf_counter):
        self.total = total
        self.say = say
        self.clock = clock
        self.began = self.start = clock()  # began: the batch; start: its work (after loading)
        self.made = 0
        self.skipped = 0
        self._last: float | None = None  # when the last video made was done (None: none yet)

    def result(self, r: Any) -> None:
        if r.skipped:
            self.skipped += 1
            return
        now = self.clock()
        load = float(r.timings.get("load_s", 0.0)) if self._last is None else 0.0
        took = now - (self.start if self._last is None else self._last) - load
        if self._last is None:
            self.start += load  # the work began once the model was loaded
        self._last = now
        self.made += 1
        done = self.made + self.skipped
        if self.total <= 1:
            return
        left = self.total - done
        eta = (now - self.start) / self.made * left
        self.say(f"video {done} of {self.total} done ({duration(took)})" + (f"; ETA {duration(eta)}" if left else ""))

    def summary(self, failed: int = 0) -> str:
        """``done in T: M made, S finished before, F failed (of N)``."""
        took = self.clock() - self.began
        verb = "done" if not failed else "stopped"
        return (
            f"{verb} in {duration(took)}: {self.made} made, {self.skipped} finished before, {failed} failed "
            f"(of {self.total} video{'s' if self.total != 1 else ''})"
        )


def quiet_libraries() -> None:
    """No loading bars or advice from transformers / diffusers / huggingface_hub (``--quiet``)."""
    import importlib
    import importlib.util
    import os

    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for name in ("transformers", "diffusers"):
        if importlib.util.find_spec(name) is None:
            continue
        logging = importlib.import_module(f"{name}.utils.logging")
        logging.disable_progress_bar()
        logging.set_verbosity_error()
