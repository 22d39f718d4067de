"""Video to video (``--video PATH --strength S``): the ``diffusers`` profile against diffusers'
``CogVideoXVideoToVideoPipeline`` bit for bit, the ``sat`` profile's strength rule on the trained
built-in model, the checks before any weight loads, the CLI's files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from cogsample.cli.main import main
from cogsample.jobs import batch
from cogsample.models.videos import read_video
from cogsample.pipeline import pipeline
from cogsample.pipeline.pipeline import Pipeline
from cogsample.pipeline.planning import plan
from cogsample.sampling.schedules import DiffusersDDPM, TruncatedSchedule, ZeroSNRDDPM

from .tiny_cogvideox import SIZE, tiny_request

SMALL = {"frames": 9, "height": 64, "width": 96, "steps": 4}


def _frames(n: int, h: int = 40, w: int = 60, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    # a moving bright bar over a fixed random background: frames that differ
    out = []
    for i in range(n):
        a = base.copy()
        a[:, (4 * i) % w : (4 * i) % w + 6] = 255
        out.append(Image.fromarray(a))
    return out


def _write_mp4(path, frames: list[Image.Image], fps: int = 8) -> str:
    import av

    with av.open(str(path), "w") as f:
        s = f.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        for im in frames:
            f.mux(s.encode(av.VideoFrame.from_image(im)))
        f.mux(s.encode())
    return str(path)


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory) -> str:
    return _write_mp4(tmp_path_factory.mktemp("v2v") / "in.mp4", _frames(12, 64, 96))


@pytest.fixture(scope="module")
def trained() -> Pipeline:
    return Pipeline.load("builtin-trained", device="cpu")


# ----------------------------------------------------------------------------------------------
# the strength rules


def test_strength_rules_cut_the_grid():
    # sat: the last ceil(strength x steps) steps, the formulas see the whole run's count
    g = TruncatedSchedule(ZeroSNRDDPM(1.0), 0.35, "ceil").grid(10)
    assert g.timesteps == ZeroSNRDDPM(1.0).grid(10).timesteps[6:] and g.requested_steps == 10
    assert TruncatedSchedule(ZeroSNRDDPM(1.0), 0.7, "ceil").grid(10).num_steps == 7  # 0.7 x 10 is 7.000000000000001
    whole, full = TruncatedSchedule(ZeroSNRDDPM(1.0), 1.0, "ceil").grid(10), ZeroSNRDDPM(1.0).grid(10)
    assert torch.equal(whole.values, full.values) and whole.requested_steps is None
    # diffusers: int(steps x strength) steps from steps - init on; none kept is an error
    d = DiffusersDDPM()
    assert TruncatedSchedule(d, 0.5, "diffusers").grid(5).timesteps == d.grid(5).timesteps[3:]
    with pytest.raises(ValueError, match=r"strength 0.1 keeps no step of 5.*>= 0.2"):
        TruncatedSchedule(d, 0.1, "diffusers").grid(5)


# ----------------------------------------------------------------------------------------------
# the diffusers profile equals diffusers' own pipeline


@pytest.mark.parametrize(
    ("kind", "steps", "strength", "dynamic"),
    [("t2v", 5, 0.6, True), ("t2v-2b", 4, 1.0, False)],
)
def test_diffusers_profile_equals_video_to_video_pipeline(tiny_folders, tmp_path, kind, steps, strength, dynamic):
    from diffusers import CogVideoXVideoToVideoPipeline

    folder = tiny_folders[kind]
    frames = _frames(SIZE["frames"])  # 40 x 60: resized to 32 x 48 by both
    prompt = "a cat playing a piano"
    pipe = CogVideoXVideoToVideoPipeline.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    want = pipe(
        video=frames,
        prompt=prompt,
        negative_prompt="",
        height=SIZE["height"],
        width=SIZE["width"],
        num_inference_steps=steps,
        strength=strength,
        guidance_scale=6.0,
        use_dynamic_cfg=dynamic,
        generator=torch.Generator().manual_seed(7),
        output_type="latent",
        max_sequence_length=16,
    ).frames
    opts = tiny_request(
        folder,
        tmp_path,
        prompts=(prompt,),
        profile="diffusers",
        steps=steps,
        guidance="dynamic" if dynamic else "cfg",
        seed=7,
        video=frames,
        strength=strength,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (res,) = batch.generate(opts)
    assert res.latents.shape == want.shape
    assert torch.equal(res.latents, want), (res.latents - want).abs().max()
    meta = json.loads(res.files["meta"].read_text())
    assert meta["video"]["path"] is None and meta["video"]["steps_run"] == int(steps * strength)


# ----------------------------------------------------------------------------------------------
# the sat profile on the trained built-in model


def test_strength_one_is_text_to_video_and_small_strength_stays_close(trained, clip_mp4):
    kw = {**SMALL, "steps": 6, "seed": 3, "progress": False}
    t2v = trained("a red ball bouncing", **kw)
    full = trained("a red ball bouncing", video=clip_mp4, strength=1.0, **kw)
    # on the zero-terminal-SNR grid alpha is 0 at strength 1: x = eps, the text-to-video start, bit for bit
    assert torch.equal(full.latents, t2v.latents)
    clean = trained.model.encode_video(full.plan.video.pixels)
    rms = {
        s: float((trained("a red ball bouncing", video=clip_mp4, strength=s, **kw).latents - clean).pow(2).mean())
        ** 0.5
        for s in (0.1, 0.5)
    }
    far = float((t2v.latents - clean).pow(2).mean()) ** 0.5
    assert rms[0.1] < 0.5 * far and rms[0.1] < rms[0.5], (rms, far)


def test_an_i2v_model_takes_the_videos_first_frame(clip_mp4, tmp_path):
    p = plan(tiny_like("builtin-trained-i2v", tmp_path, video=clip_mp4, strength=0.5))
    assert p.image is not None and p.video is not None and p.image.size == (96, 64)
    assert p.sampling.grid().num_steps == 2


def tiny_like(model: str, tmp_path, **kw):
    from cogsample.pipeline.options import GenerateOptions

    base = {"prompts": ("a red ball bouncing",), "model": model, "device": "cpu", "out": str(tmp_path), **SMALL}
    return GenerateOptions(**{**base, **kw})


# ----------------------------------------------------------------------------------------------
# refused before any weight loads


def test_bad_inputs_are_refused_before_loading(tmp_path, clip_mp4, monkeypatch):
    monkeypatch.setattr(pipeline, "load_model", lambda *_a, **_k: pytest.fail("loaded"))
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"no video here")
    with pytest.raises(ValueError, match=r"video '.*not-a-video.mp4' cannot be read as a video"):
        plan(tiny_like("builtin-trained", tmp_path, video=str(bad)))
    with pytest.raises(ValueError, match=r"video '.*missing.mp4' does not exist"):
        plan(tiny_like("builtin-trained", tmp_path, video=str(tmp_path / "missing.mp4")))
    with pytest.raises(ValueError, match=r"in.mp4' has 12 frames; this request needs 17"):
        plan(tiny_like("builtin-trained", tmp_path, video=clip_mp4, frames=17))
    for s in (0, 1.5, -0.2, float("nan"), True):
        with pytest.raises(ValueError, match=r"--strength must be a number in \(0, 1\]"):
            plan(tiny_like("builtin-trained", tmp_path, video=clip_mp4, strength=s))
    with pytest.raises(ValueError, match=r"--strength 0.5 sets how far --video is noised, and no --video is given"):
        plan(tiny_like("builtin-trained", tmp_path, strength=0.5))
    with pytest.raises(ValueError, match=r"video_ddpm.* cannot start part-way"):
        plan(tiny_like("builtin-trained", tmp_path, video=clip_mp4, sampler="video_ddpm"))


def test_read_video_takes_the_first_frames(clip_mp4):
    got = read_video(clip_mp4, 5)
    assert len(got) == 5 and got[0].size == (96, 64)


# ----------------------------------------------------------------------------------------------
# the command line


def test_cli_writes_the_video_and_records_its_hash(tmp_path, clip_mp4, capsys):
    import hashlib

    out = tmp_path / "out"
    argv = ["generate", "--model", "builtin-trained", "--prompt", "a red ball bouncing", "--out", str(out), "-q"]
    argv += ["--steps", "4", "--video", clip_mp4, "--strength", "0.5"]
    assert main(argv) == 0
    (path,) = capsys.readouterr().out.split()
    assert path.endswith(".mp4")
    meta = json.loads(next(out.glob("*.json")).read_text())
    sha = hashlib.sha256(open(clip_mp4, "rb").read()).hexdigest()
    assert meta["video"] == {"path": clip_mp4, "sha256": sha, "strength": 0.5, "resize": "crop", "steps_run": 2}
    cmd = meta["command"]
    assert cmd[cmd.index("--video") : cmd.index("--video") + 4] == ["--video", clip_mp4, "--strength", "0.5"]
    assert meta["sampling"]["schedule"]["type"] == "TruncatedSchedule"
    # another strength is another video (another name); no --video keeps the old name
    assert main([*argv[:-1], "0.25"]) == 0
    assert len(list(out.glob("*.mp4"))) == 2


def test_a_jsonl_line_takes_video_and_strength_relative_to_its_file(tmp_path):
    from cogsample.jobs.batch import read_prompts_file

    f = tmp_path / "jobs.jsonl"
    f.write_text('{"prompt": "a", "video": "clips/in.mp4", "strength": 0.5}\n{"prompt": "b", "strength": "x"}\n')
    (_, a), (_, b) = read_prompts_file(f, keep_bad=True)
    assert a == {"prompt": "a", "video": str(tmp_path / "clips/in.mp4"), "strength": 0.5}
    assert isinstance(b, ValueError) and "strength must be" in str(b)
