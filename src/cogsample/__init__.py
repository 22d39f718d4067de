"""cogsample: CogVideoX's sampling stage as composable parts, bit-exact with the SAT reference."""

from .jobs.api import Pipeline, VideoResult
from .models.base import CallableNetwork
from .pipeline.events import StepEvent
from .pipeline.options import GenerateOptions
from .reference.profiles import diffusers_sampling, sat_sampling
from .reference.satconfig import from_sat, load_sat_yaml
from .sampling.config import SamplingConfig, sample
from .sampling.denoiser import Denoiser, DenoiserConfig, Level
from .sampling.guidance import CFG, Conditioning, DynamicCFG, GuidanceInterval, GuidedModel, NoGuidance
from .sampling.noise import DiffusersNoise, GlobalNoise, ReplayNoise, SeededNoise, latent_shape
from .sampling.parallel import CFGParallel, ParallelConfig, ParallelGroups
from .sampling.samplers import SAMPLERS, get_sampler
from .sampling.scalings import EDMScaling, EpsScaling, VideoScaling, VScaling, VScalingEDMNoise
from .sampling.schedules import EDM, DiffusersDDPM, Grid, LegacyDDPM, SpacedDDPM, ZeroSNRDDPM
from .version import __version__ as __version__

__all__ = [
    "CFG",
    "EDM",
    "SAMPLERS",
    "CFGParallel",
    "CallableNetwork",
    "Conditioning",
    "Denoiser",
    "DenoiserConfig",
    "DiffusersDDPM",
    "DiffusersNoise",
    "DynamicCFG",
    "EDMScaling",
    "EpsScaling",
    "GenerateOptions",
    "GlobalNoise",
    "Grid",
    "GuidanceInterval",
    "GuidedModel",
    "LegacyDDPM",
    "Level",
    "NoGuidance",
    "ParallelConfig",
    "ParallelGroups",
    "Pipeline",
    "ReplayNoise",
    "SamplingConfig",
    "SeededNoise",
    "SpacedDDPM",
    "StepEvent",
    "VScaling",
    "VScalingEDMNoise",
    "VideoResult",
    "VideoScaling",
    "ZeroSNRDDPM",
    "diffusers_sampling",
    "from_sat",
    "get_sampler",
    "latent_shape",
    "load_sat_yaml",
    "sample",
    "sat_sampling",
]
