"""PAG's and SLG's perturbed calls (cogsample.models.layer_skip) on the trained built-in model's
transformer: diffusers' layer-skip hooks on for the one call that carries a Perturbation and gone
after it; SLG over every block is the transformer without blocks, PAG over every block is the
transformer whose attention returns V (both written out here independently of diffusers)."""

import copy

import pytest
import torch

pytest.importorskip("diffusers")

from cogsample.models.cogvideox import CogVideoXTransformerNetwork
from cogsample.models.trained import load_transformer
from cogsample.sampling.calls import Perturbation, network_call


@pytest.fixture(scope="module")
def net():
    return CogVideoXTransformerNetwork(load_transformer())


def _inputs(net):
    g = torch.Generator().manual_seed(0)
    cfg = net.transformer.config
    x = torch.randn(2, 3, cfg.in_channels, 8, 12, generator=g)
    context = torch.randn(2, cfg.max_text_seq_length, cfg.text_embed_dim, generator=g)
    return x, torch.tensor([700.0, 700.0]), context


def _call(net, perturbation=None):
    with network_call(perturb=perturbation):
        return net(*_inputs(net))


def test_a_perturbed_call_carries_the_hooks_and_leaves_none_behind(net):
    plain = _call(net)
    for kind in ("blocks", "attention"):
        assert not torch.equal(_call(net, Perturbation(kind, (1,))), plain), kind
        assert torch.equal(_call(net), plain), kind  # the hooks went with the call
    blocks = len(net.transformer.transformer_blocks)
    assert net.perturbable_blocks == blocks
    # the default layer is the middle block
    assert torch.equal(_call(net, Perturbation("blocks")), _call(net, Perturbation("blocks", (blocks // 2,))))


def test_slg_over_every_block_is_the_transformer_without_blocks(net):
    n = net.perturbable_blocks
    bare = copy.deepcopy(net.transformer)
    bare.transformer_blocks = torch.nn.ModuleList()
    want = CogVideoXTransformerNetwork(bare)(*_inputs(net))
    torch.testing.assert_close(_call(net, Perturbation("blocks", tuple(range(n)))), want, rtol=0, atol=0)


def test_pag_over_every_block_is_attention_that_returns_its_values(net, monkeypatch):
    n = net.perturbable_blocks
    got = _call(net, Perturbation("attention", tuple(range(n))))
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", lambda q, k, v, **_: v)
    torch.testing.assert_close(got, _call(net), rtol=0, atol=0)


def test_a_layer_skip_the_user_put_on_the_transformer_stays(net):
    from diffusers.hooks import LayerSkipConfig, apply_layer_skip

    own = CogVideoXTransformerNetwork(copy.deepcopy(net.transformer))
    apply_layer_skip(own.transformer, LayerSkipConfig(indices=[0], fqn="transformer_blocks"))
    skipped = _call(own)
    assert not torch.equal(skipped, _call(net))
    _call(own, Perturbation("attention", (2,)))
    _call(own, Perturbation("blocks", (1,)))
    assert torch.equal(_call(own), skipped)
