"""Parallel sampling's core (:mod:`cogsample.sampling.parallel`): the layout, and, for real under torchrun
with gloo on 2 and 4 ranks, its collectives, CFG parallel in the sampler and Ulysses attention on
tiny CogVideoX transformers (T2V, 2B, I2V, 1.5 T2V and I2V; 4 heads, 18 text tokens), each against
one process's result."""

import json

import pytest
from processes import run_bounded, torchrun

from cogsample.sampling.parallel import ParallelConfig, check_world, shard_sizes

WORKER = "tests/workers/parallel_core.py"


def test_parse_and_degree():
    assert ParallelConfig.parse("cfg=2,ulysses=4") == ParallelConfig(2, 4)
    assert ParallelConfig.parse(" ulysses = 2 ").degree == 2 and ParallelConfig.parse("cfg=2").degree == 2
    assert str(ParallelConfig(2, 2)) == "cfg=2,ulysses=2"


@pytest.mark.parametrize(
    "text, match",
    [
        ("cfg=3", "cfg must be 1 or 2"),
        ("ulysses=0", "ulysses must be an integer >= 1"),
        ("tensor=2", "expected a comma-separated list"),
        ("cfg=2,cfg=2", "expected a comma-separated list"),
        ("cfg2", "expected a comma-separated list"),
    ],
)
def test_bad_specs_are_named(text, match):
    with pytest.raises(ValueError, match=match):
        ParallelConfig.parse(text)


def test_shards_cover_the_sequence_in_order():
    assert shard_sizes(18, 4) == [5, 5, 4, 4] and shard_sizes(8, 2) == [4, 4] and sum(shard_sizes(17550, 8)) == 17550


def test_world_must_split_into_groups():
    check_world(ParallelConfig(2, 2), 8)
    with pytest.raises(ValueError, match=r"needs 4 processes per video .* WORLD_SIZE is 2"):
        check_world(ParallelConfig(2, 2), 2)


@pytest.mark.parametrize("ranks", [2, 4])
def test_collectives_cfg_parallel_and_ulysses_equal_one_process(tmp_path, ranks):
    pytest.importorskip("diffusers")
    out = tmp_path / "results.json"
    rc, _, stderr = run_bounded(torchrun(ranks, WORKER, str(out)), timeout=240)
    assert rc == 0, stderr[-3000:]
    results = json.loads(out.read_text())
    kinds = {k.split("/")[0] for k in results}
    assert kinds == {
        *("sequence_to_heads", "heads_to_sequence", "all_gather_heads", "gather_sequence", "ulysses", "cfg"),
        "windows",
    }
    assert sum(k.startswith("cfg/") for k in results) == 30 and sum(k.startswith("ulysses/") for k in results) == 10
    assert sum(k.startswith("windows/cfg/") for k in results) == 2
    assert sum(k.startswith("windows/ulysses/") for k in results) == 5
    # the collectives move bits and CFG parallel runs a row-wise network on its own rows: exact,
    # context windows included
    assert {k: v for k, v in results.items() if v != 0 and "ulysses/" not in k} == {}
    # Ulysses: the projections see fewer rows, the attention fewer heads; MKL may round those
    # differently (measured: 0 by default, up to 4.8e-7 of the output's scale with MKL_CBWR=COMPATIBLE)
    assert {k: v for k, v in results.items() if "ulysses/" in k and v > 1e-5} == {}
    assert all(v == 0 for k, v in results.items() if k.endswith("/detached"))
