"""Read the SAT reference's ``sampler_config`` / ``denoiser_config`` into a :class:`SamplingConfig`.

The reference names classes by import path (``target:``) and passes ``params:`` to them. This
module is the one place that knows those names: it translates them once, at the edge, and
rejects any target or parameter it does not know, naming it.

The reference's released model configs ship with the package, reduced to what sampling needs
(``cogsample/reference/sat_configs/*.yaml``): :func:`load_sat_yaml` takes their names
(:func:`sat_config_names`) as well as paths.

Step counts: an explicit ``steps`` sets both the sampler's step count and DynamicCFG's
``num_steps`` (the ramp spans the run, as in diffusers and in ``cogsample generate`` without a
yaml); without one, a yaml is taken exactly as written, its sampler ``num_steps`` and its
guider's ``num_steps`` even where they differ.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..sampling.config import SamplingConfig
from ..sampling.denoiser import DenoiserConfig
from ..sampling.guidance import CFG, DynamicCFG, Guidance, NoGuidance
from ..sampling.samplers import REFERENCE_NAMES, get_sampler
from ..sampling.scalings import EDMScaling, EpsScaling, Scaling, VideoScaling, VScaling, VScalingEDMNoise
from ..sampling.schedules import EDM, LegacyDDPM, Schedule, ZeroSNRDDPM

__all__ = ["SatConfigError", "from_sat", "load_sat_yaml", "sat_config_names", "sat_text_max_length"]


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
    of the sampler's own discretization. DynamicCFG keeps the reference's step index
    (``step_index="reference"``).

    ``steps``: an explicit step count sets both the sampler's ``num_steps`` and a DynamicCFG
    guider's ``num_steps`` (its ramp spans the run, as diffusers' and ``cogsample generate``'s
    without a yaml do). ``None`` takes the blocks exactly as written: the sampler's and the
    guider's ``num_steps`` are kept even where they differ (how SAT users change the step count).
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
        cfg = SamplingConfig(
            sampler=spec.name, steps=num_steps, schedule=schedule, denoiser=denoiser, guidance=guidance, options=params
        )
    except ValueError as e:
        raise SatConfigError(f"{where} ({name}): {e}") from e
    if steps is not None and isinstance(guidance, DynamicCFG):
        # an explicit step count is the ramp's length too (checked above as the sampler's steps)
        cfg = dataclasses.replace(cfg, guidance=dataclasses.replace(guidance, num_steps=steps))
    return cfg


#: the package folder holding the released configs, one ``NAME.yaml`` per model
_SHIPPED_DIR = "sat_configs"


def _shipped() -> dict[str, Any]:
    """The shipped configs: name -> resource (``importlib.resources``; works zipped and editable)."""
    root = resources.files("cogsample.reference") / _SHIPPED_DIR
    if not root.is_dir():
        return {}
    return {p.name[: -len(".yaml")]: p for p in root.iterdir() if p.name.endswith(".yaml") and p.is_file()}


def sat_config_names() -> list[str]:
    """The names of the SAT model configs shipped with cogsample (``cogvideox-5b``, ...), sorted."""
    return sorted(_shipped())


def _normalise(name: str) -> str:
    key = name.strip().lower()
    for ext in (".yaml", ".yml"):
        if key.endswith(ext):
            key = key[: -len(ext)]
    return key.replace("_", "-")


def _read(name_or_path: str | Path) -> tuple[str, Any]:
    """``(label, parsed yaml)`` of an existing file (first) or a shipped config name (leniently:
    case, ``_``/``-`` and a ``.yaml`` suffix do not matter)."""
    import yaml

    path = Path(name_or_path)
    if path.exists():
        label = str(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise SatConfigError(f"cannot read SAT config {label!r}: {e.strerror}") from e
    else:
        shipped = _shipped()
        res = shipped.get(_normalise(str(name_or_path)))
        if res is None:
            raise SatConfigError(
                f"cannot read SAT config {str(name_or_path)!r}: the file does not exist, and it is not the "
                f"name of a shipped config; shipped: {', '.join(sorted(shipped)) or 'none'}"
            )
        label = f"{res.name} (shipped)"
        text = res.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SatConfigError(f"SAT config {label!r} is not valid yaml: {e}") from e
    if not isinstance(data, Mapping):
        raise SatConfigError(f"SAT config {label!r} must be a mapping")
    return label, data


def load_sat_yaml(name_or_path: str | Path, *, steps: int | None = None) -> SamplingConfig:
    """Read a SAT model yaml (``model.sampler_config`` / ``model.denoiser_config``) or a yaml
    holding just those blocks (top level, or a lone ``sampler_config``); other keys are ignored.

    ``name_or_path``: a file (takes precedence) or the name of a shipped config
    (:func:`sat_config_names`; ``cogvideox_5b.yaml``, ``CogVideoX-5B`` and ``cogvideox-5b`` are
    the same). ``steps``: as in :func:`from_sat`, an explicit count sets both the sampler's steps
    and DynamicCFG's ``num_steps``; ``None`` keeps the yaml's values as written.
    """
    label, data = _read(name_or_path)
    model = data.get("model", data)
    if not isinstance(model, Mapping) or "sampler_config" not in model:
        if "target" in data:
            return from_sat(data, steps=steps)
        raise SatConfigError(f"SAT config {label!r} has no model.sampler_config")
    return from_sat(model["sampler_config"], model.get("denoiser_config"), steps=steps)


def sat_text_max_length(name_or_path: str | Path) -> int | None:
    """The prompt length (T5 tokens) a SAT config was made for: a top-level ``text_max_length``
    (what the shipped configs carry: 226 for CogVideoX, 224 for CogVideoX1.5), else the
    ``max_length`` of the T5 embedder in ``model.conditioner_config``; None when neither is there.
    ``name_or_path`` as in :func:`load_sat_yaml`."""
    label, data = _read(name_or_path)
    value = data.get("text_max_length")
    where = "text_max_length"
    if value is None:
        model = data.get("model")
        cond = model.get("conditioner_config") if isinstance(model, Mapping) else None
        params = cond.get("params") if isinstance(cond, Mapping) else None
        embedders = params.get("emb_models") if isinstance(params, Mapping) else None
        for i, emb in enumerate(embedders if isinstance(embedders, list) else []):
            if not isinstance(emb, Mapping) or "T5" not in str(emb.get("target", "")).rsplit(".", 1)[-1]:
                continue
            emb_params = emb.get("params")
            if isinstance(emb_params, Mapping) and emb_params.get("max_length") is not None:
                value = emb_params["max_length"]
                where = f"model.conditioner_config.params.emb_models[{i}].params.max_length"
                break
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SatConfigError(f"SAT config {label!r}: {where} must be an integer >= 1, got {value!r}")
    return value
