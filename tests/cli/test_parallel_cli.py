"""``cogsample generate --parallel`` on the built-in model, for real under torchrun (gloo): CFG
parallel gives one process's bytes, a world of several video groups shares the batch, a rerun
resumes, and what cannot run is refused before any work."""

import json
import sys

import pytest
from processes import run_bounded, torchrun

SIZE = ["--frames", "17", "--height", "96", "--width", "128", "--steps", "10"]
BATCH = [
    {"prompt": "a red ball bouncing", "seed": 7},
    {"prompt": "a yellow square rotating", "fast": True},
    {"prompt": "a green triangle sliding", "steps": 8, "cfg_interval": [0.4, 1]},
    {"prompt": "a purple circle growing", "guidance": "none"},
]


@pytest.fixture
def batch(tmp_path):
    f = tmp_path / "batch.jsonl"
    f.write_text("".join(json.dumps(e) + "\n" for e in BATCH))
    return f


def _args(*args):
    return ["generate", *SIZE, "--quiet", *args]


def _generate(*args):
    return [sys.executable, "-m", "cogsample", *_args(*args)]


def _files(out):
    return {p.name: p.read_bytes() for p in out.iterdir() if not p.name.endswith(".json")}


@pytest.fixture
def reference(tmp_path, batch):
    out = tmp_path / "single"
    rc, stdout, err = run_bounded(_generate("--prompts-file", str(batch), "--out", str(out)))
    assert rc == 0, err
    return out, stdout


@pytest.mark.parametrize("ranks", [2, 4])
def test_cfg_parallel_gives_one_process_bytes(tmp_path, batch, reference, ranks):
    ref, ref_paths = reference
    out = tmp_path / f"par{ranks}"
    cmd = torchrun(ranks, "-m", "cogsample", *_args("--prompts-file", str(batch), "--out", str(out)))
    rc, stdout, err = run_bounded([*cmd, "--parallel", "cfg=2"])
    assert rc == 0, err[-3000:]
    # the exact model's network works row by row: the same bits, mp4 bytes included
    assert _files(out) == _files(ref)
    assert sorted(stdout.replace(str(out), "").split()) == sorted(ref_paths.replace(str(ref), "").split())
    groups = {}
    for meta in out.glob("*.json"):
        m = json.loads(meta.read_text())
        assert m["parallel"] == {"cfg": 2, "ulysses": 1} and m["world_size"] == ranks
        groups[m["prompt"]] = m["video_group"]
    # two video groups of two ranks (4 ranks) share the batch: group g makes videos g, g + 2
    assert groups == {e["prompt"]: k % (ranks // 2) for k, e in enumerate(BATCH)}
    # a rerun finds every video finished and prints the paths again
    rc, again, err = run_bounded([*cmd, "--parallel", "cfg=2"])
    assert rc == 0 and sorted(again.split()) == sorted(stdout.split()), err[-3000:]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--parallel", "cfg=2"], "makes each video on 2 processes: run it as torchrun --nproc-per-node 2"),
        (["--parallel", "cfg=3"], "cfg must be 1 or 2"),
        (["--parallel", "cfg=2", "--ray"], "does not go with --ray"),
    ],
)
def test_what_cannot_run_is_refused_first(tmp_path, args, match):
    rc, stdout, err = run_bounded(_generate("--prompt", "a red ball", "--out", str(tmp_path / "o"), *args))
    assert rc == 2 and match in err and stdout == "", err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_ulysses_needs_a_transformer():
    from cogsample.models import inspect
    from cogsample.pipeline.pipeline import check_parallel
    from cogsample.sampling.parallel import ParallelConfig

    check_parallel(ParallelConfig(2, 1), inspect("builtin"))
    with pytest.raises(ValueError, match=r"has none .*use --parallel cfg=2"):
        check_parallel(ParallelConfig(1, 2), inspect("builtin"))
    check_parallel(ParallelConfig(2, 3), inspect("builtin-trained"))  # 6 heads
    with pytest.raises(ValueError, match="6 attention heads, which must divide over the ranks"):
        check_parallel(ParallelConfig(2, 4), inspect("builtin-trained"))


