"""The long-video section's structure (not its figures): one tiny run (1 seed per prompt, 4 steps),
its keys, forwards growing with the windows, the true-sample row's scores, finiteness, the plot,
the recommendation rule and the section's place in ``run_bench``."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytest.importorskip("diffusers")

from cogsample.bench import long_video as lv
from cogsample.bench.suite import SECTIONS, _finite, run_bench, table

ROW_KEYS = {"config", "overlap", "noise_repeat", "windows", "forwards", "seconds", "on_clip", "within_clip"}
ROW_KEYS |= {"seam_agreement", "seam_gap"}


@pytest.fixture(scope="module")
def section() -> dict:
    """One tiny run on one thread: the batches are a few rows, so intra-op threads only add barriers,
    which stall for seconds when the cores are busy with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return lv.long_video(seeds=1, steps=4)
    finally:
        torch.set_num_threads(threads)


def _rows(run: dict) -> dict[str, dict]:
    return {r["config"]: r for r in run["rows"]}


def test_every_configuration_on_both_seed_sets(section) -> None:
    assert json.loads(json.dumps(section, allow_nan=False)) == section and not _finite(section)
    su = section["setup"]
    assert (su["frames"], su["latent_frames"], su["window"], su["samples"], su["steps"]) == (45, 12, 3, 3, 4)
    assert [run["seed"] for run in section["runs"]] == list(lv.SEED_SETS)
    names = ["data", "native", "whole"] + [f"overlap{o}{s}" for o in (0, 1, 2) for s in ("", "/noise_repeat")]
    for run in section["runs"]:
        assert [r["config"] for r in run["rows"]] == names
        for r in run["rows"]:
            assert set(r) == ROW_KEYS
            assert 0 <= r["on_clip"] <= 1 and math.isfinite(r["within_clip"]) and r["within_clip"] > 0
            assert r["seam_agreement"] is None or 0 <= r["seam_agreement"] <= 1
        rows = _rows(run)
        # the network evaluations grow with the windows: 1, 4, 6 and 10 per call, 2 branches, 4 steps
        fwd = [rows[n]["forwards"] for n in ("whole", "overlap0", "overlap1", "overlap2")]
        assert fwd == [8, 32, 48, 80] and rows["native"]["forwards"] == 8
        assert rows["overlap2/noise_repeat"]["forwards"] == rows["overlap2"]["forwards"]
        # true samples: on their clips, about tau away, every segment on the same long clip
        data = rows["data"]
        assert data["on_clip"] == 1.0 and abs(data["within_clip"] - 1) < 0.02 and data["seam_agreement"] == 1.0
        assert rows["native"]["seam_agreement"] is None
        for name, r in rows.items():
            overlapping = r["overlap"] not in (None, 0)
            assert (r["seam_gap"] is not None) == overlapping, name
            assert not overlapping or 0 < r["seam_gap"] < 2
    # the --fast variant: the same configurations, a deterministic sampler, fewer forwards
    fast = section["fast"]
    from cogsample.pipeline.options import FAST

    assert fast["sampler"].startswith(f"{FAST['sampler']}/") and fast["steps"] == 4
    for run, ref in zip(fast["runs"], section["runs"], strict=True):
        assert [r["config"] for r in run["rows"]] == names[2:]
        fwd = {r["config"]: r["forwards"] for r in run["rows"]}
        assert fwd["whole"] < fwd["overlap0"] < fwd["overlap1"] < fwd["overlap2"] <= _rows(ref)["overlap2"]["forwards"]
    rec = section["recommendation"]
    assert set(rec["holds"]["beats_whole"]) == set(names[3:])
    assert rec["rule"] == lv.RULE and rec["config"] in (None, *names[3:])
    assert set(rec["acceptable"]) <= set(names[3:]) and set(rec["noise_repeat"]) == {"0", "1", "2"}


