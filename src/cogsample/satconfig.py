"""Read the SAT reference's ``sampler_config`` / ``denoiser_config`` into a :class:`SamplingConfig`.

The reference names classes by import path (``target:``) and passes ``params:`` to them. This
module is the one place that knows those names: it translates them once, at the edge, and
rejects any target or parameter it does not know, naming it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .denoiser import DenoiserConfig
from .guidance import CFG, DynamicCFG, Guidance, NoGuidance
from .samplers import REFERENCE_NAMES, get_sampler
from .sampling import SamplingConfig
from .scalings import EDMScaling, EpsScaling, Scaling, VideoScaling, VScaling, VScalingEDMNoise
from .schedules import EDM, LegacyDDPM, Schedule, ZeroSNRDDPM

__all__ = ["SatConfigError", "from_sat", "load_sat_yaml"]


class SatConfigError(ValueError):
    """A SAT config block that cogsample cannot translate; the message names the offending key."""


_SCHEDULES: dict[str, type[Schedule]] = {
    "ZeroSNRDDPMDiscretization": ZeroSNRDDPM,
    "LegacyDDPMDiscretization": LegacyDDPM,
    "EDMDiscretization": EDM,
}
_SCALINGS: dict[str, type[Scaling]] = {
    "EDMScaling": EDMScaling,
    "EpsScaling": EpsScaling,
    "VScaling": VScaling,
    "VScalingWithEDMcNoise": VScalingEDMNoise,
    "VideoScaling": VideoScaling,
}
_WEIGHTINGS = {"UnitWeighting", "EDMWeighting", "VWeighting", "EpsWeighting"}  # training only: ignored
_GUIDERS = {"VanillaCFG", "DynamicCFG", "IdentityGuider"}
_DENOISERS = {"Denoiser", "DiscreteDenoiser"}
_IGNORED_SAMPLER_PARAMS = {"verbose", "device"}
# the reference's VideoDDIMSampler (and its subclasses) accept these and never read them
_UNREAD_VIDEO_PARAMS = {"fixed_frames", "sdedit"}


def _class_name(block: Mapping[str, Any], where: str, known: Any) -> str:
    if not isinstance(block, Mapping):
        raise SatConfigError(f"{where} must be a mapping with 'target' (or 'class'), got {type(block).__name__}")
    unknown = set(block) - {"target", "class", "params"}
    if unknown:
        raise SatConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: target, params")
    target = block.get("target", block.get("class"))
    if not isinstance(target, str) or not target:
        raise SatConfigError(f"{where} has no 'target'")
    name = target.rsplit(".", 1)[-1]
    if name not in known:
        raise SatConfigError(f"{where}: unknown target {target!r}; known: {sorted(known)}")
    return name


def _params(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    params = block.get("params") or {}
    if not isinstance(params, Mapping):
        raise SatConfigError(f"{where}.params must be a mapping, got {type(params).__name__}")
    return dict(params)


def _construct(cls: type, params: Mapping[str, Any], where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(params) - fields
    if unknown:
        raise SatConfigError(f"{where}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as e:
        raise SatConfigError(f"{where}: {e}") from e


def _schedule(block: Mapping[str, Any], where: str) -> Schedule:
    name = _class_name(block, where, _SCHEDULES)
    return _construct(_SCHEDULES[name], _params(block, where), f"{where} ({name})")


def _scaling(block: Mapping[str, Any], where: str) -> Scaling:
    name = _class_name(block, where, _SCALINGS)
    return _construct(_SCALINGS[name], _params(block, where), f"{where} ({name})")


def _guidance(block: Mapping[str, Any] | None, where: str) -> Guidance:
    if block is None:
        return NoGuidance()
    name = _class_name(block, where, _GUIDERS)
    params = _params(block, where)
    thresh = params.pop("dyn_thresh_config", None)
    if thresh is not None:  # only the plain combination is supported
        _class_name(thresh, f"{where}.dyn_thresh_config", {"NoDynamicThresholding"})
    allowed = {"IdentityGuider": set(), "VanillaCFG": {"scale"}, "DynamicCFG": {"scale", "exp", "num_steps"}}[name]
    unknown = set(params) - allowed
    missing = allowed - set(params)
    if unknown:
        raise SatConfigError(f"{where} ({name}): unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    if missing:
        raise SatConfigError(f"{where} ({name}): missing parameter(s) {sorted(missing)}")
    try:
        if name == "IdentityGuider":
            return NoGuidance()
        if name == "VanillaCFG":
            return CFG(params["scale"])
        return DynamicCFG(params["scale"], params["exp"], params["num_steps"])
    except (TypeError, ValueError) as e:
        raise SatConfigError(f"{where} ({name}): {e}") from e


def _denoiser(block: Mapping[str, Any], where: str) -> DenoiserConfig:
    name = _class_name(block, where, _DENOISERS)
    params = _params(block, where)
    weighting = params.pop("weighting_config", None)
    if weighting is not None:
        _class_name(weighting, f"{where}.weighting_config", _WEIGHTINGS)
    if "scaling_config" not in params:
        raise SatConfigError(f"{where} ({name}): missing parameter 'scaling_config'")
    scaling = _scaling(params.pop("scaling_config"), f"{where}.scaling_config")
    if name == "Denoiser":
        if params:
            raise SatConfigError(f"{where} (Denoiser): unknown parameter(s) {sorted(params)}; allowed: scaling_config")
        return DenoiserConfig(scaling)
    allowed = {"num_idx", "discretization_config", "quantize_c_noise", "do_append_zero", "flip"}
    unknown = set(params) - allowed
    if unknown:
        raise SatConfigError(
            f"{where} (DiscreteDenoiser): unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    if "discretization_config" not in params or "num_idx" not in params:
        raise SatConfigError(f"{where} (DiscreteDenoiser): needs 'num_idx' and 'discretization_config'")
    if params.get("do_append_zero", False) is not False or params.get("flip", True) is not True:
        raise SatConfigError(f"{where} (DiscreteDenoiser): only do_append_zero=False, flip=True are supported")
    table = _schedule(params["discretization_config"], f"{where}.discretization_config")
    try:
        return DenoiserConfig(
            scaling, table=table, num_idx=params["num_idx"], quantize_c_noise=bool(params.get("quantize_c_noise", True))
        )
    except ValueError as e:
        raise SatConfigError(f"{where} (DiscreteDenoiser): {e}") from e


def from_sat(
    sampler_config: Mapping[str, Any],
    denoiser_config: Mapping[str, Any] | None = None,
    *,
    steps: int | None = None,
) -> SamplingConfig:
    """Translate SAT ``sampler_config`` (+ ``denoiser_config``) blocks into a :class:`SamplingConfig`.

    Without a denoiser block, CogVideoX's is assumed: VideoScaling snapped to a 1000-entry table
    of the sampler's own discretization. ``steps`` overrides the block's ``num_steps``.
    DynamicCFG keeps the reference's step index (``step_index="reference"``).
    """
    where = "sampler_config"
    name = _class_name(sampler_config, where, REFERENCE_NAMES)
    spec = get_sampler(name)
    params = _params(sampler_config, where)
    for key in _IGNORED_SAMPLER_PARAMS & set(params):
        params.pop(key)
    if "discretization_config" not in params:
        raise SatConfigError(f"{where} ({name}): missing parameter 'discretization_config'")
    schedule = _schedule(params.pop("discretization_config"), f"{where}.discretization_config")
    guidance = _guidance(params.pop("guider_config", None), f"{where}.guider_config")
    num_steps = params.pop("num_steps", None)
    if steps is not None:
        num_steps = steps
    if num_steps is None:
        raise SatConfigError(f"{where} ({name}): missing parameter 'num_steps'")
    options = spec.options()
    if spec.space == "alpha":
        for key in _UNREAD_VIDEO_PARAMS & set(params):
            if key not in options:
                value = params.pop(key)
                if value:
                    warnings.warn(
                        f"{where} ({name}): {key}={value!r} is accepted but never read by the reference; ignored",
                        stacklevel=2,
                    )
    unknown = set(params) - set(options)
    if unknown:
        raise SatConfigError(f"{where} ({name}): unknown parameter(s) {sorted(unknown)}; allowed: {sorted(options)}")
    if denoiser_config is None:
        denoiser = DenoiserConfig(VideoScaling(), table=schedule, quantize_c_noise=False)
    else:
        denoiser = _denoiser(denoiser_config, "denoiser_config")
    try:
        return SamplingConfig(
            sampler=spec.name, steps=num_steps, schedule=schedule, denoiser=denoiser, guidance=guidance, options=params
        )
    except ValueError as e:
        raise SatConfigError(f"{where} ({name}): {e}") from e


def load_sat_yaml(path: str | Path, *, steps: int | None = None) -> SamplingConfig:
    """Read a SAT model yaml (``model.sampler_config`` / ``model.denoiser_config``) or a yaml
    holding just those blocks (top level, or a lone ``sampler_config``)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise SatConfigError(f"cannot read SAT config {str(path)!r}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise SatConfigError(f"SAT config {str(path)!r} is not valid yaml: {e}") from e
    if not isinstance(data, Mapping):
        raise SatConfigError(f"SAT config {str(path)!r} must be a mapping")
    model = data.get("model", data)
    if not isinstance(model, Mapping) or "sampler_config" not in model:
        if "target" in data:
            return from_sat(data, steps=steps)
        raise SatConfigError(f"SAT config {str(path)!r} has no model.sampler_config")
    return from_sat(model["sampler_config"], model.get("denoiser_config"), steps=steps)
