"""Latent shapes and noise sources.

A noise source gives the initial latent and every draw a stochastic sampler makes. Samplers call
``draw(like)`` for each draw they use and ``discard(like)`` where the reference draws a value and
throws it away, so a source can reproduce the reference's random stream exactly (``GlobalNoise``,
``ReplayNoise``, and ``DiffusersNoise`` for diffusers' pipelines) or skip the wasted work
(``SeededNoise``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor

__all__ = [
    "LATENT_CHANNELS",
    "DiffusersNoise",
    "GlobalNoise",
    "NoiseSource",
    "ReplayNoise",
    "SeededNoise",
    "latent_shape",
]

#: CogVideoX's VAE: 16 latent channels, 8x spatial and 4x temporal compression.
LATENT_CHANNELS = 16
SPATIAL_COMPRESSION = 8
TEMPORAL_COMPRESSION = 4
#: Height and width must be multiples of this: 8x VAE times the transformer's 2x2 patches.
SIZE_MULTIPLE = 16


def latent_shape(
    batch: int, frames: int, height: int, width: int, channels: int = LATENT_CHANNELS
) -> tuple[int, int, int, int, int]:
    """``(B, T, C, H/8, W/8)`` with ``T = (frames - 1) / 4 + 1``, frames before channels as in SAT.

    ``frames`` must be ``4k + 1`` (49 -> 13 latent frames) and height/width multiples of 16.
    """
    for name, v, lo in (("batch", batch, 1), ("frames", frames, 1), ("height", height, 16), ("width", width, 16)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if (frames - 1) % TEMPORAL_COMPRESSION:
        lo, hi = frames - (frames - 1) % 4, frames - (frames - 1) % 4 + 4
        raise ValueError(
            f"frames must be of the form 4k+1 (the VAE compresses time 4x), got {frames}; nearest: {lo} or {hi}"
        )
    for name, v in (("height", height), ("width", width)):
        if v % SIZE_MULTIPLE:
            raise ValueError(
                f"{name} must be a multiple of {SIZE_MULTIPLE} (8x VAE, 2x2 patches), got {v}; "
                f"nearest: {v - v % 16} or {v - v % 16 + 16}"
            )
    return (
        batch,
        (frames - 1) // TEMPORAL_COMPRESSION + 1,
        channels,
        height // SPATIAL_COMPRESSION,
        width // SPATIAL_COMPRESSION,
    )


class NoiseSource:
    """Standard normal draws for the initial latent and for stochastic samplers."""

    def initial(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        raise NotImplementedError  # pragma: no cover - interface

    def draw(self, like: Tensor) -> Tensor:
        raise NotImplementedError  # pragma: no cover - interface

    def discard(self, like: Tensor) -> None:
        """A draw the reference makes and throws away."""


class SeededNoise(NoiseSource):
    """One ``torch.Generator`` per sample, so sample ``k`` is the same whatever the batch around it.

    ``seeds[k]`` seeds sample ``k`` (``SeededNoise.from_seed(s, B)`` uses ``s, s+1, ...``). Draws
    are made on ``generator_device`` (CPU by default, so a seed gives the same latent on every
    machine) and moved to the latent's device. Discarded draws are skipped.
    """

    def __init__(self, seeds: Sequence[int], generator_device: torch.device | str = "cpu"):
        if not seeds:
            raise ValueError("seeds must name at least one seed")
        self.seeds = [int(s) for s in seeds]
        self.generator_device = torch.device(generator_device)
        self.generators = [torch.Generator(self.generator_device).manual_seed(s) for s in self.seeds]

    @classmethod
    def from_seed(cls, seed: int, batch: int, generator_device: torch.device | str = "cpu") -> SeededNoise:
        return cls([seed + k for k in range(batch)], generator_device)

    def _draw(self, shape: Sequence[int], dtype: torch.dtype, device) -> Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for a batch of {shape[0]} requested from {len(self.generators)} seeds")
        rows = [
            torch.randn(tuple(shape[1:]), generator=g, dtype=dtype, device=self.generator_device)
            for g in self.generators
        ]
        return torch.stack(rows).to(device)

    def initial(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        return self._draw(shape, dtype, device)

    def draw(self, like: Tensor) -> Tensor:
        return self._draw(like.shape, like.dtype, like.device)


class GlobalNoise(NoiseSource):
    """torch's global generators, discarded draws included: the reference's stream.

    As SAT's engine does, the initial latent is drawn in float32 on the CPU generator and moved to
    the device, and in-loop draws are ``randn_like`` on the latent's device. After
    ``torch.manual_seed(s)`` the draws equal the reference's for the same seed, device and shapes
    (the whole batch is drawn at once, so a sample depends on the batch size).
    """

    def initial(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        return torch.randn(tuple(shape)).to(torch.float32).to(device=device, dtype=dtype)

    def draw(self, like: Tensor) -> Tensor:
        return torch.randn_like(like)

    def discard(self, like: Tensor) -> None:
        torch.randn_like(like)


class ReplayNoise(NoiseSource):
    """Feeds recorded draws back in the order they were made (golden replays).

    ``draws`` is the single sequence of in-loop draws; each request must match its shape.
    """

    def __init__(self, draws: Sequence[Tensor], initial: Tensor | None = None):
        self.draws = list(draws)
        self.position = 0
        self._initial = initial

    def initial(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        if self._initial is None or tuple(self._initial.shape) != tuple(shape):
            raise ValueError(f"no recorded initial latent of shape {tuple(shape)}")
        return self._initial.to(device=device, dtype=dtype)

    def draw(self, like: Tensor) -> Tensor:
        if self.position >= len(self.draws):
            raise ValueError(f"replay ran out of recorded draws after {len(self.draws)}")
        d = self.draws[self.position]
        if tuple(d.shape) != tuple(like.shape):
            raise ValueError(
                f"recorded draw {self.position} has shape {tuple(d.shape)}, the sampler asked for {tuple(like.shape)}"
            )
        self.position += 1
        return d.to(device=like.device, dtype=like.dtype)

    def discard(self, like: Tensor) -> None:
        self.draw(like)

    @property
    def exhausted(self) -> bool:
        return self.position == len(self.draws)


class DiffusersNoise(NoiseSource):
    """diffusers' ``randn_tensor`` on the pipeline's ``generator``: its initial latent and every
    in-loop draw, so that a sampler consumes the generator exactly as the pipeline does.

    ``generator``: one ``torch.Generator`` (the whole batch in one draw), a list of one per
    sample (each sample its own draw of shape ``(1, ...)``, concatenated), or None (torch's
    global generator). Draws are made in the requested dtype on the generator's device when it
    is a CPU generator (else on the target device) and moved to the target device. Discarded
    draws are drawn: diffusers' DPM scheduler draws noise it does not use. The generators are
    the caller's and advance as they are used.
    """

    def __init__(self, generator: torch.Generator | Sequence[torch.Generator] | None = None):
        if isinstance(generator, Sequence):
            generator = list(generator)
            if not generator:
                raise ValueError("generator must be a torch.Generator, a non-empty list of them, or None")
            if len(generator) == 1:
                generator = generator[0]
        self.generator = generator

    @classmethod
    def from_seed(cls, seed: int, device: torch.device | str = "cpu") -> DiffusersNoise:
        """``torch.Generator(device).manual_seed(seed)``, as a diffusers user would pass it."""
        return cls(torch.Generator(device).manual_seed(seed))

    def _randn(self, shape: Sequence[int], dtype: torch.dtype, device) -> Tensor:
        device = torch.device(device) if device is not None else torch.device("cpu")
        g = self.generator
        rand_device = device
        if g is not None:
            gen_type = (g[0] if isinstance(g, list) else g).device.type
            if gen_type != device.type:
                if gen_type != "cpu":
                    raise ValueError(f"cannot draw a {device.type} tensor from a {gen_type} generator")
                rand_device = torch.device("cpu")
        shape = tuple(shape)
        if isinstance(g, list):
            if len(g) != shape[0]:
                raise ValueError(f"a list of {len(g)} generators for a batch of {shape[0]}: give one per sample")
            rows = [torch.randn((1, *shape[1:]), generator=gi, device=rand_device, dtype=dtype) for gi in g]
            return torch.cat(rows, dim=0).to(device)
        return torch.randn(shape, generator=g, device=rand_device, dtype=dtype).to(device)

    def initial(self, shape: Sequence[int], dtype: torch.dtype = torch.float32, device=None) -> Tensor:
        return self._randn(shape, dtype, device)

    def draw(self, like: Tensor) -> Tensor:
        return self._randn(like.shape, like.dtype, like.device)

    def discard(self, like: Tensor) -> None:
        self._randn(like.shape, like.dtype, like.device)