def test_plot_is_written(section, tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from cogsample.bench.plots import plot_long_video

    path = plot_long_video(section, tmp_path / "long_video.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob("*.tmp"))


def test_figures_on_known_latents() -> None:
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 6 * 5, generator=gen, dtype=torch.float64)  # 4 clips of 6 frames, 5 values a frame
    log_w = torch.tensor([[0.0, 0.0, -math.inf, -math.inf]] * 2).log_softmax(1)
    x = (mu[[0, 2]] + 0.01 * torch.randn(2, 30, generator=gen, dtype=torch.float64)).view(2, 6, 5, 1, 1)
    f = lv.figures(x, mu, log_w, 0.01, segment=3)
    assert f["on_clip"] == 0.5 and f["within_clip"] == pytest.approx(1, abs=0.4) and f["seam_agreement"] == 1.0
    mixed = torch.cat([mu[0].view(6, 5)[:3], mu[1].view(6, 5)[3:]]).view(1, 6, 5, 1, 1)
    assert lv.figures(mixed, mu, log_w[:1], 0.01, segment=3)["seam_agreement"] == 0.0


def test_seam_gap_on_shared_frames() -> None:
    a = torch.ones(1, 3, 2)
    assert lv.seam_gap([(0, 3), (3, 6)], [a, a]) is None  # no shared frames
    assert lv.seam_gap([(0, 3), (2, 5)], [a, a]) == 0.0
    b = a.clone()
    b[:, 0] = -1  # its first frame is the frame it shares, opposite in sign
    assert lv.seam_gap([(0, 3), (2, 5)], [a, b]) == pytest.approx(2.0)


def _run(seed: int, **rows: tuple[float, float]) -> dict:
    """A run's rows: ``name=(on_clip, seam_agreement)``; overlap and forwards from the name
    (``o1``, ``o1_nr`` for ``o1/noise_repeat``, ...: overlap 1; ``whole``: none)."""
    out = []
    for name, (on_clip, agree) in rows.items():
        name = name.replace("_nr", "/noise_repeat")
        overlap = None if name == "whole" else int(name[1])
        out.append({"config": name, "overlap": overlap, "noise_repeat": name.endswith("/noise_repeat"),
                    "forwards": 100 if overlap is None else 100 * (overlap + 2), "on_clip": on_clip,
                    "within_clip": 6.0, "seam_agreement": agree})  # fmt: skip
    return {"seed": seed, "rows": out}


def test_recommendation_puts_the_prompt_first_then_the_seams_then_the_cost() -> None:
    # fmt: off
    runs = [_run(1, whole=(0.3, 0.1), o1=(0.95, 0.20), o1_nr=(0.80, 0.40), o2=(0.95, 0.30), o2_nr=(0.95, 0.21)),
            _run(2, whole=(0.3, 0.1), o1=(0.95, 0.20), o1_nr=(0.80, 0.40), o2=(0.95, 0.30), o2_nr=(0.95, 0.21))]
    # fmt: on
    # o1_nr has the best seams but shows the prompt less often (0.80, far below 0.95): out first;
    # o2 is then clearly the most coherent (one standard error at 400 pairs is ~0.023)
    rec = lv.recommend(runs, samples=200, pairs=200)
    assert rec["config"] == "o2" and rec["bars"]["on_clip"]["within"] == ["o1", "o2", "o2/noise_repeat"]
    assert rec["noise_repeat"]["1"] == {"raises_seam_agreement": True, "lowers_on_clip": True}
    # within noise of the most coherent: the cheaper one
    for run in runs:
        run["rows"][1]["seam_agreement"] = 0.29
    assert lv.recommend(runs, samples=200, pairs=200)["config"] == "o1"
    # a configuration below 'whole' on one run is out, whatever its figures elsewhere
    runs[1]["rows"][1]["on_clip"] = 0.2
    assert lv.recommend(runs, samples=200, pairs=200)["config"] == "o2"
    assert lv.recommend([_run(1, whole=(0.9, 0.1), o1=(0.8, 0.9), o1_nr=(0.8, 0.9))], 10, 10)["config"] is None


def test_the_recommendation_holds_at_every_costlier_overlap_of_a_variant() -> None:
    # fmt: off
    runs = [_run(1, whole=(0.5, 0.1), o0=(0.4, 0.0), o0_nr=(0.9, 0.0), o1=(0.9, 0.0), o1_nr=(0.9, 0.0),
                 o2=(0.9, 0.0), o2_nr=(0.4, 0.0))]
    # fmt: on
    got = lv.holds("o1", runs)
    assert got["holds"] is True and got["checked"] == ["o1", "o2"] and got["beats_whole"]["o0"] is False
    assert lv.holds("o1/noise_repeat", runs)["holds"] is False  # o2/noise_repeat is below whole
    assert lv.holds(None, runs)["holds"] is None


def test_run_bench_runs_the_section_alone(section, tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    assert "long_video" in SECTIONS
    seen = []
    monkeypatch.setattr(lv, "long_video", lambda quick=False, log=None: seen.append(quick) or section)
    res = run_bench(tmp_path, quick=True, sections=["long_video"])
    assert seen == [True] and res["long_video"] == section and "models" not in res
    assert (tmp_path / "long_video.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        json.loads((tmp_path / "bench.json").read_text())["long_video"]["recommendation"] == section["recommendation"]
    )
    assert "long video: 45 frames" in table(res) and "recommendation:" in table(res)
