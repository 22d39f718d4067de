"""The bench's harness: what its sections share instead of each building its own.

* what runs: the tiny diffusers transformer's size and video, its prompt, seed and guidance scale,
  and the folder and model built from them (:func:`tiny_folder`, :func:`tiny_model`);
* seeds: each sample row's initial and in-loop noise (:func:`initial_noise`, :func:`sample_noise`);
* timing: one sampler run's wall time (:func:`timed_sample`), interleaved repeats
  (:func:`interleaved`), their median and minimum (:func:`stats`), step times;
* scoring: squared distances to the true clips and each sample's nearest one
  (:func:`sq_distances`, :func:`nearest_clip`), two runs' relative L2 distance (:func:`rel_l2`);
* the record: the machine (:func:`machine`, :func:`device_info`, :func:`loadavg`), non-finite figures
  (:func:`non_finite`), a missing dependency (:func:`needs_diffusers`), table cells (:func:`cell`).

Imports no other bench module, so the bench modules' imports stay a tree (none imports one that
imports it back).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..models.tiny import TinySize, build_tiny_folder
from ..sampling.config import SamplingConfig, release
from ..sampling.noise import SeededNoise

Tensor = torch.Tensor
T = TypeVar("T")

__all__ = [
    "BENCH_SIZE",
    "BENCH_VIDEO",
    "GUIDANCE_SCALE",
    "PROMPT",
    "SEED",
    "cell",
    "cpu_name",
    "device_info",
    "initial_noise",
    "interleaved",
    "loadavg",
    "machine",
    "nearest_clip",
    "needs_diffusers",
    "non_finite",
    "quiet",
    "ratio",
    "rel_l2",
    "sample_noise",
    "sq_distances",
    "stats",
    "step_times",
    "sync",
    "timed_sample",
    "tiny_folder",
    "tiny_model",
]

#: The benchmark's "tiny" transformer: big enough that its forward, not the sampler, dominates
#: a step, small enough for 2 CPU cores (the text encoder and VAE keep the tests' sizes).
BENCH_SIZE = TinySize(num_layers=4, num_heads=4, head_dim=64, text_dim=64)
#: Video size of the tiny runs: the tiny transformer's native 9 frames at 32 x 48 px (3 x 4 x 6 latents).
BENCH_VIDEO = {"frames": 9, "height": 32, "width": 48}
#: The tiny transformer's prompt, noise seed and guidance scale (cogsample's runs and diffusers' alike).
PROMPT = "a red car drives through the city at night"
SEED = 42
GUIDANCE_SCALE = 6.0


# ----------------------------------------------------------------------------------------------
# the machine


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def loadavg() -> float:
    """The 1-minute load average (0 where the platform has none): how busy the machine was."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def machine() -> dict[str, Any]:
    """Where the figures of ``bench.json`` come from."""
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def device_info() -> dict[str, Any]:
    """The machine the speed figures come from (and how busy it was: other processes skew timings)."""
    cpu = cpu_name()
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("diffusers", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "missing"
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count() or 0,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **versions,
        "python": platform.python_version(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "loadavg_1min": loadavg(),
    }


@contextmanager
def quiet() -> Iterator[None]:
    """No warnings (diffusers' deprecations, the profile's grid notes) in the benchmark's output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def needs_diffusers() -> str | None:
    """Why a section that needs diffusers cannot run (``"needs diffusers (...)"``), None where it can."""
    try:
        import diffusers  # noqa: F401
    except ImportError as e:
        return f"needs diffusers ({e})"
    return None


# ----------------------------------------------------------------------------------------------
# the tiny diffusers model


@contextmanager
def tiny_folder(size: TinySize = BENCH_SIZE) -> Iterator[Path]:
    """A freshly built tiny t2v folder (random weights from seed 0), deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="cogsample-bench-") as tmp:
        with quiet():
            folder = build_tiny_folder(Path(tmp) / "tiny-t2v", "t2v", seed=0, size=size)
        yield folder


@contextmanager
def tiny_model(size: TinySize = BENCH_SIZE, device: str = "cpu") -> Iterator[tuple[Path, Any]]:
    """:func:`tiny_folder` and its model loaded in float32."""
    from ..models.cogvideox import load_cogvideox

    with tiny_folder(size) as folder:
        with quiet():
            model = load_cogvideox(folder, dtype=torch.float32, device=device)
        yield folder, model


