"""Samplers: plain functions ``sample_*(model, x, grid, noise, **options) -> x0``.

Every sampler takes

* ``model(x, level) -> x0``: a denoiser (guidance already inside, see :mod:`cogsample.sampling.guidance`);
  the samplers that replicate diffusers' schedulers take ``model(x, level) -> v`` instead, the
  guided raw network output (``SamplerSpec.consumes == "v"``);
* ``x``: unit-variance noise ``(B, T, C, H, W)``; sigma-space samplers scale it to
  ``sqrt(1 + sigma_0^2)`` themselves, as the reference does;
* ``grid``: a :class:`~cogsample.sampling.schedules.Grid` in either space (converted when needed);
* ``noise``: a :class:`~cogsample.sampling.noise.NoiseSource` for the in-loop draws;
* ``callback(step, x, denoised)``: called after every executed step.

All per-step coefficients are computed as vectors before the loop, so the loop never reads a
value back from the device. They are evaluated with the reference's formulas, operation for
operation and in the reference's dtypes, which is what makes the golden replays bit-exact:
video samplers (alpha space) compute in float32, or float64 for a float64 ``x``, and cast the
prediction to float32; sigma-space samplers compute every scalar in float32 whatever ``x`` is.

The families, one module each: :mod:`.euler` (EDM Euler, Heun, SDEdit), :mod:`.ancestral` (Euler
and DPM-Solver++(2S) ancestral), :mod:`.dpmpp` (DPM-Solver++(2M) in sigma and alpha space),
:mod:`.ddim` (DDIM in sigma space, video DDIM and DDPM), :mod:`.lms` (linear multistep),
:mod:`.multistep` (DPM-Solver++(3M) and UniPC in alpha space), :mod:`.diffusers` (diffusers'
schedulers' loops); :mod:`.common` holds what they share and :mod:`.registry` names them.
"""

from __future__ import annotations

# `_name as _name`: private helpers the single samplers.py exposed, still importable from here
from .ancestral import _ancestral as _ancestral
from .ancestral import sample_dpmpp_2s_ancestral, sample_euler_ancestral
from .common import Callback, Model
from .ddim import sample_ddim, sample_video_ddim, sample_video_ddpm
from .diffusers import sample_diffusers_ddim, sample_diffusers_dpm
from .dpmpp import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_vpode_dpmpp_2m, sample_vpsde_dpmpp_2m
from .euler import sample_euler, sample_heun, sample_sdedit_euler
from .lms import lms_coefficients, sample_lms
from .multistep import _log_snr_host as _log_snr_host
from .multistep import _unipc_coefficients as _unipc_coefficients
from .multistep import _unipc_rhos as _unipc_rhos
from .multistep import sample_vp_unipc, sample_vpode_dpmpp_3m, sample_vpsde_dpmpp_3m
from .registry import REFERENCE_NAMES, SAMPLERS, SamplerSpec, get_sampler

__all__ = [
    "REFERENCE_NAMES",
    "SAMPLERS",
    "Callback",
    "Model",
    "SamplerSpec",
    "get_sampler",
    "lms_coefficients",
    "sample_ddim",
    "sample_diffusers_ddim",
    "sample_diffusers_dpm",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_2s_ancestral",
    "sample_euler",
    "sample_euler_ancestral",
    "sample_heun",
    "sample_lms",
    "sample_sdedit_euler",
    "sample_video_ddim",
    "sample_video_ddpm",
    "sample_vp_unipc",
    "sample_vpode_dpmpp_2m",
    "sample_vpode_dpmpp_3m",
    "sample_vpsde_dpmpp_2m",
    "sample_vpsde_dpmpp_3m",
]
