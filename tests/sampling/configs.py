"""A sampler's config on the toy network for tests: the schedule its space needs, the table
snapping where it consumes x0, DynamicCFG's loop ramp unless another guidance is given."""

from cogsample.sampling.config import SamplingConfig
from cogsample.sampling.denoiser import DenoiserConfig
from cogsample.sampling.guidance import DynamicCFG
from cogsample.sampling.samplers import SAMPLERS
from cogsample.sampling.scalings import VideoScaling
from cogsample.sampling.schedules import LegacyDDPM, ZeroSNRDDPM


def sampler_config(name, steps=4, guidance=None, **fields):
    """``SamplingConfig`` for sampler ``name``; ``fields``: any other field (context, guider, ...)."""
    spec = SAMPLERS[name]
    schedule = ZeroSNRDDPM(1.0) if spec.space == "alpha" else LegacyDDPM()
    return SamplingConfig(
        sampler=name,
        steps=steps,
        schedule=schedule,
        denoiser=DenoiserConfig(VideoScaling(), table=schedule if spec.consumes == "x0" else None),
        guidance=guidance or DynamicCFG(6, 5, steps, step_index="loop"),
        **fields,
    )
