"""cogsample: CogVideoX's sampling stage as composable parts, bit-exact with the SAT reference."""

from .denoiser import Denoiser, DenoiserConfig, Level
from .guidance import CFG, Conditioning, DynamicCFG, GuidanceInterval, GuidedModel, NoGuidance
from .models.base import CallableNetwork
from .noise import DiffusersNoise, GlobalNoise, ReplayNoise, SeededNoise, latent_shape
from .parallel import CFGParallel, ParallelConfig, ParallelGroups
from .pipeline import GenerateOptions, Pipeline, StepEvent, VideoResult
from .profiles import diffusers_sampling, sat_sampling
from .samplers import SAMPLERS, get_sampler
from .sampling import SamplingConfig, sample
from .satconfig import from_sat, load_sat_yaml
from .scalings import EDMScaling, EpsScaling, VideoScaling, VScaling, VScalingEDMNoise
from .schedules import EDM, DiffusersDDPM, Grid, LegacyDDPM, SpacedDDPM, ZeroSNRDDPM

__version__ = "0.1.0"

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
