"""First-block caching for diffusers' ``CogVideoXTransformer3DModel`` (First-Block-Cache style).

Block 0 always runs; a reused forward skips blocks ``1..N-1`` and adds their residual from the
last computed forward (last block's output minus block 0's output, for the video and the text
stream both) to block 0's fresh output. Everything outside the blocks (embeddings, final norm,
projection) always runs. The indicator, with ``r`` = block 0's hidden-state output minus its input::

    d_k = |r_k - r_{k-1}|_1 / |r_{k-1}|_1

summed and thresholded by the reuse rule every step cache shares (:mod:`cogsample.sampling.cache`); a
forward whose text tokens differ from the previous one's never reuses. With ``reduce`` (sequence
parallelism: each rank holds a shard of the tokens) the indicator's sums are all-reduced first, so
every rank takes the full sequence's decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from ..sampling.cache import CacheConfig, _Decider, _l1, _ratio, _Ref
from ..sampling.denoiser import Network

Tensor = torch.Tensor

__all__ = ["FirstBlockCache", "FirstBlockCachedNetwork"]


class _CachedBlocks(nn.Module):
    """Stands in for the transformer's whole block list as its only entry: diffusers' loop
    ``for block in self.transformer_blocks`` then calls this once per forward, which runs block 0
    and then either the other blocks or the cached residual. The original ModuleList stays
    registered (as ``blocks``) so that ``.to()``, ``.eval()`` and hooks still reach every block."""

    def __init__(self, blocks: nn.ModuleList, cache: FirstBlockCache):
        super().__init__()
        self.blocks = blocks
        self._cache = [cache]  # in a list: a plain reference, not a registered submodule

    def forward(
        self,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        temb: Tensor,
        image_rotary_emb: tuple[Tensor, Tensor] | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> tuple[Tensor, Tensor]:
        return self._cache[0]._forward(
            self.blocks, hidden_states, encoder_hidden_states, temb, image_rotary_emb, attention_kwargs
        )


class FirstBlockCache(_Decider):
    """First-block caching for diffusers' ``CogVideoXTransformer3DModel``.

    Each forward runs block 0 and measures ``r = block0(h) - h``; while the accumulated
    ``sum_k |r_k - r_{k-1}|_1 / |r_{k-1}|_1`` stays under ``config.threshold`` (module docstring)
    blocks ``1..N-1`` are skipped and their last computed residual is added to block 0's output,
    for hidden and text states both. Counters ``calls``, ``computed``, ``reused`` count forwards.

    ``reduce``: applied to the stacked indicator statistics ``[|r_k - r_{k-1}|_1, |r_{k-1}|_1,
    max |text_k - text_{k-1}|]`` before they are read, e.g. an all-reduce SUM over sequence-parallel
    ranks that each hold a shard of the tokens: the L1 sums then add up to the full sequence's, and
    the summed text maxima are 0 exactly when every rank's are, so all ranks decide alike.

    ``attach(transformer)`` replaces ``transformer.transformer_blocks`` with a one-entry
    ModuleList around the original; ``detach()`` puts the original object back. While attached
    the state-dict keys gain a level (``transformer_blocks.0.blocks.i``): detach before saving
    or loading weights. ``config.kind`` is not read here (see :func:`~cogsample.sampling.cache.apply_cache`).
    """

    def __init__(self, config: CacheConfig, reduce: Callable[[Tensor], Tensor] | None = None):
        super().__init__(config)
        if reduce is not None and not callable(reduce):
            raise TypeError(f"reduce must be callable as reduce(stats) -> stats, got {type(reduce).__name__}")
        self.reduce = reduce
        self.transformer: nn.Module | None = None
        self._original: nn.ModuleList | None = None
        self._wrapper: nn.ModuleList | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the cached residuals and the counters: the next forward computes (a new video)."""
        self.reset_counts()
        self._forget()

    def _forget(self) -> None:
        self._key: tuple | None = None
        self._rotary = _Ref(None)
        self._attention_kwargs: dict[str, Any] | None = None
        self._res_h: Tensor | None = None  # blocks 1..N-1's residual, video stream
        self._res_e: Tensor | None = None  # and text stream
        self._r: Tensor | None = None  # the previous forward's block-0 residual
        self._r_norm: Tensor | None = None
        self._text: Tensor | None = None  # the previous forward's text tokens entering block 0

    @property
    def attached(self) -> bool:
        return self.transformer is not None

    def attach(self, transformer: nn.Module) -> FirstBlockCache:
        """Wrap ``transformer.transformer_blocks`` (>= 2 blocks) and reset; returns self."""
        if self.transformer is not None:
            raise RuntimeError("this FirstBlockCache is already attached to a transformer: detach() it first")
        blocks = getattr(transformer, "transformer_blocks", None)
        if not isinstance(blocks, nn.ModuleList):
            raise TypeError(
                "first-block caching needs a diffusers CogVideoXTransformer3DModel (a module with a "
                f"transformer_blocks ModuleList), got {type(transformer).__name__}"
            )
        if any(isinstance(b, _CachedBlocks) for b in blocks):
            raise RuntimeError("this transformer already has a first-block cache attached: detach that one first")
        if len(blocks) < 2:
            raise ValueError(
                f"first-block caching needs a transformer with at least 2 blocks (it skips blocks 1..N-1), "
                f"got {len(blocks)}"
            )
        self._original = blocks
        self._wrapper = nn.ModuleList([_CachedBlocks(blocks, self)])
        transformer.transformer_blocks = self._wrapper
        self.transformer = transformer
        self.reset()
        return self

    def detach(self) -> nn.Module:
        """Put the original ``transformer_blocks`` object back and drop the cached tensors (the
        counters stay readable until the next attach or reset); returns the transformer."""
        transformer = self.transformer
        if transformer is None:
            raise RuntimeError("this FirstBlockCache is not attached")
        if transformer.transformer_blocks is not self._wrapper:
            raise RuntimeError("transformer_blocks was replaced after attach(): cannot restore it safely")
        transformer.transformer_blocks = self._original
        self.transformer = self._original = self._wrapper = None
        self._forget()
        return transformer

    def _forward(
        self,
        blocks: nn.ModuleList,
        hidden: Tensor,
        text: Tensor,
        temb: Tensor,
        rotary: tuple[Tensor, Tensor] | None,
        attention_kwargs: dict[str, Any] | None,
    ) -> tuple[Tensor, Tensor]:
        self.calls += 1
        kwargs = dict(temb=temb, image_rotary_emb=rotary, attention_kwargs=attention_kwargs)
        h, e = blocks[0](hidden_states=hidden, encoder_hidden_states=text, **kwargs)
        r = h - hidden
        key = (tuple(hidden.shape), tuple(text.shape), tuple(temb.shape), hidden.dtype, hidden.device)
        comparable = (
            self._res_h is not None
            and key == self._key
            and self._rotary.matches(rotary)
            and attention_kwargs == self._attention_kwargs
        )
        r_norm = _l1(r)
        reuse = False
        if self.may_reuse(comparable):
            assert self._r is not None and self._text is not None
            text_diff = torch.linalg.vector_norm(text - self._text, math.inf).float()
            stats = torch.stack([_l1(r - self._r), self._r_norm, text_diff])
            if self.reduce is not None:
                stats = self.reduce(stats)
            # The one device -> host read per forward (inherent: the skip is a Python branch).
            dr, nr, dtext = stats.tolist()
            # other text tokens (another prompt) never reuse, whatever block 0 says
            reuse = self.decide(_ratio(dr, nr)) and dtext == 0
        if reuse:
            assert self._res_h is not None and self._res_e is not None
            out = h + self._res_h, e + self._res_e
        else:
            h1, e1 = h, e
            for block in blocks[1:]:
                h, e = block(hidden_states=h, encoder_hidden_states=e, **kwargs)
            out = h, e
            # state changes only once the blocks have returned: a forward that raises leaves none
            self._res_h, self._res_e = h - h1, e - e1
            self._key, self._rotary, self._attention_kwargs = key, _Ref(rotary), attention_kwargs
        self._r, self._r_norm, self._text = r, r_norm, text.detach().clone()
        self.record(reuse)
        return out


