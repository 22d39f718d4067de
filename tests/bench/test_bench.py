"""``cogsample bench --quick``: the JSON's structure and finiteness, the plots, the table, and the
quality metrics on samples whose answer is known (not the benchmark's figures themselves)."""

import json
import math

import pytest
import torch

from cogsample.bench import quality as q
from cogsample.bench.suite import _finite
from cogsample.cli.main import main


def _walk_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--quick", "--out", str(out), "--quiet", "--sections", "quality,options"]) == 0
    return out, json.loads((out / "bench.json").read_text())


def test_quick_bench_json_structure_and_finite_figures(quick_run):
    _out, res = quick_run
    assert res["size"] == "quick" and res["machine"]["cores"] >= 1
    assert all(math.isfinite(v) for v in _walk_numbers(res))
    qual = res["quality"]
    assert {"setup", "reference", "results", "mode_tv_floor", "best"} <= set(qual)
    for r in [qual["reference"], *qual["results"]]:
        assert {"forwards", "kl", "mode_tv", "on_prompt", "loglik", "var_ratio", "steps"} <= set(r)
        assert 0 <= r["on_prompt"] <= 1 and 0 <= r["mode_tv"] <= 1 and r["kl"] >= 0 and r["forwards"] >= r["steps"]
    assert qual["reference"]["forwards"] == 100
    assert any("ode_error" in r for r in qual["results"])
    match = res["forwards_to_match_reference"]
    assert match is None or (match["forwards"] <= 100 and "sampler" in match["config"])
    rows = res["options"]["builtin"]
    assert {r["option"] for r in rows} >= {"guidance interval [0.4, 1)", "skip uncond where scale == 1"}
    for r in rows:
        assert r["forwards"] <= r["base_forwards"] and r["time_speedup"] > 0 and r["latent_rel_l2"] >= 0


def test_quick_bench_writes_png_plots(quick_run):
    out, res = quick_run
    for name in ("quality", "ode_error"):
        path = out / res["plots"][name].rsplit("/", 1)[-1]
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp"))


def test_bench_rejects_bad_sections(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path / "b"), "--sections", "quality,fps"]) == 2
    assert "--sections must be a comma-separated subset of quality,options,speed,long_video, got 'quality,fps'" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "b").exists()


def test_finite_finds_nan_and_inf_paths():
    assert _finite({"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": "x"}) == [".a[1]", ".b.c"]


def test_metrics_score_exact_samples_near_zero_kl_and_shrunk_samples_worse():
    env = q.Env.build(q.Setup(frames=5, height=32, width=48, seeds=8))
    gen = torch.Generator().manual_seed(0)
    # an exact sample: the allowed clip of each row's prompt (first allowed), plus tau noise
    rows = []
    for i in range(env.x_t.shape[0]):
        k = int(torch.isfinite(env.log_w[i]).nonzero()[0])
        rows.append(env.mu[k] + env.setup.tau * torch.randn(env.mu.shape[1], generator=gen, dtype=torch.float64))
    exact = torch.stack(rows).reshape(env.x_t.shape)
    m = q._metrics(env, exact)
    assert m["on_prompt"] == 1.0 and m["kl"] < 1e-3 and abs(m["var_ratio"] - 1) < 0.02
    mean_only = torch.stack([env.mu[int(torch.isfinite(env.log_w[i]).nonzero()[0])] for i in range(len(rows))])
    half = mean_only + 0.5 * (torch.stack(rows) - mean_only)
    worse = q._metrics(env, half.reshape(exact.shape))
    assert worse["kl"] > 0.3 and worse["var_ratio"] == pytest.approx(0.25, rel=0.05)
    # every sample on the first allowed clip: the mode balance is off for multi-clip prompts
    assert m["mode_tv"] >= 0.5
    # clip 1, a yellow square rotating: allowed by "a square" and "something rotating", not "a ball"
    off = q._metrics(env, torch.stack([env.mu[1]] * len(rows)).reshape(exact.shape))
    assert off["on_prompt"] == pytest.approx(2 / 3)


