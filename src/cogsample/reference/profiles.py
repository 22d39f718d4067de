"""Reproduction profiles: the :class:`~cogsample.sampling.config.SamplingConfig` that makes ``sample()``
compute what a given implementation computes, bit for bit.

* :func:`sat_sampling`: the SAT reference (CogVideoX's own ``sat`` code), what the golden
  replays check;
* :func:`diffusers_sampling`: diffusers' ``CogVideoXPipeline`` / ``CogVideoXImageToVideoPipeline``
  with ``CogVideoXDPMScheduler`` or ``CogVideoXDDIMScheduler``, from the model folder's
  ``scheduler_config.json``. Run it with ``noise=DiffusersNoise(generator)`` and the same initial
  latents, negative prompt embeddings as ``uncond_context``, and latents in the prompt
  embeddings' dtype, and it returns the pipeline's ``output_type="latent"`` result exactly.

What the diffusers profile reproduces, unlike SAT: the zero-terminal-SNR rescale and SNR shift
of the whole 1000-entry table, no table snapping, float64 schedule scalars, CFG on the v
prediction (cast to float32), DynamicCFG as ``1 + s (1 - cos(pi ((n - t) / n) ** 5)) / 2`` with
the timestep ``t``, no CFG at all for ``guidance_scale <= 1``, the DPM scheduler's unused noise
draws, and diffusers' timestep grids, broken ones included (with a
:class:`~cogsample.sampling.schedules.DiffusersGridWarning`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from ..sampling.config import SamplingConfig
from ..sampling.denoiser import DenoiserConfig
from ..sampling.guidance import CFG, DynamicCFG, Guidance, NoGuidance
from ..sampling.scalings import VideoScaling
from ..sampling.schedules import DiffusersDDPM, ZeroSNRDDPM

__all__ = ["DIFFUSERS_SAMPLERS", "diffusers_sampling", "sat_sampling"]

#: scheduler choice (short name or diffusers class name) -> cogsample sampler
DIFFUSERS_SAMPLERS: dict[str, str] = {
    "dpm": "diffusers_dpm",
    "ddim": "diffusers_ddim",
    "CogVideoXDPMScheduler": "diffusers_dpm",
    "CogVideoXDDIMScheduler": "diffusers_ddim",
}

#: CogVideoX-5B's (and 1.5's) diffusers ``scheduler/scheduler_config.json``; 2B's differs only in
#: ``snr_shift_scale`` (3.0) and ``_class_name`` (CogVideoXDDIMScheduler).
COGVIDEOX_5B_SCHEDULER: dict[str, object] = {
    "_class_name": "CogVideoXDPMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "snr_shift_scale": 1.0,
    "steps_offset": 0,
    "timestep_spacing": "trailing",
    "trained_betas": None,
}

#: diffusers' DynamicCFG exponent (``** 5.0`` in the pipelines)
DYNAMIC_CFG_EXP = 5.0


def diffusers_sampling(
    scheduler_config: Mapping[str, Any],
    steps: int = 50,
    guidance_scale: float = 6.0,
    use_dynamic_cfg: bool = True,
    scheduler: Literal["dpm", "ddim"] | None = None,
) -> SamplingConfig:
    """The config that reproduces diffusers' CogVideoX pipelines' denoising loop.

    ``scheduler_config``: the ``scheduler/scheduler_config.json`` dict; ``steps``:
    ``num_inference_steps``; ``guidance_scale`` and ``use_dynamic_cfg`` as the pipeline's
    arguments (CFG runs only for ``guidance_scale > 1``; with ``use_dynamic_cfg`` the scale is
    ``1 + guidance_scale (1 - cos(pi ((steps - t) / steps) ** 5)) / 2`` at timestep ``t``);
    ``scheduler``: ``"dpm"`` or ``"ddim"``, or None for the config's ``_class_name``.
    """
    name = scheduler if scheduler is not None else scheduler_config.get("_class_name")
    if name not in DIFFUSERS_SAMPLERS:
        raise ValueError(
            f"scheduler must be 'dpm' or 'ddim' (or None with a config whose _class_name is CogVideoXDPMScheduler or "
            f"CogVideoXDDIMScheduler), got scheduler={scheduler!r}, _class_name={scheduler_config.get('_class_name')!r}"
        )
    prediction_type = scheduler_config.get("prediction_type", "epsilon")
    if prediction_type != "v_prediction":
        raise ValueError(
            f"the diffusers profile runs CogVideoX's v-prediction models: prediction_type must be 'v_prediction', "
            f"got {prediction_type!r}"
        )
    guidance: Guidance
    if not guidance_scale > 1.0:
        guidance = NoGuidance()
    elif use_dynamic_cfg:
        guidance = DynamicCFG(float(guidance_scale), DYNAMIC_CFG_EXP, steps, step_index="reference")
    else:
        guidance = CFG(float(guidance_scale))
    return SamplingConfig(
        sampler=DIFFUSERS_SAMPLERS[name],
        steps=steps,
        schedule=DiffusersDDPM.from_diffusers_config(scheduler_config),
        denoiser=DenoiserConfig(VideoScaling(), table=None),
        guidance=guidance,
    )


def sat_sampling(
    steps: int = 50,
    guidance_scale: float = 6.0,
    use_dynamic_cfg: bool = True,
    shift_scale: float = 1.0,
    sampler: str = "vpsde_dpmpp_2m",
) -> SamplingConfig:
    """The SAT reference's CogVideoX sampling (``cogvideox_5b.yaml`` at the defaults; 2B uses
    ``shift_scale=3``): ZeroSNR DDPM, VideoScaling with table snapping, DynamicCFG with the
    reference's ``num_steps - timestep`` index (or constant CFG), CFG on x0."""
    schedule = ZeroSNRDDPM(shift_scale)
    guidance: Guidance = DynamicCFG(guidance_scale, 5, steps) if use_dynamic_cfg else CFG(guidance_scale)
    return SamplingConfig(
        sampler=sampler,
        steps=steps,
        schedule=schedule,
        denoiser=DenoiserConfig(VideoScaling(), table=schedule),
        guidance=guidance,
    )