# ----------------------------------------------------------------------------------------------
# seeds


def initial_noise(seed: int, shape: Sequence[int]) -> Tensor:
    """Unit noise of ``shape (N, ...)``, row ``i`` from seed ``seed + i`` (every sample its own stream)."""
    return SeededNoise([seed + i for i in range(shape[0])]).initial(shape)


def sample_noise(seed: int, rows: int) -> SeededNoise:
    """The sampler's in-loop draws for ``rows`` rows: row ``i`` from ``seed + 10_000 + i``, apart
    from the streams of :func:`initial_noise`."""
    return SeededNoise([seed + 10_000 + i for i in range(rows)])


# ----------------------------------------------------------------------------------------------
# timing


def timed_sample(config: SamplingConfig, model: Any, x: Tensor, grid: Any, noise: Any) -> tuple[Tensor, float]:
    """``config``'s sampler on a built ``model`` from ``x``: the final latents and the wall seconds,
    the model released afterwards (its step cache detached) even when the sampler fails."""
    start = time.perf_counter()
    try:
        out = config.spec.fn(model, x, grid, noise, **config.options)
    finally:
        release(model)
    return out, time.perf_counter() - start


def interleaved(
    runners: Mapping[str, Callable[[], T]], repeats: int, keep: Callable[[T], Any] = lambda out: out
) -> tuple[dict[str, T], dict[str, list[Any]]]:
    """One warm-up call of each runner (first-call allocations, lazy imports), then ``repeats``
    rounds of one call each, the order reversed every other round, so that slow drift and other
    load on the machine hit every runner alike: ``(warm-up outputs, [keep(output)] of the rounds)``."""
    warm = {name: run() for name, run in runners.items()}
    runs: dict[str, list[Any]] = {name: [] for name in runners}
    for r in range(repeats):
        for name in list(runners) if r % 2 == 0 else list(reversed(runners)):
            runs[name].append(keep(runners[name]()))
    return warm, runs


def stats(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """Median and minimum of ``values`` times ``scale``."""
    return {"median": statistics.median(values) * scale, "min": min(values) * scale}


def ratio(a: float, b: float) -> float:
    """``a / b``, 0 for ``b <= 0``."""
    # A zero denominator can only come from a broken clock; keep the JSON finite regardless.
    return a / b if b > 0 else 0.0


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(first_forward: float | None, ends: Sequence[float]) -> list[float]:
    """Each step's duration: first forward's start to the first step's end, then end to end."""
    start = ends[0] if first_forward is None else first_forward
    return [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]


# ----------------------------------------------------------------------------------------------
# scoring


def sq_distances(flat: Tensor, mu: Tensor) -> Tensor:
    """``(N, K)`` squared distances ``|x_n - mu_k|^2 = |x_n|^2 - 2 x_n . mu_k + |mu_k|^2`` of flat
    samples ``(N, d)`` from clips ``mu (K, d)``."""
    return (flat * flat).sum(1, keepdim=True) - 2 * flat @ mu.T + (mu * mu).sum(1).view(1, -1)


def nearest_clip(dist2: Tensor, log_w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each sample's nearest clip ``k* = argmin_k dist2``, its squared distance, and whether the
    sample's prompt allows it (a finite log weight in ``log_w (N, K)``)."""
    nearest = dist2.argmin(dim=1)
    allowed = torch.isfinite(log_w.gather(1, nearest.view(-1, 1)).squeeze(1))
    return nearest, dist2.gather(1, nearest.view(-1, 1)).squeeze(1), allowed


def rel_l2(x: Tensor, ref: Tensor) -> float:
    """``|x - ref| / |ref|`` in float64: how far a run's latents moved from the base run's."""
    return float((x.double() - ref.double()).norm() / ref.double().norm())


# ----------------------------------------------------------------------------------------------
# the record


def non_finite(obj: Any, path: str = "") -> list[tuple[str, float]]:
    """``(path, value)`` of every NaN or infinite number in a JSON-like tree, depth first."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in non_finite(v, f"{path}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_finite(v, f"{path}[{i}]")]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [(path, obj)]
    return []


def cell(value: Any, spec: str = "") -> str:
    """A table cell: ``value`` formatted by ``spec``, ``-`` for None."""
    return "-" if value is None else format(value, spec)
