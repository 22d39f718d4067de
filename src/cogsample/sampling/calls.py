"""What the network call under way belongs to, for networks that keep state from call to call.

A step cache inside a transformer (diffusers' hooks, :mod:`cogsample.models.hook_caches`) must
not mix calls that see different inputs: the context windows of one step see different frames.
The layers that know (the denoiser knows the noise level, :class:`~cogsample.sampling.context_windows.WindowedNetwork`
the window) say it with :func:`network_call` around their network call; the network reads
:func:`current_call`. A context variable, so the ``Network`` protocol ``net(x, t, context, ofs)``
stays as it is and threads never see each other's calls.

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

__all__ = ["NetworkCall", "current_call", "network_call"]


@dataclass(frozen=True)
class NetworkCall:
    """``window``: the context window's index (0 without windows); ``alpha``: the VP signal scale
    of the call's noise level (None where unknown); ``step``: the sampler step (None where unknown)."""

    window: int = 0
    alpha: torch.Tensor | None = None
    step: int | None = None


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
