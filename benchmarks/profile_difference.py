"""How far apart the ``sat`` and ``diffusers`` profiles land on the goldens' toy network.

Same network, initial latent, conditioning (zero uncond for both, so only the sampling differs)
and in-loop draws (one generator stream per run, drawn in the same order); prints the relative
L2 difference ``|sat - diffusers| / |sat|`` per sampler pair and step count.

    python benchmarks/profile_difference.py
"""

from __future__ import annotations

import warnings

import torch

from cogsample import Conditioning, sample
from cogsample.reference.golden import ToyNetwork
from cogsample.reference.profiles import COGVIDEOX_5B_SCHEDULER, diffusers_sampling, sat_sampling
from cogsample.sampling.noise import DiffusersNoise


def main() -> None:
    net = ToyNetwork(a_t=0.001, a_ctx=0.1, a_img=0.05, a_ofs=0.01)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 8, 8, generator=g)
    cond = Conditioning(torch.randn(2, 4, 16, generator=g), uncond_context=torch.zeros(2, 4, 16))
    print(f"{'pair':34s} {'steps':>5s} {'rel L2':>9s}")
    for sat_name, dif_name in (("vpsde_dpmpp_2m", "dpm"), ("video_ddim", "ddim")):
        for steps in (10, 20, 25, 30, 50):
            sat_cfg = sat_sampling(steps=steps, sampler=sat_name)
            dif_cfg = diffusers_sampling(COGVIDEOX_5B_SCHEDULER, steps=steps, scheduler=dif_name)
            a = sample(net, x, cond, sat_cfg, noise=DiffusersNoise(torch.Generator().manual_seed(1)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                b = sample(net, x, cond, dif_cfg, noise=DiffusersNoise(torch.Generator().manual_seed(1)))
            rel = float((a - b).norm() / a.norm())
            print(f"{sat_name + ' vs diffusers_' + dif_name:34s} {steps:5d} {rel:9.2%}")


if __name__ == "__main__":
    main()
