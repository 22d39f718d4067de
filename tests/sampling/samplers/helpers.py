"""What the sampler tests share: a small latent shape, the schedules, and running any registered sampler
on exact Gaussian data (through v for the samplers that consume it)."""

import torch
from exact import GaussianModel

from cogsample.sampling.noise import SeededNoise
from cogsample.sampling.samplers import SAMPLERS
from cogsample.sampling.schedules import EDM, LegacyDDPM, ZeroSNRDDPM

SHAPE = (1, 4, 16, 16, 16)  # 16384 values


class VFromX0:
    """``model(x, level) -> v`` for the samplers that consume v: v = (a x - x0) / sqrt(1 - a^2)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x, level):
        a = level.value.double()
        x0 = self.model(x, level).double()
        return ((a * x.double() - x0) / (1 - a * a).sqrt()).to(torch.float32)


def run_sampler(name, grid, x, noise=None, model=None, **opts):
    """``(output, model)`` of the sampler ``name`` on ``GaussianModel`` data (or ``model``), seed 7 by default."""
    spec = SAMPLERS[name]
    model = model or GaussianModel()
    if "image" in spec.needs:
        opts.setdefault("image", torch.zeros_like(x))
        opts.setdefault("edit_ratio", 0.0)  # from pure noise: an unconditional sample
    fn_model = model if spec.consumes == "x0" else VFromX0(model)
    return spec.fn(fn_model, x, grid, noise or SeededNoise([7] * x.shape[0]), **opts), model


def compatible(name, schedule):
    """False where a sigma-space sampler would have to start from zero-SNR's infinite sigma."""
    return not (SAMPLERS[name].space == "sigma" and isinstance(schedule, ZeroSNRDDPM))


SCHEDULES = {"zsnr1": ZeroSNRDDPM(1.0), "zsnr3": ZeroSNRDDPM(3.0), "legacy": LegacyDDPM(), "edm": EDM()}
