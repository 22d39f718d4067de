"""The perturbed calls of PAG and SLG inside a diffusers transformer, through diffusers' own
layer-skip hooks (``diffusers.hooks.apply_layer_skip``).

A call carrying a :class:`~cogsample.sampling.calls.Perturbation` runs with the hooks of a
``LayerSkipConfig`` on its blocks, removed again after the call (as diffusers' guiders add and
remove them around their perturbed batch):

* ``"blocks"`` (SLG): ``skip_attention`` and ``skip_ff``: each listed ``CogVideoXBlock`` returns
  its inputs ``(hidden_states, encoder_hidden_states)``;
* ``"attention"`` (PAG): ``skip_attention_scores``: inside the listed blocks' self-attention,
  ``scaled_dot_product_attention(q, k, v)`` returns ``v`` (the attention map is the identity).

diffusers 0.42 finds the attention processor of a PAG block in its registry, which lacks
CogVideoX's processor and cogsample's Ulysses one: :func:`register_processors` adds both (their
skip output, used only by an attention skip that keeps the feed-forward, is the block's input, as
diffusers' own entries give).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..sampling.calls import Perturbation

__all__ = ["perturbed", "register_processors"]

_HOOK = "cogsample_perturbation"


def _input_passthrough(_attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, *a: Any, **k: Any):
    return hidden_states, encoder_hidden_states


@functools.cache  # once per process: the registry is global
def register_processors() -> None:
    """Add CogVideoX's attention processor and cogsample's Ulysses one to diffusers' registry."""
    from diffusers.hooks._helpers import AttentionProcessorMetadata, AttentionProcessorRegistry
    from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0

    from .ulysses import UlyssesAttention

    metadata = AttentionProcessorMetadata(skip_processor_output_fn=_input_passthrough)
    for cls in (CogVideoXAttnProcessor2_0, UlyssesAttention):
        AttentionProcessorRegistry.register(cls, metadata)


def layer_skip_config(perturbation: Perturbation, n_blocks: int) -> Any:
    """The diffusers ``LayerSkipConfig`` of ``perturbation`` on a transformer of ``n_blocks`` blocks."""
    from diffusers.hooks import LayerSkipConfig

    blocks = perturbation.kind == "blocks"
    return LayerSkipConfig(
        indices=list(perturbation.indices(n_blocks)),
        fqn="transformer_blocks",
        skip_attention=blocks,
        skip_attention_scores=not blocks,
        skip_ff=blocks,
    )


@contextmanager
def perturbed(transformer: torch.nn.Module, perturbation: Perturbation) -> Iterator[None]:
    """Within the block, ``transformer`` runs with ``perturbation``'s layer-skip hooks on it."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.layer_skip import _apply_layer_skip_hook

    config = layer_skip_config(perturbation, len(transformer.transformer_blocks))
    if perturbation.kind == "attention":
        register_processors()
    # the named (private) form: the public apply_layer_skip names every hook alike, and removing
    # ours by that name would also remove a layer skip the caller put on the transformer
    _apply_layer_skip_hook(transformer, config, name=_HOOK)
    try:
        yield
    finally:
        HookRegistry.check_if_exists_or_initialize(transformer).remove_hook(_HOOK, recurse=True)
