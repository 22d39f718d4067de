"""Ulysses sequence parallel for one diffusers ``CogVideoXTransformer3DModel`` instance.

The transformer's video tokens (``S = T' h' w'`` after the patch embedding) are cut into ``U``
contiguous shards, one per rank of the sequence group (uneven where ``U`` does not divide ``S``);
the text tokens (226, or any count) stay whole on every rank. Everything in a block but attention
works token by token, so it runs on the shard. Attention (:class:`UlyssesAttention`, installed on
this instance's ``attn1`` modules only) computes q, k, v for the text and its video shard, applies
the rotary embedding to the shard's rows of the table, and exchanges by all-to-all
``(H heads, S/U tokens) -> (H/U heads, S tokens)``; each rank then attends over the whole
sequence ``[text; video]`` for its ``H/U`` heads (the text's q, k, v cut to the same heads), and
the inverse all-to-all brings the video back to ``(H, S/U)``, while the text's heads are
all-gathered, so every rank keeps the same text stream. The shards are gathered again before the
final norm. Needs ``heads % U == 0``; memory: each rank holds the whole transformer, its
activations are ``1/U`` of the video tokens' (attention's q, k, v: ``1/U`` of the heads).

Nothing of diffusers is patched process-wide: two hooks (on ``patch_embed`` and ``norm_final``)
and the processors belong to the one instance and :meth:`SequenceParallel.detach` removes them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..sampling.parallel import all_gather_heads, gather_sequence, heads_to_sequence, sequence_to_heads, shard_sizes

Tensor = torch.Tensor

__all__ = ["SequenceParallel", "UlyssesAttention", "apply_rotary"]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """CogVideoX's rotary embedding on ``x (B, H, S, d)``: pairs ``(x_2i, x_2i+1)`` rotated,
    ``x cos + rot(x) sin`` with ``rot(x)_{2i} = -x_{2i+1}``, ``rot(x)_{2i+1} = x_{2i}``,
    computed in float32 and cast back (diffusers' ``apply_rotary_emb``, real form)."""
    from diffusers.models.embeddings import apply_rotary_emb

    return apply_rotary_emb(x, (cos, sin))


class SequenceParallel:
    """Shards a transformer's video tokens over ``group`` (``size`` ranks, this one ``rank``).

    ``attach(transformer)`` installs the hooks and :class:`UlyssesAttention` processors;
    ``detach()`` restores the processors it replaced. State between the hooks of one forward: the
    shard sizes (set by the patch-embedding hook)."""

    def __init__(self, group: Any, rank: int, size: int):
        if size < 2 or not 0 <= rank < size:
            raise ValueError(f"sequence parallel needs >= 2 ranks and 0 <= rank < size, got rank {rank} of {size}")
        self.group = group
        self.rank = rank
        self.size = size
        self.transformer: nn.Module | None = None
        self._handles: list[Any] = []
        self._processors: list[tuple[nn.Module, Any]] = []
        self.sizes: list[int] = []

    @property
    def offset(self) -> int:
        """This rank's first video token."""
        return sum(self.sizes[: self.rank])

    def attach(self, transformer: nn.Module) -> SequenceParallel:
        if self.transformer is not None:
            raise RuntimeError("this SequenceParallel is already attached: detach() it first")
        heads = int(transformer.config.num_attention_heads)
        if heads % self.size:
            raise ValueError(
                f"ulysses={self.size} splits the attention heads over the ranks: the transformer's {heads} heads "
                f"must be a multiple of it (try ulysses = a divisor of {heads})"
            )
        blocks = [m for m in transformer.modules() if hasattr(m, "attn1") and hasattr(m, "norm1")]
        if not blocks:
            raise TypeError(f"expected a CogVideoXTransformer3DModel, got {type(transformer).__name__}")
        for block in blocks:
            attn = block.attn1
            if getattr(attn, "to_q", None) is None:
                raise ValueError("sequence parallel needs unfused q/k/v projections (unfuse_qkv_projections())")
            self._processors.append((attn, attn.processor))
            attn.set_processor(UlyssesAttention(self))
        self._handles = [
            transformer.patch_embed.register_forward_hook(self._shard),
            transformer.norm_final.register_forward_pre_hook(self._gather),
        ]
        self.transformer = transformer
        return self

    def all_reduce(self, t: Tensor) -> Tensor:
        """``t`` summed over the group (a copy; e.g. a step cache's indicator over the shards)."""
        t = t.clone()
        torch.distributed.all_reduce(t, group=self.group)
        return t

    def detach(self) -> nn.Module:
        transformer = self.transformer
        if transformer is None:
            raise RuntimeError("this SequenceParallel is not attached")
        for h in self._handles:
            h.remove()
        for attn, processor in self._processors:
            attn.set_processor(processor)
        self._handles, self._processors, self.transformer = [], [], None
        return transformer

    def _shard(self, _module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        # patch_embed(text_embeds, image_embeds) -> [text; video] tokens: keep the text, cut the video
        text_len = args[0].shape[1]
        video = output.shape[1] - text_len
        if video < self.size:
            raise ValueError(f"ulysses={self.size}: the latent has only {video} video tokens, fewer than the ranks")
        self.sizes = shard_sizes(video, self.size)
        start, n = text_len + self.offset, self.sizes[self.rank]
        return torch.cat([output[:, :text_len], output[:, start : start + n]], dim=1)

    def _gather(self, _module: nn.Module, args: tuple) -> tuple:
        (hidden,) = args
        n = self.sizes[self.rank]
        if hidden.shape[1] == n:
            return (gather_sequence(hidden, self.sizes, self.group),)
        # a transformer that normalises [text; video] together (as diffusers once did for rotary models)
        text = hidden[:, : hidden.shape[1] - n]
        return (torch.cat([text, gather_sequence(hidden[:, text.shape[1] :], self.sizes, self.group)], dim=1),)


class UlyssesAttention:
    """Attention processor for a ``CogVideoXBlock``'s ``attn1`` under :class:`SequenceParallel`:
    ``hidden_states`` is this rank's video shard ``(B, S_r, D)``, ``encoder_hidden_states`` the
    whole text ``(B, L, D)``; returns ``(video shard, text)`` as diffusers' processor does."""

    def __init__(self, parallel: SequenceParallel):
        self.parallel = parallel

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        attention_mask: Tensor | None = None,
        image_rotary_emb: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        if attention_mask is not None:
            raise ValueError("sequence-parallel attention takes no attention mask (CogVideoX passes none)")
        sp = self.parallel
        text_len, b = encoder_hidden_states.shape[1], hidden_states.shape[0]
        joint = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        heads = attn.heads
        qkv = []
        for proj, norm in ((attn.to_q, attn.norm_q), (attn.to_k, attn.norm_k), (attn.to_v, None)):
            t = proj(joint)
            t = t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2)
            qkv.append(norm(t) if norm is not None else t)
        q, k, v = qkv
        if image_rotary_emb is not None:
            start, n = sp.offset, sp.sizes[sp.rank]
            cos, sin = (e[start : start + n] for e in image_rotary_emb)
            q = torch.cat([q[:, :, :text_len], apply_rotary(q[:, :, text_len:], cos, sin)], dim=2)
            if not attn.is_cross_attention:
                k = torch.cat([k[:, :, :text_len], apply_rotary(k[:, :, text_len:], cos, sin)], dim=2)
        # (3, B, H, L + S_r, d): one exchange for q, k and v
        stacked = torch.stack([q, k, v])
        h = heads // sp.size
        mine = slice(sp.rank * h, (sp.rank + 1) * h)
        text = stacked[:, :, mine, :text_len]
        video = sequence_to_heads(stacked[:, :, :, text_len:].contiguous(), sp.sizes, sp.group)
        q, k, v = torch.cat([text, video], dim=3).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)  # (B, H/U, L + S, d)
        video_out = heads_to_sequence(out[:, :, text_len:].contiguous(), sp.sizes, sp.group)
        text_out = all_gather_heads(out[:, :, :text_len], sp.group)
        out = torch.cat([text_out, video_out], dim=2).transpose(1, 2).reshape(b, -1, heads * out.shape[-1])
        out = attn.to_out[1](attn.to_out[0](out))
        return out[:, text_len:], out[:, :text_len]
