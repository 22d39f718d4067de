"""The bench's parallel row (:mod:`cogsample.bench.parallel`): a quick run launches torchrun for
each mode and reports a finite time per step, the speed-up and the distance from one rank."""

import math

import pytest

pytest.importorskip("diffusers")

from cogsample.bench.parallel import QUICK_MODES, parallel_speed


def test_quick_parallel_rows():
    result = parallel_speed(quick=True)
    rows = result["rows"]
    assert [(r["ranks"], r["parallel"]) for r in rows] == QUICK_MODES
    assert rows[0]["speedup"] == 1.0 and rows[0]["max_rel_diff"] == 0.0
    for r in rows:
        assert r["ms_per_step"]["median"] >= r["ms_per_step"]["min"] > 0 and math.isfinite(r["speedup"])
        assert r["max_rel_diff"] <= 1e-5, r  # the same video, within rounding
    assert result["setup"]["steps"] == 2 and result["setup"]["device"] == "cpu"
