"""``--guidance RULE[:key=value,...]`` (diffusers' combine rules) on the trained built-in model: from
the command line, a JSONL batch (with context windows), the Python API and CFG parallel under
torchrun; each rule changes the video's name, and what cannot run is refused before any work."""

import json
import logging

import pytest
import torch
from processes import run_bounded, torchrun
from safetensors.torch import load_file

import cogsample
from cogsample.cli.main import main
from cogsample.sampling.guiders import GUIDERS

pytest.importorskip("diffusers.guiders")
logging.getLogger("diffusers.guiders.guider_utils").setLevel(logging.ERROR)

PROMPT = "a red shape on a black background"
#: every rule; PAG and SLG over every step (their default range, the first 20%, holds no step of 2)
ACTIVE = [f"{r}:end=1" if r in ("pag", "slg") else r for r in sorted(GUIDERS)]
RULES = [*ACTIVE, "apg:eta=0.5,momentum=0,norm_threshold=50"]
SMALL = ["--model", "builtin-trained", "--steps", "2", "--quiet"]


def _generate(out, *args):
    assert main(["generate", *SMALL, "--prompt", PROMPT, "--out", str(out), *args]) == 0


def _stems(out):
    return {p.name.split(".")[0] for p in out.glob("*.json")}


def _meta(out):
    return {
        m["command"][m["command"].index("--guidance") + 1]: m for m in map(json.loads, map(_read, out.glob("*.json")))
    }


def _read(p):
    return p.read_text()


def test_every_rule_from_the_cli_gets_its_own_name_and_json(tmp_path):
    _generate(tmp_path / "plain")
    (plain,) = _stems(tmp_path / "plain")
    out = tmp_path / "rules"
    rules = [*ACTIVE, "fdg:low=0.2,schedule=constant", "pag", "slg:layers=0+3,weight=1,begin=0,end=0.5"]
    for rule in rules:
        _generate(out, "--guidance", rule)
    stems = _stems(out)
    assert len(stems) == len(rules) and plain not in stems
    # the zeroed step runs nothing; a perturbed step runs a third call
    forwards = {"cfg-zero-star": 2, "pag:end=1": 5, "slg:end=1": 5, "slg:layers=0+3,weight=1,begin=0,end=0.5": 5}
    for rule, m in _meta(out).items():
        assert m["sampling"]["guider"]["type"] == type(GUIDERS[rule.split(":")[0]]()).__name__
        assert m["forwards"] == forwards.get(rule, 4), rule
    assert _meta(out)["slg:layers=0+3,weight=1,begin=0,end=0.5"]["sampling"]["guider"]["layers"] == [0, 3]
    assert _meta(out)["fdg:low=0.2,schedule=constant"]["sampling"]["guidance"]["type"] == "CFG"
    # the same request again finds its video: same name, nothing new
    _generate(out, "--guidance", "apg")
    assert _stems(out) == stems


def test_rules_compose_with_interval_level_index_and_context_windows_in_a_jsonl_batch(tmp_path):
    lines = [{"prompt": PROMPT, "guidance": rule, "frames": "2x", "cfg_interval": [0, 0.75]} for rule in RULES]
    level = {"cfg_index": "level", "sampler": "dpmpp_2m", "grid": "logsnr"}
    lines.append({"prompt": PROMPT, "guidance": "mag:alpha=2", **level})
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert main(["generate", *SMALL, "--prompts-file", str(batch), "--out", str(tmp_path / "out")]) == 0
    metas = _meta(tmp_path / "out")
    assert len(metas) == len(lines)
    for rule in RULES:
        m = metas[rule]
        assert m["context_windows"] is not None and m["latent_shape"][1] == 6 and m["frames"] == 21
        lat = load_file(str(tmp_path / "out" / m["files"]["latents"]))["latents"]
        assert torch.isfinite(lat).all()
    assert metas["mag:alpha=2"]["sampling"]["guidance"]["type"] == "LevelGuidance"
    # the perturbed step (the second of 2) runs one perturbed call per window
    windows = len(metas["pag:end=1"]["context_windows"]["spans"])
    assert metas["pag:end=1"]["forwards"] == metas["slg:end=1"]["forwards"] == metas["mag"]["forwards"] + windows