class TransformerNetwork(Protocol):
    """A network that runs an ``nn.Module`` transformer with ``transformer_blocks`` (as
    :class:`~cogsample.models.cogvideox.CogVideoXTransformerNetwork`, which imports this module)."""

    transformer: nn.Module

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor: ...


class FirstBlockCachedNetwork:
    """A :class:`~cogsample.models.cogvideox.CogVideoXTransformerNetwork` whose transformer has a
    :class:`FirstBlockCache` attached (with ``reduce``, see there): called like the network;
    ``calls``, ``computed``, ``reused`` and ``reset()`` are the cache's (the counters survive
    ``detach()``); ``detach()`` removes the cache and returns the plain network."""

    def __init__(
        self,
        network: TransformerNetwork,
        config: CacheConfig,
        reduce: Callable[[Tensor], Tensor] | None = None,
    ):
        self.network = network
        self.cache = FirstBlockCache(config, reduce).attach(network.transformer)

    def __call__(self, x: Tensor, t: Tensor, context: Tensor, ofs: Tensor | None = None) -> Tensor:
        if not self.cache.attached:
            raise RuntimeError("this cached network was detached: call the network detach() returned")
        return self.network(x, t, context, ofs=ofs)

    @property
    def calls(self) -> int:
        return self.cache.calls

    @property
    def computed(self) -> int:
        return self.cache.computed

    @property
    def reused(self) -> int:
        return self.cache.reused

    def reset(self) -> None:
        self.cache.reset()

    def detach(self) -> Network:
        """Remove the cache from the transformer (once; later calls only return the network)."""
        if self.cache.attached:
            self.cache.detach()
        return self.network