def test_a_world_that_does_not_split_into_groups_is_refused(tmp_path):
    cmd = torchrun(2, "-m", "cogsample", *_args("--prompt", "a red ball", "--out", str(tmp_path / "o")))
    rc, _, err = run_bounded([*cmd, "--parallel", "cfg=2,ulysses=2"])
    assert rc != 0 and "needs 4 processes per video (or a multiple), but WORLD_SIZE is 2" in err


def test_ctrl_c_stops_the_group_and_a_rerun_resumes(tmp_path, batch):
    """SIGINT to the whole foreground group (what Ctrl-C does) once the first video is out: one
    report from the leader, no temporary file left, and the rerun makes the rest as one process."""
    import os
    import re
    import signal

    from processes import started

    slow = ["generate", "--frames", "9", "--height", "64", "--width", "96", "--steps", "990", "--quiet"]
    ref = tmp_path / "single"
    rc, _, err = run_bounded(
        [sys.executable, "-m", "cogsample", *slow, "--prompts-file", str(batch), "--out", str(ref)]
    )
    assert rc == 0, err
    out = tmp_path / "par"
    cmd = torchrun(2, "-m", "cogsample", *slow, "--prompts-file", str(batch), "--out", str(out), "--parallel", "cfg=2")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1"}
    with started(cmd, env=env) as proc:
        first = proc.stdout.readline()
        assert first.strip().endswith(".mp4"), proc.stderr.read()[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    reports = re.findall(r"interrupted: (\d) of (\d) videos finished", stderr)
    assert len(reports) == 1 and int(reports[0][0]) < int(reports[0][1]) == len(BATCH), stderr[-3000:]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]
    rc, _, err = run_bounded([*cmd])
    assert rc == 0, err[-3000:]
    assert _files(out) == _files(ref)


def test_ulysses_on_the_trained_model_equals_one_process(tmp_path):
    pytest.importorskip("diffusers")
    from safetensors.torch import load_file

    args = ["generate", "--model", "builtin-trained", "--prompt", "a red ball bouncing on a black background"]
    args += ["--steps", "8", "--quiet"]
    single, par = tmp_path / "single", tmp_path / "par"
    rc, _, err = run_bounded([sys.executable, "-m", "cogsample", *args, "--out", str(single)])
    assert rc == 0, err
    cmd = torchrun(4, "-m", "cogsample", *args, "--out", str(par), "--parallel", "cfg=2,ulysses=2")
    rc, _, err = run_bounded(cmd)
    assert rc == 0, err[-3000:]
    (a,) = single.glob("*.latents.safetensors")
    b = par / a.name
    x, y = load_file(str(a))["latents"], load_file(str(b))["latents"]
    # attention sharded over ranks sums in another order: float32 rounding over 4 blocks x 8 steps
    assert (x - y).abs().max() <= 1e-4 * max(1.0, x.abs().max().item())


def test_a_bad_request_under_torchrun_is_one_line_and_the_root_cause(tmp_path):
    cmd = torchrun(2, "-m", "cogsample", *_args("--prompt", "a red ball", "--out", str(tmp_path / "o")))
    rc, stdout, err = run_bounded([*cmd, "--parallel", "ulysses=2"], timeout=60)
    line = (
        "cogsample generate: error: --parallel ulysses=2 shards a transformer's attention over ranks; model "
        "'builtin' has none (its network is exact): use --parallel cfg=2"
    )
    # rank 0 alone says it; torchrun's summary names it as the root cause
    assert rc != 0 and stdout == "" and [ln for ln in err.splitlines() if ln.startswith("cogsample generate")] == [line]
    root = err.split("Root Cause (first observed failure):", 1)[1]
    assert f"traceback : {line}" in root and "To enable traceback" not in err
    assert not (tmp_path / "o").exists()
