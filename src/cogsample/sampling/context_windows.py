"""Temporal context windows: sample latents longer than the network was trained on.

A latent of ``T`` frames is split along time into overlapping windows of ``F`` frames that start
every ``S = F - overlap`` frames, the last one moved back to end on frame ``T - 1``::

    starts = 0, S, 2S, ...   (while start + F < T),   then T - F

:class:`WindowedNetwork` wraps a :class:`~cogsample.sampling.denoiser.Network`: each call runs the network
on every window (``x[:, a:b]``, rotary positions counted from the window's own first frame, as for
a native-length video) and blends the outputs with weights that fall off towards a window's edges
and sum to one on every frame (:meth:`ContextWindows.weights`)::

    out[:, t] = sum_j W_j(t) * net(x[:, a_j:b_j])[:, t - a_j]

It sits below the denoiser, so guidance (both branches of every window), every sampler and every
step see one network: the blend happens on every call. The I2V image latent travels on the
channel axis and is sliced with ``x``, so only the window holding frame 0 sees the image (the
others get the zeros that follow it, the text-to-video input); ``ofs`` goes to that window alone.

:func:`repeat_noise` is FreeNoise's noise rescheduling: the noise of every frame after the first
window is a shuffled repeat of the first window's frames, so the windows start from related noise
and agree more across their seams; :class:`RepeatedNoise` does it to every draw of a noise source
(the initial latent and a stochastic sampler's fresh noise alike).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from .calls import network_call
from .denoiser import Network
from .noise import NoiseSource

Tensor = torch.Tensor

__all__ = ["ContextWindows", "RepeatedNoise", "WindowedNetwork", "repeat_map", "repeat_noise"]


@dataclass(frozen=True)
class ContextWindows:
    """Windows of ``frames`` latent frames, neighbours sharing ``overlap`` of them (``0 <= overlap
    < frames``). A latent no longer than ``frames`` is one window: the network sees it whole."""

    frames: int
    overlap: int = 0

    def __post_init__(self) -> None:
        f, o = self.frames, self.overlap
        if isinstance(f, bool) or not isinstance(f, int) or f < 1:
            raise ValueError(f"context_frames must be an integer >= 1 (latent frames per window), got {f!r}")
        if isinstance(o, bool) or not isinstance(o, int) or not 0 <= o < f:
            raise ValueError(
                f"context_overlap must be an integer in [0, context_frames - 1] = [0, {f - 1}] "
                f"(latent frames two neighbouring windows share), got {o!r}"
            )

    @property
    def stride(self) -> int:
        return self.frames - self.overlap

    def spans(self, length: int) -> list[tuple[int, int]]:
        """The windows ``[(a, b), ...]`` (frames ``a .. b-1``) over a latent of ``length`` frames."""
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be an integer >= 1, got {length!r}")
        f = self.frames
        if length <= f:
            return [(0, length)]
        starts = [*range(0, length - f, self.stride), length - f]
        return [(a, a + f) for a in starts]

    def count(self, length: int) -> int:
        """Network calls per denoiser call on a ``length``-frame latent (one per window)."""
        return len(self.spans(length))

    def ramp(self) -> Tensor:
        """A window's own weight on its frames ``i = 0 .. F-1``, float64:
        ``min(1, (i + 1) / (overlap + 1), (F - i) / (overlap + 1))``: 1 inside, falling linearly
        over the ``overlap`` frames at each edge (all ones without overlap)."""
        f, o = self.frames, self.overlap
        i = torch.arange(f, dtype=torch.float64)
        return torch.minimum((i + 1) / (o + 1), (f - i) / (o + 1)).clamp(max=1.0)

    def weights(self, length: int) -> Tensor:
        """``(windows, length)`` float64 blend weights: each window's :meth:`ramp` on its frames,
        zero elsewhere, normalized so that every frame's weights sum to one. A frame only one window
        covers gets weight exactly 1 (that window's output, bit for bit)."""
        spans = self.spans(length)
        w = torch.zeros(len(spans), length, dtype=torch.float64)
        ramp = self.ramp()
        for j, (a, b) in enumerate(spans):
            w[j, a:b] = ramp if b - a == self.frames else 1.0  # shorter: the one whole-latent window
        return w / w.sum(0, keepdim=True)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class WindowedNetwork:
    """``net(x (N, T, Cin, h, w), t, context, ofs=None) -> (N, T, Cout, h, w)`` through context
    windows (module docstring). Outputs are blended in float32 (float64 for float64 outputs) and
    returned in the network's output dtype; with one window the network's own output is returned.

    ``calls`` counts network calls; ``observe(spans, outputs)``, when given, sees every call's
    window outputs before they are blended (the bench measures seams with it)."""

    def __init__(
        self,
        network: Network,
        windows: ContextWindows,
        observe: Callable[[list[tuple[int, int]], list[Tensor]], None] | None = None,
    ):
        self.network = network
        self.windows = windows
        self.observe = observe
        self.calls = 0
        self._weights: dict[tuple[int, str], Tensor] = {}

    def _blend(self, length: int, like: Tensor) -> Tensor:
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        key = (length, f"{like.device}:{dtype}")
        if key not in self._weights:
            self._weights[key] = self.windows.weights(length).to(device=like.device, dtype=dtype)
        return self._weights[key]

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        length = x.shape[1]
        spans = self.windows.spans(length)
        if len(spans) == 1:
            self.calls += 1
            return self.network(x, t, context, ofs=ofs)
        outputs = []
        for j, (a, b) in enumerate(spans):
            self.calls += 1
            # the image latent (frame 0) and ofs condition the window that holds frame 0; a network
            # that keeps state per call keeps one per window (sampling.calls)
            with network_call(window=j):
                outputs.append(self.network(x[:, a:b], t, context, ofs=ofs if a == 0 else None))
        if self.observe is not None:
            self.observe(spans, outputs)
        first = outputs[0]
        w = self._blend(length, first)
        out = first.new_zeros((first.shape[0], length, *first.shape[2:]), dtype=w.dtype)
        view = (1, -1) + (1,) * (first.ndim - 2)
        for j, ((a, b), o) in enumerate(zip(spans, outputs, strict=True)):
            out[:, a:b] += w[j, a:b].view(view) * o.to(w.dtype)
        return out.to(first.dtype)


def repeat_map(length: int, windows: ContextWindows, generator: torch.Generator) -> Tensor:
    """FreeNoise's frame map ``(length,)`` int64: frame ``t`` takes the noise of frame ``m[t]``.
    The first window is itself (``m[t] = t`` for ``t < F``); after it, block by block of ``S``
    frames (``S = frames - overlap``), ``m`` is the first window's frames in an order drawn from
    ``generator`` (``randperm(F)[:S]``, one draw per block, on the CPU: the same on every machine)."""
    f = windows.frames
    m = list(range(min(f, length)))
    for a in range(f, length, windows.stride):
        n = min(windows.stride, length - a)
        m += torch.randperm(f, generator=generator)[:n].tolist()
    return torch.tensor(m, dtype=torch.int64)


def repeat_noise(x: Tensor, windows: ContextWindows, generator: torch.Generator) -> Tensor:
    """FreeNoise-style initial noise: ``x (B, T, C, h, w)`` with frame ``t`` replaced by frame
    ``m[t]`` of :func:`repeat_map` (a latent of at most ``F`` frames comes back unchanged).
    Returns a new tensor."""
    return x.index_select(1, repeat_map(x.shape[1], windows, generator).to(x.device))


class RepeatedNoise(NoiseSource):
    """A noise source whose every tensor (the initial latent and each in-loop draw) is
    :func:`repeat_noise`'d with one frame map per source, drawn from ``generator`` at the first
    use: with a stochastic sampler the later windows' fresh noise is also the first window's,
    shuffled, at every step (from zero terminal SNR the SDE samplers' first step keeps none of
    the initial noise, which reaches the result only through the network's first prediction, and
    every later step draws fresh noise). ``discard`` passes through."""

    def __init__(self, source: NoiseSource, windows: ContextWindows, generator: torch.Generator):
        self.source = source
        self.windows = windows
        self.generator = generator
        self._map: Tensor | None = None

    def repeat(self, x: Tensor) -> Tensor:
        """``x (B, T, ...)`` through this source's frame map (drawn at the first use)."""
        if self._map is None or self._map.numel() != x.shape[1]:
            self._map = repeat_map(x.shape[1], self.windows, self.generator)
        if self._map.device != x.device:
            self._map = self._map.to(x.device)
        return x.index_select(1, self._map)

    def initial(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        return self.repeat(self.source.initial(shape, dtype=dtype, device=device))

    def draw(self, like: Tensor) -> Tensor:
        return self.repeat(self.source.draw(like))

    def discard(self, like: Tensor) -> None:
        self.source.discard(like)
