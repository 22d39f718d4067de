"""Brownian noise: unit normal draws whose coarse-grid increments are the sums of fine-grid ones,
the same whatever grid or batch asks, so an SDE sampler's step counts share one solution."""

import math

import torch

from cogsample.sampling.brownian import DEPTH, R_MAX, BrownianNoise, _snr


def _u(a: float) -> float:
    leaf = round(a * a / R_MAX * 2**DEPTH)
    return _snr(leaf)


def test_a_coarse_draw_is_the_normalised_sum_of_the_fine_draws_it_spans():
    like = torch.zeros(3, 2, 4, 5)
    fine = BrownianNoise([7, 8, 9], [0.0, 0.3, 0.6, 0.9])
    z = [fine.draw(like) for _ in range(3)]
    coarse = BrownianNoise([7, 8, 9], [0.0, 0.9])
    zc = coarse.draw(like)
    u = [_u(a) for a in (0.0, 0.3, 0.6, 0.9)]
    summed = sum(zi.double() * math.sqrt(u[i + 1] - u[i]) for i, zi in enumerate(z)) / math.sqrt(u[3] - u[0])
    torch.testing.assert_close(zc.double(), summed, rtol=0, atol=1e-5)


def test_draws_are_unit_normal_and_each_sample_its_own_path_whatever_the_batch():
    like = torch.zeros(2, 16, 32, 32)
    noise = BrownianNoise([1, 2], torch.linspace(0, 0.99, 6))
    draws = torch.stack([noise.draw(like) for _ in range(5)])
    assert abs(float(draws.mean())) < 0.02 and abs(float(draws.std()) - 1) < 0.02
    alone = BrownianNoise([2], torch.linspace(0, 0.99, 6))
    torch.testing.assert_close(alone.draw(like[:1])[0], draws[0, 1], rtol=0, atol=0)
    assert noise.draws == 5


def test_an_sde_sampler_converges_per_sample_under_the_coupling():
    """VPSDE DPM-Solver++(2M) at 40 and 80 steps lands far closer to its 160-step solution from the
    same Brownian path than with independent draws (the strong error the bench measures)."""
    from cogsample.models.builtin import CLIPS, MixtureNetwork
    from cogsample.sampling.config import SamplingConfig, build_model
    from cogsample.sampling.guidance import CFG, Conditioning
    from cogsample.sampling.noise import SeededNoise, latent_shape

    net = MixtureNetwork(CLIPS, 0.05)
    x = SeededNoise([0, 1, 2, 3]).initial(latent_shape(4, 5, 32, 48))
    cond = Conditioning(context=torch.ones(4, 1, len(CLIPS)) / len(CLIPS))

    def run(steps, brownian=True):
        cfg = SamplingConfig(sampler="vpsde_dpmpp_2m", steps=steps, guidance=CFG(1.0))
        model, grid = build_model(net, x, cond, cfg)
        noise = BrownianNoise([10, 11, 12, 13], grid.alphas()) if brownian else SeededNoise([20, 21, 22, 23])
        out = cfg.spec.fn(model, x, grid, noise)
        return out.double()

    limit = run(160)
    err = {n: float((run(n) - limit).pow(2).mean().sqrt()) for n in (40, 80)}
    independent = float((run(80, brownian=False) - limit).pow(2).mean().sqrt())
    assert err[80] < err[40] and err[80] < 0.3 * independent
