"""The Python entry point: ``cogsample.Pipeline.load(...)`` and ``pipe(prompt, **options)``."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cogsample
from cogsample.cli.main import main

SMALL = {"frames": 9, "height": 64, "width": 96, "steps": 6}


@pytest.fixture(scope="module")
def pipe():
    return cogsample.Pipeline.load("builtin", device="cpu")


def test_a_call_returns_frames_and_latents_and_writes_nothing(pipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = pipe("a red ball bouncing", seed=3, **SMALL)
    assert r.frames.shape == (9, 64, 96, 3) and r.frames.dtype == np.uint8
    assert r.latents.shape == (1, 3, 16, 8, 12) and r.video.shape == (9, 3, 64, 96)
    assert list(tmp_path.iterdir()) == []  # no out folder, no files


def test_the_entry_point_equals_the_cli(pipe, tmp_path):
    opts = {"seed": 5, "scale": 4.0, **SMALL}
    r = pipe("a blue square sliding", **opts)
    args = [f"--{k}={v}" for k, v in opts.items()]
    assert main(["generate", "--quiet", "--prompt", "a blue square sliding", *args, "--out", str(tmp_path)]) == 0
    (latents,) = tmp_path.glob("*.latents.safetensors")
    assert latents.name == f"{r.stem}.latents.safetensors"
    assert torch.equal(load_file(str(latents))["latents"], r.latents)
    import av

    with av.open(str(tmp_path / f"{r.stem}.mp4")) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == r.frames.shape[0]
    # and saving the in-memory result gives the CLI's file, byte for byte
    files = r.save(tmp_path / "saved")
    assert files["video"].read_bytes() == (tmp_path / f"{r.stem}.mp4").read_bytes()


def test_fast_and_per_call_options(pipe):
    a = pipe("a green triangle", fast=True, **SMALL)
    s = a.plan.sampling
    # --fast's sampler, grid and guidance by level; the call's own step count is kept
    assert (s.sampler, s.steps, s.schedule.spacing) == ("dpmpp_2m", 6, "logsnr")
    assert type(s.guidance).__name__ == "LevelGuidance"


def test_process_options_belong_to_load(pipe):
    with pytest.raises(ValueError, match=r"model is fixed when the pipeline is loaded"):
        pipe("x", model="builtin-i2v")
    with pytest.raises(ValueError, match=r"unknown option\(s\) stpes"):
        pipe("x", stpes=4)
    with pytest.raises(ValueError, match="profile must be one of"):
        cogsample.Pipeline.load("builtin", profile="comfy")


def test_an_i2v_call_takes_a_pil_image_or_a_path(tmp_path):
    pipe = cogsample.Pipeline.load("builtin-i2v", device="cpu")
    img = Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8))
    img.save(tmp_path / "first.png")
    a = pipe("a red ball", image=img, **SMALL)
    b = pipe("a red ball", image=tmp_path / "first.png", **SMALL)
    assert torch.equal(a.latents, b.latents) and a.stem == b.stem


def test_readme_python_entry_point_example_runs(tmp_path, monkeypatch):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "Pipeline.load" in c)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["result"].frames.shape == (25, 240, 368, 3)
    assert len(list((tmp_path / "runs").iterdir())) == 4


def test_a_call_calls_back_once_per_step_and_shows_progress_on_the_given_stream(pipe):
    import io

    seen = []

    def callback(event, latents, denoised):
        seen.append((event.step, event.steps, event.timestep, event.sigma, latents.shape, denoised.shape))

    stream = io.StringIO()
    r = pipe("a red ball bouncing", callback=callback, progress=stream, **SMALL)
    assert [s[:2] for s in seen] == [(i, 6) for i in range(6)]
    assert all(s[4] == s[5] == r.latents.shape for s in seen)
    assert seen[0][3] > seen[-1][3] > 0 and seen[0][2] == 999  # noise levels fall
    text = stream.getvalue()
    assert "video 1/1 step 6/6 t=" in text and "step/s" in text  # a log line per 10% (not a terminal)
    b = pipe("a red ball bouncing", progress=False, **SMALL)  # the same video, shown or not
    assert torch.equal(b.latents, r.latents)


def test_progress_is_on_by_default_on_stderr_and_a_callback_can_stop_the_call(pipe, capsys):
    pipe("a red ball", **SMALL)
    assert "step 6/6" in capsys.readouterr().err

    class Stop(Exception):
        pass

    def stop(event, latents, denoised):
        if event.step == 2:
            raise Stop

    with pytest.raises(Stop):
        pipe("a red ball", progress=False, callback=stop, **SMALL)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="progress must be True, False or a writable stream, got int"):
        pipe("a red ball", progress=3, **SMALL)
