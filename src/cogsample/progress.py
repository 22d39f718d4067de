"""What a run shows while it works, on stderr (never stdout, which holds only video paths):

* :class:`Progress`: each video's steps, a bar on a terminal, a log line per 10% of steps
  otherwise (the CLI's display, and ``Pipeline.__call__(..., progress=True)``'s).
"""

from __future__ import annotations

import sys

__all__ = ["Progress"]


class Progress:
    """A bar (step, noise level, rate, ETA) on a terminal; a log line per 10% of steps otherwise.
    Work before the first step (a :class:`~cogsample.pipeline.PrepareEvent`) is shown too."""

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
            print(line, file=self.stream, flush=True)

    def __call__(self, ev) -> None:
        from .pipeline import PrepareEvent

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
            print(
                f"{self.prefix}video {ev.video + 1}/{ev.videos} step {ev.step + 1}/{ev.steps} {level} "
                f"{rate:.2f} step/s eta {eta:.0f}s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
