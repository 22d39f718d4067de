"""SAT configs: the reference's yaml blocks become typed configs; unknown names are errors."""

import copy
import dataclasses
from importlib import resources
from pathlib import Path

import pytest
import yaml

from cogsample.reference.satconfig import (
    SatConfigError,
    from_sat,
    load_sat_yaml,
    sat_config_names,
    sat_text_max_length,
)
from cogsample.sampling.config import COGVIDEOX_5B, SamplingConfig
from cogsample.sampling.denoiser import DenoiserConfig
from cogsample.sampling.guidance import CFG, DynamicCFG, NoGuidance
from cogsample.sampling.scalings import VideoScaling
from cogsample.sampling.schedules import ZeroSNRDDPM

SAT = Path(__file__).resolve().parents[1] / "data" / "sat-configs"
MODELS = ["cogvideox_2b", "cogvideox_5b", "cogvideox_5b_i2v", "cogvideox1.5_5b", "cogvideox1.5_5b_i2v"]
#: shipped name -> the reference's original file name (without .yaml)
SHIPPED = {m.replace("_", "-"): m for m in MODELS}


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
    cfg = from_sat(s, d, steps=20)
    # an explicit step count is DynamicCFG's ramp length too
    assert cfg.steps == 20 and cfg.guidance == DynamicCFG(6, 5, 20)
    del s["params"]["num_steps"]
    with pytest.raises(SatConfigError, match="missing parameter 'num_steps'"):
        from_sat(s, d)


def test_yaml_errors(tmp_path):
    with pytest.raises(SatConfigError, match=r"cannot read SAT config .*missing\.yaml.*does not exist"):
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


# -- steps: an explicit count sets the sampler's and DynamicCFG's num_steps; none keeps the yaml's


def test_explicit_steps_set_dynamic_cfg_num_steps_too():
    cfg = load_sat_yaml(SAT / "cogvideox_5b.yaml", steps=25)
    assert cfg.steps == 25 and cfg.guidance == DynamicCFG(6, 5, 25, step_index="reference")
    assert cfg == dataclasses.replace(SamplingConfig(), steps=25, guidance=DynamicCFG(6, 5, 25))
    # other guiders have no step count to follow
    s, d = _blocks()
    s["params"]["guider_config"] = {"target": "VanillaCFG", "params": {"scale": 4}}
    assert from_sat(s, d, steps=25).guidance == CFG(4)
    s["params"].pop("guider_config")
    assert from_sat(s, d, steps=25).guidance == NoGuidance()


def test_bad_explicit_steps_name_the_sampler_steps():
    s, d = _blocks()
    with pytest.raises(SatConfigError, match=r"VPSDEDPMPP2MSampler\): steps must be an integer >= 1, got 0"):
        from_sat(s, d, steps=0)


def test_without_steps_a_yaml_is_taken_as_written(tmp_path):
    data = yaml.safe_load((SAT / "cogvideox_5b.yaml").read_text())
    data["model"]["sampler_config"]["params"]["num_steps"] = 25  # the guider keeps num_steps: 50
    path = tmp_path / "five_b_25.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_sat_yaml(path)
    assert cfg.steps == 25 and cfg.guidance == DynamicCFG(6, 5, 50)
    assert load_sat_yaml(path, steps=None) == cfg
    explicit = load_sat_yaml(path, steps=25)
    assert explicit.steps == 25 and explicit.guidance == DynamicCFG(6, 5, 25)


# -- the released configs ship with the package


def test_shipped_names():
    assert sat_config_names() == sorted(SHIPPED)


