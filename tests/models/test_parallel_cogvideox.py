"""One video on several ranks with a CogVideoX transformer, for real under torchrun (gloo): CFG
parallel, Ulysses 2 and 4, and both, on tiny T2V, I2V (learned positions) and 1.5 I2V (temporal
patches, ``ofs``) folders with 4 heads and 18 text tokens (not a multiple of 4), each against the
same generation in one process; then ``cogsample generate --parallel`` end to end."""

import json
import sys

import pytest
from processes import run_bounded, torchrun
from safetensors.torch import load_file

from cogsample.models.tiny import TinySize, build_tiny_folder

WORKER = "tests/workers/parallel_pipeline.py"
KINDS = ("t2v", "i2v", "i2v-1.5")
SIZE = ["--frames", "9", "--height", "32", "--width", "48", "--steps", "6", "--device", "cpu"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("parallel_folders")
    size = TinySize(num_layers=2, num_heads=4, text_len=18)
    return {k: build_tiny_folder(root / k, k, seed=i + 5, size=size) for i, k in enumerate(KINDS)}


@pytest.mark.parametrize("ranks", [2, 4])
def test_every_mode_equals_one_process(folders, tmp_path, ranks):
    out = tmp_path / "results.json"
    rc, _, stderr = run_bounded(torchrun(ranks, WORKER, str(out), *(f"{k}={v}" for k, v in folders.items())), 300)
    assert rc == 0, stderr[-3000:]
    results = json.loads(out.read_text())
    modes = ["cfg=2,ulysses=1", "cfg=1,ulysses=2"] if ranks == 2 else ["cfg=1,ulysses=4", "cfg=2,ulysses=2"]
    runs = {"fast", "pag"}
    want = {f"{k}/{m}/{r}" for k in KINDS for m in modes for r in runs}
    want |= {f"{k}/{m}/pab-cache" for k in KINDS for m in modes if m.startswith("cfg=1")}
    assert set(results) == want
    for case, r in results.items():
        if case.split("/")[1].startswith("cfg=1"):
            # Ulysses alone: the arithmetic per token and head is one process's (measured: identical)
            assert r["latents"] <= 1e-5 and r["frames"] <= 1, case
        else:
            # CFG parallel runs the transformer on B rows instead of 2B, whose matrix products may
            # round otherwise: measured up to 6.2e-7 of the latents' scale, one grey level in frames
            assert r["latents"] <= 1e-5 and r["frames"] <= 1, case


def _latents(out):
    files = sorted(out.glob("*.latents.safetensors"))
    return {f.name: load_file(str(f))["latents"] for f in files}


def test_generate_parallel_cli_writes_on_rank_zero_and_matches(folders, tmp_path):
    model = str(folders["t2v"])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a cat runs on the grass"}\n{"prompt": "a red car", "fast": true}\n')
    single, par = tmp_path / "single", tmp_path / "par"
    args = ["generate", "--model", model, *SIZE, "--prompts-file", str(prompts), "--quiet"]
    rc, want_paths, err = run_bounded([sys.executable, "-m", "cogsample", *args, "--out", str(single)], 300)
    assert rc == 0, err
    cmd = torchrun(4, "-m", "cogsample", *args, "--out", str(par), "--parallel", "cfg=2,ulysses=2")
    rc, stdout, err = run_bounded(cmd, 300)
    assert rc == 0, err[-3000:]
    # the leader alone prints (the paths, once each) and writes: the same names as one process
    assert stdout.replace(str(par), "") == want_paths.replace(str(single), "")
    assert sorted(p.name for p in par.iterdir()) == sorted(p.name for p in single.iterdir())
    a, b = _latents(single), _latents(par)
    for name in a:
        assert (a[name] - b[name]).abs().max() <= 1e-5 * max(1.0, a[name].abs().max().item()), name
    meta = json.loads(next(par.glob("a-cat*.json")).read_text())
    assert meta["engine"] == "torchrun" and meta["world_size"] == 4 and meta["rank"] == 0
    assert meta["parallel"] == {"cfg": 2, "ulysses": 2} and meta["ranks"] == [0, 1, 2, 3]


def test_ulysses_that_does_not_divide_the_heads_is_refused_before_loading(folders):
    from cogsample.models import inspect
    from cogsample.pipeline.pipeline import check_parallel
    from cogsample.sampling.parallel import ParallelConfig

    info = inspect(str(folders["t2v"]))
    check_parallel(ParallelConfig(2, 4), info)
    with pytest.raises(ValueError, match=r"has 4 attention heads.*allowed: ulysses = 2, 4"):
        check_parallel(ParallelConfig(1, 3), info)
