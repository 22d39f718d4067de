"""The sampler registry: each sampler's name, function and what callers must know about it
(:class:`SamplerSpec`), found by its cogsample name or the reference's class name (:func:`get_sampler`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from ..schedules import Space
from .ancestral import sample_dpmpp_2s_ancestral, sample_euler_ancestral
from .common import Tensor
from .ddim import sample_ddim, sample_video_ddim, sample_video_ddpm
from .diffusers import sample_diffusers_ddim, sample_diffusers_dpm
from .dpmpp import sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_vpode_dpmpp_2m, sample_vpsde_dpmpp_2m
from .euler import sample_euler, sample_heun, sample_sdedit_euler
from .lms import sample_lms
from .multistep import sample_vp_unipc, sample_vpode_dpmpp_3m, sample_vpsde_dpmpp_3m

__all__ = ["REFERENCE_NAMES", "SAMPLERS", "SamplerSpec", "get_sampler"]


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler function and what callers must know about it.

    ``space``: the coordinates it integrates in; ``prediction_dtype``: the dtype it casts network
    predictions to before guidance (float32 for the reference's video samplers and diffusers');
    ``reference``: the SAT sampler or diffusers scheduler class names it reproduces; ``needs``:
    extra inputs (``image`` for SDEdit); ``consumes``: what its ``model`` returns, the denoised
    ``"x0"`` or the guided raw network output ``"v"`` (diffusers' schedulers).
    """

    name: str
    fn: Callable[..., Tensor]
    space: Space
    stochastic: bool
    reference: tuple[str, ...]
    calls_per_step: Literal[1, 2] = 1
    prediction_dtype: torch.dtype | None = None
    needs: tuple[str, ...] = ()
    summary: str = field(default="", compare=False)
    consumes: Literal["x0", "v"] = "x0"

    def options(self) -> dict[str, Any]:
        """The sampler's tunable options and their defaults, from its signature."""
        skip = {"model", "x", "grid", "noise", "callback", *self.needs}
        return {p.name: p.default for p in inspect.signature(self.fn).parameters.values() if p.name not in skip}


def _spec(name, fn, space, stochastic, reference, summary, **kw) -> SamplerSpec:
    return SamplerSpec(name, fn, space, stochastic, tuple(reference), summary=summary, **kw)


_F32 = torch.float32
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in [
        _spec(
            "euler", sample_euler, "sigma", True, ["EulerEDMSampler"], "Euler, EDM churn (deterministic at s_churn=0)"
        ),
        _spec("heun", sample_heun, "sigma", True, ["HeunEDMSampler"], "Heun 2nd order, EDM churn", calls_per_step=2),
        _spec("euler_ancestral", sample_euler_ancestral, "sigma", True, ["EulerAncestralSampler"], "ancestral Euler"),
        _spec(
            "dpmpp_2s_ancestral",
            sample_dpmpp_2s_ancestral,
            "sigma",
            True,
            ["DPMPP2SAncestralSampler"],
            "DPM-Solver++(2S) ancestral",
            calls_per_step=2,
        ),
        _spec("dpmpp_2m", sample_dpmpp_2m, "sigma", False, ["DPMPP2MSampler"], "DPM-Solver++(2M)"),
        _spec("dpmpp_2m_sde", sample_dpmpp_2m_sde, "sigma", True, ["SDEDPMPP2MSampler"], "SDE DPM-Solver++(2M)"),
        _spec("lms", sample_lms, "sigma", False, ["LinearMultistepSampler"], "linear multistep (Adams)"),
        _spec("ddim", sample_ddim, "sigma", True, ["DDIMSampler"], "DDIM in sigma space with s_noise"),
        _spec(
            "sdedit_euler",
            sample_sdedit_euler,
            "sigma",
            True,
            ["SdeditEDMSampler"],
            "SDEdit: Euler-EDM from a noised image",
            needs=("image",),
        ),
        _spec(
            "video_ddim",
            sample_video_ddim,
            "alpha",
            False,
            ["VideoDDIMSampler", "Image2VideoDDIMSampler"],
            "DDIM in alpha space",
            prediction_dtype=_F32,
        ),
        _spec(
            "video_ddpm",
            sample_video_ddpm,
            "alpha",
            True,
            ["VideoDDPMSampler"],
            "ancestral DDPM in alpha space",
            prediction_dtype=_F32,
        ),
        _spec(
            "vpsde_dpmpp_2m",
            sample_vpsde_dpmpp_2m,
            "alpha",
            True,
            ["VPSDEDPMPP2MSampler"],
            "SDE DPM-Solver++(2M) in alpha space (CogVideoX default)",
            prediction_dtype=_F32,
        ),
        _spec(
            "vpode_dpmpp_2m",
            sample_vpode_dpmpp_2m,
            "alpha",
            False,
            ["VPODEDPMPP2MSampler"],
            "DPM-Solver++(2M) in alpha space",
            prediction_dtype=_F32,
        ),
        _spec(
            "vpsde_dpmpp_3m",
            sample_vpsde_dpmpp_3m,
            "alpha",
            True,
            (),
            "SDE DPM-Solver++(3M) in alpha space (eta, s_noise)",
            prediction_dtype=_F32,
        ),
        _spec(
            "vpode_dpmpp_3m",
            sample_vpode_dpmpp_3m,
            "alpha",
            False,
            (),
            "DPM-Solver++(3M) in alpha space",
            prediction_dtype=_F32,
        ),
        _spec(
            "vp_unipc",
            sample_vp_unipc,
            "alpha",
            False,
            (),
            "UniPC (bh2 predictor-corrector, order 1-3) in alpha space",
            prediction_dtype=_F32,
        ),
        _spec(
            "diffusers_dpm",
            sample_diffusers_dpm,
            "alpha",
            True,
            ["CogVideoXDPMScheduler"],
            "diffusers' CogVideoXDPMScheduler loop (SDE DPM-Solver++(2M) on v), bit-exact",
            prediction_dtype=_F32,
            consumes="v",
        ),
        _spec(
            "diffusers_ddim",
            sample_diffusers_ddim,
            "alpha",
            False,
            ["CogVideoXDDIMScheduler"],
            "diffusers' CogVideoXDDIMScheduler loop (DDIM on v), bit-exact",
            prediction_dtype=_F32,
            consumes="v",
        ),
    ]
}

#: SAT sampler / diffusers scheduler class name -> cogsample sampler name.
REFERENCE_NAMES: dict[str, str] = {ref: s.name for s in SAMPLERS.values() for ref in s.reference}


def get_sampler(name: str) -> SamplerSpec:
    """The sampler called ``name`` (a cogsample name, a SAT sampler or a diffusers scheduler class name)."""
    spec = SAMPLERS.get(name) or SAMPLERS.get(REFERENCE_NAMES.get(name, ""))
    if spec is None:
        raise ValueError(
            f"sampler must be one of {sorted(SAMPLERS)} (or a SAT sampler / diffusers scheduler class name), "
            f"got {name!r}"
        )
    return spec