def test_every_rule_through_the_api_changes_the_name(tmp_path):
    pipe = cogsample.Pipeline.load("builtin-trained", device="cpu")
    base = pipe(PROMPT, steps=2, progress=False)
    results = {rule: pipe(PROMPT, steps=2, guidance=rule, progress=False) for rule in RULES}
    stems = {r.stem for r in results.values()}
    assert len(stems) == len(RULES) and base.stem not in stems
    assert not any(torch.equal(r.latents, base.latents) for r in results.values())
    files = results["apg"].save(tmp_path)
    assert files["video"].name.startswith(results["apg"].stem)


@pytest.mark.parametrize(
    "guidance, match",
    [
        ("apg:bogus=1", "unknown parameter 'bogus'; apg takes: eta, momentum, norm_threshold, schedule"),
        ("nope", "got 'nope' (or a combine rule RULE[:key=value,...] with RULE one of cfg-zero-star, apg, tangential"),
        ("dynamic:eta=1", "--guidance dynamic takes no parameters"),
        ("apg:schedule=ramp", "schedule must be dynamic or constant"),
        ("fdg:levels=3", "fdg levels=3 halves the 8x12 latent 2 times"),
        ("slg:layers=4", "layers 4 are not blocks of this network: it has 4 (indices 0 to 3) (model 'builtin-trained"),
        ("pag:layers=a", "pag: layers must be block indices joined by + or a range a-b"),
    ],
)
def test_bad_rules_are_refused_before_any_weight_loads(tmp_path, capsys, monkeypatch, guidance, match):
    from cogsample.models import trained

    monkeypatch.setattr(trained.TrainedModel, "__init__", lambda *a, **k: pytest.fail("weights loaded"))
    assert main(["generate", *SMALL, "--prompt", PROMPT, "--out", str(tmp_path), "--guidance", guidance]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, match",
    [
        (["--model", "builtin", "--guidance", "pag"], "model 'builtin' has no transformer blocks"),
        (["--guidance", "slg", "--cache", "first-block"], "--guidance slg with --cache first-block: a step cache"),
    ],
)
def test_perturbed_rules_are_refused_where_they_cannot_run(tmp_path, capsys, args, match):
    assert main(["generate", *SMALL, "--prompt", PROMPT, "--out", str(tmp_path), *args]) == 2
    assert match in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cfg_parallel_runs_every_rule_as_one_process_does(tmp_path):
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"prompt": PROMPT, "guidance": r}) + "\n" for r in ACTIVE))
    args = ["generate", *SMALL, "--prompts-file", str(batch)]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    cmd = torchrun(2, "-m", "cogsample", *args, "--out", str(tmp_path / "two"), "--parallel", "cfg=2")
    rc, _, err = run_bounded(cmd, timeout=240)
    assert rc == 0, err[-3000:]
    assert _stems(tmp_path / "two") == _stems(tmp_path / "one")
    for lat in (tmp_path / "one").glob("*.safetensors"):
        # both ranks combine the gathered branches: APG's momentum and every rule as in one process
        # (the trained transformer on one row or two: equal up to rounding)
        a, b = (load_file(str(d / lat.name))["latents"] for d in (tmp_path / "one", tmp_path / "two"))
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_the_header_names_the_rule_beside_the_scale_schedule(tmp_path, capsys):
    assert main(["generate", *SMALL[:-1], "--prompt", PROMPT, "--out", str(tmp_path), "--guidance", "mag"]) == 0
    assert "DynamicCFG + mag, profile sat" in capsys.readouterr().err
