"""What the network call under way belongs to, for networks that keep state from call to call.

A step cache inside a transformer (diffusers' hooks, :mod:`cogsample.models.hook_caches`) must
not mix calls that see different inputs: the context windows of one step see different frames.
The layers that know (the denoiser knows the noise level, :class:`~cogsample.sampling.context_windows.WindowedNetwork`
the window) say it with :func:`network_call` around their network call; the network reads
:func:`current_call`. A context variable, so the ``Network`` protocol ``net(x, t, context, ofs)``
stays as it is and threads never see each other's calls.

A guidance rule that asks the network for a worse version of itself (PAG, SLG:
:mod:`cogsample.sampling.guiders`) says so with a :class:`Perturbation` on the call; a network
that can perturb itself (a transformer's, :mod:`cogsample.models.layer_skip`) reads it.

The level is kept as the VP signal scale ``alpha = sqrt(alpha_bar)`` of the call (``x_t = alpha x0
+ sigma eps``, ``alpha^2 + sigma^2 = 1``), a tensor read only by the networks that need it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

__all__ = ["PERTURBATION_KINDS", "NetworkCall", "Perturbation", "current_call", "network_call"]

PERTURBATION_KINDS = ("attention", "blocks")


@dataclass(frozen=True)
class Perturbation:
    """A network call made worse on purpose: ``kind`` ``"attention"`` (PAG: the self-attention map
    of blocks ``layers`` replaced by the identity, ``softmax(QK^T/sqrt(d)) V -> V``) or ``"blocks"``
    (SLG, STG-R: blocks ``layers`` skipped, their input passed on); ``layers``: block indices,
    ``()`` the middle block ``n // 2`` of an ``n``-block network."""

    kind: str
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in PERTURBATION_KINDS:
            raise ValueError(f"perturbation kind must be one of {', '.join(PERTURBATION_KINDS)}, got {self.kind!r}")
        layers = tuple(self.layers)
        indices = all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers)
        if not indices or len(set(layers)) != len(layers):
            raise ValueError(f"perturbation layers must be distinct block indices >= 0, got {self.layers!r}")
        object.__setattr__(self, "layers", layers)

    def indices(self, n_blocks: int) -> tuple[int, ...]:
        """The block indices of an ``n_blocks``-block network (``ValueError`` for one it lacks)."""
        layers = self.layers or (n_blocks // 2,)
        bad = [i for i in layers if i >= n_blocks]
        if bad:
            raise ValueError(
                f"layers {'+'.join(map(str, bad))} are not blocks of this network: it has {n_blocks} "
                f"(indices 0 to {n_blocks - 1})"
            )
        return layers


@dataclass(frozen=True)
class NetworkCall:
    """``window``: the context window's index (0 without windows); ``alpha``: the VP signal scale
    of the call's noise level (None where unknown); ``step``: the sampler step (None where unknown);
    ``perturb``: the :class:`Perturbation` the network applies to this call (None: none)."""

    window: int = 0
    alpha: torch.Tensor | None = None
    step: int | None = None
    perturb: Perturbation | None = None


_NONE = NetworkCall()
_CALL: ContextVar[NetworkCall | None] = ContextVar("cogsample_network_call", default=None)


def current_call() -> NetworkCall:
    """The call under way (all defaults outside any :func:`network_call`)."""
    return _CALL.get() or _NONE


@contextmanager
def network_call(**changes: object) -> Iterator[NetworkCall]:
    """Within the block, :func:`current_call` is the enclosing call with ``changes`` applied."""
    call = dataclasses.replace(current_call(), **changes)  # type: ignore[arg-type]
    token = _CALL.set(call)
    try:
        yield call
    finally:
        _CALL.reset(token)