def test_matches_rule():
    ref = {"kl": 0.5, "mode_tv": 0.2, "on_prompt": 1.0}
    assert q.matches({"kl": 0.4, "mode_tv": 0.2, "on_prompt": 1.0}, ref)
    assert not q.matches({"kl": 0.6, "mode_tv": 0.1, "on_prompt": 1.0}, ref)
    assert not q.matches({"kl": 0.4, "mode_tv": 0.25, "on_prompt": 1.0}, ref)
    assert q.matches({"kl": 0.4, "mode_tv": 0.25, "on_prompt": 1.0}, ref, tv_floor=0.3)
    assert not q.matches({"kl": 0.4, "mode_tv": 0.1, "on_prompt": 0.9}, ref)


def test_quick_bench_scores_every_model_and_checks_fast(quick_run):
    _out, res = quick_run
    models = res["models"]
    assert set(models) == {"builtin", "builtin-trained", "family-exact"}
    assert any("trained" in k for k in models)
    for m in models.values():
        assert m["runs"][0]["reference"]["forwards"] == 100
        assert isinstance(m["fast_matches_reference"], bool)
        best = m["forwards_to_match_reference"]
        assert best is None or (best["forwards"] <= 100 and best == m["stable_matches"][0])
    assert models["family-exact"]["held_out"] and "guidance" not in models["family-exact"]
    for key in ("builtin", "builtin-trained"):
        assert set(models[key]["guidance"]) == {"scale 1", "scale 6"}
        assert models[key]["guidance"]["scale 6"]["forwards"] == 100
    # the trained model's samples are scored against its own data: the clip family at 9 x 64 x 96
    assert models["builtin-trained"]["setup"]["frames"] == 9 and models["builtin-trained"]["setup"]["samples"] == 6
    choice = res["fast_choice"]
    if choice is not None:
        assert set(choice["per_model"]) == {"builtin", "builtin-trained"}
        assert choice["steps"] == max(p["steps"] for p in choice["per_model"].values())


def _run(rows):
    """A run_quality result holding ``(candidate, steps, forwards, matches)`` rows."""
    return {"results": [{"candidate": c, "steps": n, "forwards": f, "matches": ok} for c, n, f, ok in rows]}


def test_stable_match_needs_every_larger_step_count_and_every_seed():
    a = _run([("x", 4, 7, False), ("x", 8, 15, True), ("x", 10, 19, False), ("x", 15, 29, True), ("x", 20, 39, True)])
    assert q.stable_match([a], "x") == {"candidate": "x", "steps": 15, "forwards": 29}
    b = _run([("x", 15, 30, True), ("x", 20, 39, True)])
    assert q.stable_match([a, b], "x") == {"candidate": "x", "steps": 15, "forwards": 30}
    c = _run([("x", 15, 29, True), ("x", 20, 39, False)])
    assert q.stable_match([a, c], "x") is None
    assert q.stable_match([a], "y") is None


def test_fast_choice_is_the_cheapest_match_on_every_swept_model():
    from cogsample.bench.suite import choose_fast

    m1 = _run([("A", 8, 13, True), ("A", 12, 19, True), ("B", 8, 15, False), ("B", 10, 16, True), ("B", 12, 19, True)])
    m2 = _run([("A", 8, 13, False), ("A", 12, 19, True), ("B", 8, 15, False), ("B", 10, 16, True), ("B", 12, 19, True)])
    held = _run([("A", 8, 13, False)])  # held out: never part of the choice
    models = {"one": {"runs": [m1]}, "two": {"runs": [m2]}, "held": {"held_out": True, "runs": [held]}}
    choice = choose_fast(models)
    assert (choice["candidate"], choice["steps"], choice["forwards"]) == ("B", 10, 16)
    m2["results"][-1]["matches"] = False  # B fails at 12 on model two: A at 12 is the choice
    assert (choose_fast(models)["candidate"], choose_fast(models)["steps"]) == ("A", 12)


def test_the_bench_scores_the_fast_flag_the_cli_runs():
    """``fast_matches_reference`` is about the configuration ``--fast`` really runs."""
    from cogsample.bench.suite import fast_candidate
    from cogsample.jobs.batch import batch_options
    from cogsample.pipeline.options import GenerateOptions, apply_speedups, inspect_model, resolve_sampling

    cand, steps = fast_candidate()
    for model in ("builtin", "builtin-trained"):
        ((_, opts),) = batch_options(
            GenerateOptions(prompts=("x",), model=model), [("", {"prompt": "a ball"})], fast=True
        )
        info = inspect_model(model)
        cli = apply_speedups(resolve_sampling(opts, info), opts, info)
        assert cli.to_dict() == cand.config(steps).to_dict()
