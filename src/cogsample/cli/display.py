"""What ``generate`` shows while it runs: each finished video's path on stdout, the batch's
progress by video on stderr, and the steps of the video being made (a bar on a terminal)."""

from __future__ import annotations

import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..pipeline.progress import BatchProgress, Progress, say

if TYPE_CHECKING:
    from .generate_plan import Batch


class Display:
    """The progress display of a planned batch; :meth:`finished` takes each video's result."""

    def __init__(self, batch: Batch):
        self.leads = batch.leads
        self.log = batch.log
        self.paths = sys.stdout  # the video paths, and only they, go here (Ray's messages go to stderr)
        # 2: a video two lines ask for, its path printed for each
        self.asked = Counter(batch.out.files(item.stem)["video"].name for item in batch.mine)
        self.videos = BatchProgress(batch.unique, batch.log)
        self.steps = (
            None if batch.quiet else Progress(bar=False if batch.launch.distributed else None, prefix=batch.prefix)
        )

    def finished(self, r: Any) -> None:
        """A video made or finished before: its path (once per line asking for it), then its progress line."""
        if not self.leads:
            return
        for _ in range(self.asked.get(r.files["video"].name, 1)):
            say(str(r.files["video"]), self.paths)
        if r.skipped:
            self.log(f"finished before: {r.files['video']}")
        self.videos.result(r)

    def close(self) -> None:
        """End the step display (a bar's last line)."""
        if self.steps is not None:
            self.steps.close()
