"""``cogsample bench --quick``: the JSON's structure and finiteness, the plots, the table, the
preset rule, and the quality metrics on samples whose answer is known (not the benchmark's
figures themselves)."""

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
    assert main(["bench", "--quick", "--out", str(out), "--quiet", "--sections", "presets,options"]) == 0
    return out, json.loads((out / "bench.json").read_text())


def test_quick_bench_json_structure_and_finite_figures(quick_run):
    _out, res = quick_run
    assert res["size"] == "quick" and res["machine"]["cores"] >= 1
    assert all(math.isfinite(v) for v in _walk_numbers(res))
    p = res["presets"]
    assert p["definition"] == "reference6" and set(p["solver"]) == {"builtin", "builtin-trained", "family-exact"}
    for runs in p["solver"].values():
        for m in runs:
            assert m["reference"]["forwards"] == 100 and m["limit_steps"] == 40
            assert set(m["limit_check"]) == {"ode", "sde"}
            for r in [m["reference"], *m["rows"]]:
                lo, mean, hi = r["distance"][1], r["distance"][0], r["distance"][2]
                assert 0 <= lo <= mean <= hi and r["forwards"] >= 2 * r.get("steps", 1)
                assert 0 <= r["coverage"]["reached"] <= 1 and 0 <= r["coverage"]["mode_tv"] <= 1
    ref = p["truth"]["reference"]
    assert ref["forwards"] == 100 and ref["samples"] == len(__import__("cogsample.bench.truth").bench.truth.CAPTIONS)
    for attr in ("color", "shape", "motion", "background", "realism"):
        assert ref[attr][1] <= ref[attr][0] <= ref[attr][2]
    assert set(res["measured"]) == {"presets", "options"}
    rows = res["options"]["builtin"]
    assert {r["option"] for r in rows} >= {"guidance interval [0.4, 1)", "skip uncond where scale == 1"}
    for r in rows:
        assert r["forwards"] <= r["base_forwards"] and r["time_speedup"] > 0 and r["latent_rel_l2"] >= 0


def test_quick_bench_writes_png_plots(quick_run):
    out, res = quick_run
    path = out / res["plots"]["distance"].rsplit("/", 1)[-1]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp")) and not list(out.glob("presets/.*.tmp"))


def test_a_second_run_reuses_the_stored_measurements_and_keeps_other_sections(quick_run, monkeypatch):
    """The presets section resumes from ``out/presets/``: nothing is sampled again."""
    out, res = quick_run
    monkeypatch.setattr("cogsample.bench.solver.measure", lambda *a, **k: pytest.fail("measured again"))
    monkeypatch.setattr("cogsample.bench.presets.measure", lambda *a, **k: pytest.fail("measured again"))
    monkeypatch.setattr("cogsample.bench.presets.score_captions", lambda *a, **k: res["presets"]["truth"]["reference"])
    assert main(["bench", "--quick", "--out", str(out), "--quiet", "--sections", "presets"]) == 0
    again = json.loads((out / "bench.json").read_text())
    assert again["presets"]["solver"] == res["presets"]["solver"] and again["options"] == res["options"]


def test_bench_rejects_bad_sections(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path / "b"), "--sections", "presets,fps"]) == 2
    sections = "presets,options,speed,cpu_2b,long_video,quantize"
    want = f"--sections must be a comma-separated subset of {sections}, got 'presets,fps'"
    assert want in capsys.readouterr().err
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


def _measured(ref, rows):
    """One model's seed-set measurement: the reference's distance and ``(solver, steps, fwd, d)`` rows."""
    rows = [{"solver": s, "steps": n, "forwards": f, "distance": [d, d, d]} for s, n, f, d in rows]
    return {"reference": {"distance": [ref, ref, ref]}, "rows": rows}


def test_first_holding_needs_that_step_count_and_every_costlier_one():
    from cogsample.bench.presets import first_holding

    m = _measured(
        1.0, [("x", 4, 8, 3.0), ("x", 8, 16, 0.9), ("x", 10, 20, 1.2), ("x", 12, 24, 0.8), ("x", 16, 32, 0.5)]
    )
    assert first_holding(m["rows"], 1.0, "x")["steps"] == 12  # 8 holds but 10 does not
    assert first_holding(m["rows"], 0.1, "x") is None and first_holding(m["rows"], 1.0, "y") is None


def test_the_choice_holds_on_every_model_and_seed_set_and_is_the_cheapest():
    from cogsample.bench.presets import choose
    from cogsample.bench.solver import Solver

    a, b = Solver("vpode_dpmpp_2m"), Solver("video_ddim")

    def rows(a8, a12, b8, b12):
        return [(a.name, 8, 16, a8), (a.name, 12, 24, a12), (b.name, 8, 16, b8), (b.name, 12, 25, b12)]

    runs = {
        "one": [_measured(1.0, rows(0.5, 0.5, 2.0, 0.9)), _measured(1.0, rows(1.5, 0.5, 0.5, 0.9))],
        "two": [_measured(2.0, rows(1.0, 1.0, 1.0, 1.0))],
    }
    ranked = choose(runs, (a, b))
    assert [(o["solver"], o["steps"], o["forwards"]) for o in ranked] == [(a.name, 12, 24), (b.name, 12, 25)]
    runs["two"][0]["rows"][1]["distance"] = [3.0] * 3  # a fails at 12 on model two: only b is left
    assert [o["solver"] for o in choose(runs, (a, b))] == [b.name]


def test_keeping_the_prompt_means_every_attribute_within_the_reference_interval():
    from cogsample.bench.presets import keeps_prompt

    ref = {a: [0.8, 0.7, 0.9] for a in ("color", "shape", "motion", "background")}
    assert keeps_prompt({a: [0.7, 0.6, 0.8] for a in ref}, ref)
    assert not keeps_prompt({**ref, "shape": [0.69, 0.6, 0.8]}, ref)


def test_w2_matches_samples_within_a_prompt_and_bootstrap_brackets_the_mean():
    from cogsample.bench.solver import bootstrap, w2

    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    swapped = torch.tensor([[1.0], [0.0], [11.0], [10.0]])
    assert w2(x, swapped, [0, 0, 1, 1], 1.0) == [0.0, 0.0, 0.0]  # a swap within a prompt costs nothing
    across = torch.tensor([[10.0], [1.0], [0.0], [11.0]])
    assert w2(x, across, [0, 0, 1, 1], 1.0)[0] == pytest.approx(math.sqrt((1 + 81 + 100 + 0) / 4))  # best matching
    mean, lo, hi = bootstrap(torch.arange(100.0))
    assert lo < mean == 49.5 < hi


def test_the_bench_scores_the_fast_flag_the_cli_runs():
    """The bench's ``--fast`` candidate is the configuration ``--fast`` really runs."""
    from cogsample.bench.quality import fast_candidate
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
