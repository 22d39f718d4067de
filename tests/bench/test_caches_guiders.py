"""The cache and guidance-rule benches: a short run writes a resumable json whose table and plot
are made, and the committed runs' figures are complete and finite."""

import json
import math
from pathlib import Path

from cogsample.bench import caches
from cogsample.bench.plots import plot_caches, plot_guiders

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "docs" / "bench"


def test_a_short_cache_run_resumes_and_gives_its_table(tmp_path):
    out = tmp_path / "caches.json"
    args = [str(out), "--captions", "1", "--steps", "3", "--kinds", "first-block"]
    assert caches.main(args) == 0
    rows = json.loads(out.read_text())["rows"]
    assert list(rows) == ["none", *caches.CONFIGS["first-block"]]
    assert rows["none"]["blocks"] == 3 * 4 and rows["none"]["latent_rel_l2"] == 0.0
    first = out.read_text()
    assert caches.main(args) == 0 and out.read_text() == first  # resumed: nothing run again
    assert caches.table(json.loads(first)).count("\n") == 2 + len(rows)


def test_the_committed_runs_are_complete_and_plot(tmp_path):
    runs = {name: json.loads((BENCH / f"{name}.json").read_text()) for name in ("caches", "caches-fast")}
    for data in runs.values():
        for row in data["rows"].values():
            assert all(math.isfinite(v) for v in row["realism"]) and row["blocks"] > 0
    assert plot_caches(runs, tmp_path / "caches.png").stat().st_size > 10_000
    guiders = json.loads((BENCH / "guiders.json").read_text())
    assert {r["rule"] for r in guiders["rows"].values()} >= {"cfg", "cfg-zero-star", "apg", "tangential", "fdg", "mag"}
    assert plot_guiders(guiders, tmp_path / "guiders.png").stat().st_size > 10_000
    w2 = json.loads((BENCH / "caches-fast-w2.json").read_text())["runs"]
    for run in w2.values():  # the table in docs/bench.md: --fast alone holds the preset rule
        assert run["rows"]["None"]["distance"][0] <= run["reference_default"][0]
