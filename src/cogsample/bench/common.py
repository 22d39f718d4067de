"""What the benchmark modules share: the tiny transformer's size and video, the machine's CPU name,
and a context that keeps library warnings out of the output. Imports no other bench module, so
the bench modules' imports stay a tree (none imports one that imports it back)."""

from __future__ import annotations

import platform
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..models.tiny import TinySize

__all__ = ["BENCH_SIZE", "BENCH_VIDEO", "cpu_name", "quiet"]

#: The benchmark's "tiny" transformer: big enough that its forward, not the sampler, dominates
#: a step, small enough for 2 CPU cores (the text encoder and VAE keep the tests' sizes).
BENCH_SIZE = TinySize(num_layers=4, num_heads=4, head_dim=64, text_dim=64)
#: Video size of the tiny runs: the tiny transformer's native 9 frames at 32 x 48 px (3 x 4 x 6 latents).
BENCH_VIDEO = {"frames": 9, "height": 32, "width": 48}


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@contextmanager
def quiet() -> Iterator[None]:
    """No warnings (diffusers' deprecations, the profile's grid notes) in the benchmark's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