@pytest.mark.parametrize("name", sorted(SHIPPED))
@pytest.mark.parametrize("steps", [None, 25])
def test_shipped_config_equals_the_original(name, steps):
    original = load_sat_yaml(SAT / f"{SHIPPED[name]}.yaml", steps=steps)
    assert load_sat_yaml(name, steps=steps) == original
    assert load_sat_yaml(name, steps=steps).steps == (50 if steps is None else steps)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_blocks_are_the_originals(name):
    """Not just equal once translated: the same targets and params, block for block."""
    shipped = yaml.safe_load((resources.files("cogsample.reference") / "sat_configs" / f"{name}.yaml").read_text())
    original = yaml.safe_load((SAT / f"{SHIPPED[name]}.yaml").read_text())
    for block in ("sampler_config", "denoiser_config"):
        assert shipped["model"][block] == original["model"][block]
    assert set(shipped) == {"model", "text_max_length"} and set(shipped["model"]) == {
        "sampler_config",
        "denoiser_config",
    }


@pytest.mark.parametrize(
    "variant", ["cogvideox-5b", "cogvideox_5b", "cogvideox_5b.yaml", "CogVideoX-5B", "CogVideoX_5B.YAML"]
)
def test_lenient_names(variant):
    assert load_sat_yaml(variant) == load_sat_yaml("cogvideox-5b") == SamplingConfig()
    assert sat_text_max_length(variant) == 226
    assert load_sat_yaml("cogvideox1.5_5b_i2v.yaml") == load_sat_yaml("CogVideoX1.5-5B-I2V")


def test_a_file_takes_precedence_over_a_shipped_name(tmp_path, monkeypatch):
    data = yaml.safe_load((SAT / "cogvideox_2b.yaml").read_text())
    (tmp_path / "cogvideox_5b.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    assert load_sat_yaml("cogvideox_5b.yaml") == load_sat_yaml("cogvideox-2b")
    assert load_sat_yaml("cogvideox-5b") == SamplingConfig()  # no such file: the shipped one


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(SatConfigError) as e:
        load_sat_yaml("cogvideox-7b")
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    assert "'cogvideox-7b'" in msg and "does not exist" in msg
    assert all(name in msg for name in SHIPPED)
    with pytest.raises(SatConfigError, match=r"cogvideox-7b.*does not exist"):
        sat_text_max_length("cogvideox-7b")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_text_max_length(name):
    expected = 224 if name.startswith("cogvideox1.5") else 226
    assert sat_text_max_length(name) == expected
    original = yaml.safe_load((SAT / f"{SHIPPED[name]}.yaml").read_text())
    (t5,) = [e for e in original["model"]["conditioner_config"]["params"]["emb_models"] if "T5" in e["target"]]
    assert t5["params"]["max_length"] == expected
    # a user file: the T5 embedder's max_length
    assert sat_text_max_length(SAT / f"{SHIPPED[name]}.yaml") == expected


def test_text_max_length_of_user_files(tmp_path):
    s, d = _blocks()
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"model": {"sampler_config": s, "denoiser_config": d}}))
    assert sat_text_max_length(bare) is None
    top = tmp_path / "top.yaml"
    top.write_text(yaml.safe_dump({"text_max_length": 120, "model": {"sampler_config": s}}))
    assert sat_text_max_length(top) == 120
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"text_max_length": "long", "model": {"sampler_config": s}}))
    with pytest.raises(SatConfigError, match="text_max_length must be an integer >= 1, got 'long'"):
        sat_text_max_length(bad)


def test_extra_top_level_keys_are_ignored(tmp_path):
    s, d = _blocks()
    path = tmp_path / "extra.yaml"
    path.write_text(yaml.safe_dump({"text_max_length": 226, "args": {"fps": 8}, "sampler_config": s}))
    assert load_sat_yaml(path).steps == 50
    path.write_text(yaml.safe_dump({"text_max_length": 226, "model": {"sampler_config": s, "denoiser_config": d}}))
    assert load_sat_yaml(path) == SamplingConfig()


def test_the_yaml_files_are_package_data():
    root = resources.files("cogsample.reference") / "sat_configs"
    assert root.is_dir()
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".yaml"))
    assert names == sorted(f"{n}.yaml" for n in SHIPPED)
    for n in names:
        text = (root / n).read_text()
        assert "7a1af7154511e0ce4e4be8d62faa8c5e5a3532d2" in text.split("\n\n", 1)[0]  # the header names the commit
