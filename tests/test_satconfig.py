"""SAT configs: the reference's yaml blocks become typed configs; unknown names are errors."""

import copy
from pathlib import Path

import pytest
import yaml

from cogsample.denoiser import DenoiserConfig
from cogsample.guidance import CFG, DynamicCFG, NoGuidance
from cogsample.sampling import COGVIDEOX_5B, SamplingConfig
from cogsample.satconfig import SatConfigError, from_sat, load_sat_yaml
from cogsample.scalings import VideoScaling
from cogsample.schedules import ZeroSNRDDPM

SAT = Path(__file__).resolve().parents[1].parent / "shared" / "sat-configs"
MODELS = ["cogvideox_2b", "cogvideox_5b", "cogvideox_5b_i2v", "cogvideox1.5_5b", "cogvideox1.5_5b_i2v"]


@pytest.mark.parametrize("model", MODELS)
def test_shipped_model_yamls_load(model):
    cfg = load_sat_yaml(SAT / f"{model}.yaml")
    shift = 3.0 if model == "cogvideox_2b" else 1.0
    assert cfg.sampler == "vpsde_dpmpp_2m" and cfg.steps == 50
    assert cfg.schedule == ZeroSNRDDPM(shift)
    assert cfg.denoiser == DenoiserConfig(VideoScaling(), table=ZeroSNRDDPM(shift), num_idx=1000)
    assert cfg.guidance == DynamicCFG(6, 5, 50, step_index="reference")


def test_5b_yaml_is_the_default_config():
    assert load_sat_yaml(SAT / "cogvideox_5b.yaml") == COGVIDEOX_5B == SamplingConfig()


def _blocks():
    model = yaml.safe_load((SAT / "cogvideox_5b.yaml").read_text())["model"]
    return copy.deepcopy(model["sampler_config"]), copy.deepcopy(model["denoiser_config"])


def test_unknown_sampler_target_is_named():
    s, d = _blocks()
    s["target"] = "sgm.modules.diffusionmodules.sampling.FancySampler"
    with pytest.raises(SatConfigError, match=r"sampler_config: unknown target '.*FancySampler'"):
        from_sat(s, d)


def test_unknown_parameters_are_named():
    s, d = _blocks()
    s["params"]["s_churn"] = 1.0
    with pytest.raises(SatConfigError, match=r"VPSDEDPMPP2MSampler\): unknown parameter\(s\) \['s_churn'\]"):
        from_sat(s, d)
    s, d = _blocks()
    s["params"]["discretization_config"]["params"]["shift"] = 2.0
    with pytest.raises(
        SatConfigError, match=r"discretization_config \(ZeroSNRDDPMDiscretization\): unknown parameter\(s\) \['shift'\]"
    ):
        from_sat(s, d)
    s, d = _blocks()
    d["params"]["scaling_config"]["target"] = "sgm.modules.diffusionmodules.denoiser_scaling.Other"
    with pytest.raises(SatConfigError, match=r"denoiser_config\.scaling_config: unknown target"):
        from_sat(s, d)
    s, d = _blocks()
    s["params"]["guider_config"]["params"]["rescale"] = 0.7
    with pytest.raises(SatConfigError, match=r"guider_config \(DynamicCFG\): unknown parameter\(s\) \['rescale'\]"):
        from_sat(s, d)


def test_bad_values_are_reported_with_where_they_were():
    s, d = _blocks()
    s["params"]["discretization_config"]["params"]["shift_scale"] = 0
    with pytest.raises(SatConfigError, match="shift_scale must be a finite number > 0, got 0"):
        from_sat(s, d)
    s, d = _blocks()
    s["params"]["num_steps"] = 0
    with pytest.raises(SatConfigError, match="steps must be an integer >= 1, got 0"):
        from_sat(s, d)


def test_generic_sampler_blocks_and_guiders():
    cfg = from_sat(
        {
            "target": "sgm.modules.diffusionmodules.sampling.EulerEDMSampler",
            "params": {
                "num_steps": 10,
                "s_churn": 1.0,
                "discretization_config": {"target": "sgm.modules.diffusionmodules.discretizer.EDMDiscretization"},
                "guider_config": {"target": "sgm.modules.diffusionmodules.guiders.VanillaCFG", "params": {"scale": 5}},
            },
        },
        {
            "target": "sgm.modules.diffusionmodules.denoiser.Denoiser",
            "params": {"scaling_config": {"target": "sgm.modules.diffusionmodules.denoiser_scaling.EDMScaling"}},
        },
    )
    assert cfg.sampler == "euler" and cfg.options == {"s_churn": 1.0} and cfg.guidance == CFG(5)
    assert cfg.denoiser.table is None
    no_guider = from_sat(
        {
            "class": "DPMPP2MSampler",
            "params": {"num_steps": 4, "discretization_config": {"target": "LegacyDDPMDiscretization"}},
        }
    )
    assert no_guider.guidance == NoGuidance()


def test_steps_override_and_missing_num_steps():
    s, d = _blocks()
    assert from_sat(s, d, steps=20).steps == 20
    del s["params"]["num_steps"]
    with pytest.raises(SatConfigError, match="missing parameter 'num_steps'"):
        from_sat(s, d)


def test_yaml_errors(tmp_path):
    with pytest.raises(SatConfigError, match="cannot read SAT config"):
        load_sat_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {denoiser_config: {}}")
    with pytest.raises(SatConfigError, match=r"has no model\.sampler_config"):
        load_sat_yaml(bad)


def test_video_ddim_accepts_and_ignores_fixed_frames_like_the_reference():
    s, d = _blocks()
    s["target"] = "VideoDDIMSampler"
    s["params"]["fixed_frames"] = 1
    with pytest.warns(UserWarning, match="never read by the reference"):
        cfg = from_sat(s, d)
    assert cfg.sampler == "video_ddim" and cfg.options == {}
