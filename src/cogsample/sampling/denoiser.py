"""The denoiser: a network wrapped by a scaling, with the reference's table snapping.

``Denoiser(x, level, context, image_latents, ofs) -> x0`` evaluates
``c_out * F(cat(c_in * x, image_latents), c_noise, context, ofs) + c_skip * x`` on ``N`` rows;
``Denoiser.prediction`` returns the raw ``F(cat(x, image_latents), t, context, ofs)`` itself,
for samplers that apply the parameterization themselves (diffusers' schedulers).
Samplers never call it directly: :mod:`cogsample.sampling.guidance` wraps it into the callable
``model(x, level)`` that every sampler takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .calls import network_call
from .scalings import Scaling
from .schedules import Schedule, Space

Tensor = torch.Tensor

__all__ = ["Denoiser", "DenoiserConfig", "Level", "Network", "to_space"]


@dataclass(frozen=True)
class Level:
    """One denoiser call: the noise level ``value`` (shape (1,)) in ``space``, the sampler step it
    belongs to, and the DDPM ``timestep`` the network should see (None when off the grid)."""

    value: Tensor
    space: Space
    step: int
    timestep: int | None = None


class Network(Protocol):
    """``net(x, t, context, ofs=None) -> (N, T, 16, H, W)``.

    ``x`` is ``(N, T, Cin, H, W)`` (I2V image latents already appended on the channel axis),
    ``t`` the per-row noise input ``(N,)``, ``context`` the text embedding ``(N, L, D)``,
    ``ofs`` CogVideoX 1.5 I2V's optional extra input, passed through unchanged.
    """

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor: ...


def to_space(value: Tensor, src: Space, dst: Space) -> Tensor:
    """Convert a noise level between alpha and sigma (identity when ``src == dst``)."""
    if src == dst:
        return value
    if src == "alpha":
        return (1 - value**2) ** 0.5 / value
    return 1 / (1 + value**2) ** 0.5


@dataclass(frozen=True)
class DenoiserConfig:
    """How network outputs become x0 predictions.

    ``table`` (the reference's ``DiscreteDenoiser``): snap every level to the nearest of the
    schedule's ``num_idx`` training levels before computing the scaling coefficients, and, with
    ``quantize_c_noise``, feed the network the index of that entry instead of c_noise. With no
    table (the reference's plain ``Denoiser``) levels are used as given.
    """

    scaling: Scaling
    table: Schedule | None = None
    num_idx: int = 1000
    quantize_c_noise: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_idx, bool) or not isinstance(self.num_idx, int) or self.num_idx < 2:
            raise ValueError(f"num_idx must be an integer >= 2, got {self.num_idx!r}")
        if self.quantize_c_noise and self.table is None:
            raise ValueError("quantize_c_noise=True needs a table (the reference's DiscreteDenoiser)")


class Denoiser:
    """A network with its scaling and table on one device. State: the table tensor."""

    def __init__(self, network: Network, config: DenoiserConfig, device: torch.device | str | None = None):
        self.network = network
        self.config = config
        self.scaling = config.scaling
        self.table: Tensor | None = None
        self.table_space: Space | None = None
        if config.table is not None:
            self.table = config.table.table(config.num_idx).to(device)
            self.table_space = config.table.space

    def snap(self, value: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest table entry (first on ties) and its index, for levels in the table's space."""
        assert self.table is not None
        idx = (value - self.table[:, None]).abs().argmin(dim=0).view(value.shape)
        return self.table[idx], idx

    def __call__(
        self,
        x: Tensor,
        level: Level,
        context: Tensor,
        image_latents: Tensor | None = None,
        ofs: Tensor | None = None,
    ) -> Tensor:
        """x0 prediction for ``N = x.shape[0]`` rows that share ``level``."""
        scaling = self.scaling
        value, idx = level.value, None
        if self.table is not None:
            value, idx = self.snap(to_space(value, level.space, self.table_space))
            value = to_space(value, self.table_space, scaling.space)
        else:
            value = to_space(value, level.space, scaling.space)
        if level.space != scaling.space:
            # x0 is the same in both coordinates; only the input moves: x_vp = alpha * x_ve.
            alpha = to_space(level.value, level.space, "alpha").view(-1, *([1] * (x.ndim - 1)))
            x = x * alpha if scaling.space == "alpha" else x / alpha
        c_skip, c_out, c_in = (c.view(-1, *([1] * (x.ndim - 1))) for c in scaling(value))
        n = x.shape[0]
        if scaling.uses_timestep:
            timestep = level.timestep
            if timestep is None:
                if idx is None:
                    raise ValueError("VideoScaling needs a DDPM timestep or a denoiser table to find one")
                c_noise = idx.to(x.dtype).expand(n)
            else:
                c_noise = x.new_ones([n]) * timestep
        else:
            c_noise = scaling.c_noise(value).expand(n)
        if self.config.quantize_c_noise:
            c_noise = self.snap(c_noise)[1]
        net_in = x * c_in
        if image_latents is not None:
            net_in = torch.cat([net_in, image_latents], dim=2)
        # the call's level for networks that keep state per call (sampling.calls)
        with network_call(alpha=to_space(level.value, level.space, "alpha"), step=level.step):
            return self.network(net_in, c_noise, context, ofs=ofs) * c_out + x * c_skip

    def prediction(
        self,
        x: Tensor,
        level: Level,
        context: Tensor,
        image_latents: Tensor | None = None,
        ofs: Tensor | None = None,
    ) -> Tensor:
        """The raw network output ``F(cat(x, image_latents), t, context, ofs)`` at the DDPM
        timestep ``t = level.timestep``: ``x`` goes in as is (c_in = 1) and no table is consulted,
        as diffusers' pipelines call the transformer. ``t`` is an integer held in float32 (float64
        for a float64 ``x``), never in ``x``'s half precision, where 999 would read 1000."""
        if self.table is not None:
            raise ValueError("the raw network prediction takes levels as given: use a DenoiserConfig without a table")
        if level.timestep is None:
            raise ValueError("the raw network prediction needs the step's DDPM timestep (the grid has none)")
        n = x.shape[0]
        t = torch.full((n,), level.timestep, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
        net_in = x if image_latents is None else torch.cat([x, image_latents], dim=2)
        with network_call(alpha=to_space(level.value, level.space, "alpha"), step=level.step):
            return self.network(net_in, t, context, ofs=ofs)
