import pytest
import torch

from cogsample import CallableNetwork, Conditioning, SamplingConfig, SeededNoise, latent_shape, sample


def test_callable_network_runs_in_every_path_and_checks_shapes():
    net = CallableNetwork(lambda x, t, context, ofs=None: torch.tanh(x[:, :, :16]) * 0.5)
    noise = SeededNoise.from_seed(0, batch=1)
    x = noise.initial(latent_shape(1, 5, 32, 32))
    out = sample(net, x, Conditioning(torch.randn(1, 4, 8)), SamplingConfig(steps=3), noise=noise)
    assert out.shape == x.shape and torch.isfinite(out).all()

    bad = CallableNetwork(lambda x, t, context, ofs=None: x[:, :, :8])
    with pytest.raises(ValueError, match=r"network returned \(2, 2, 8, 4, 4\); the protocol needs"):
        bad(torch.zeros(2, 2, 16, 4, 4), torch.zeros(2), torch.zeros(2, 1, 4))
    with pytest.raises(TypeError, match="must be callable"):
        CallableNetwork(3)
