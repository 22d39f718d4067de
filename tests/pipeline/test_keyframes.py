"""``--keyframe`` / ``--last-image`` on the trained built-in models: the files, the name, the checks."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

pytest.importorskip("diffusers")

from cogsample.cli.main import main
from cogsample.jobs.batch import read_prompts_file
from cogsample.jobs.naming import video_identity
from cogsample.models.builtin import BlockVAE
from cogsample.models.family import FAMILY
from cogsample.pipeline.keyframes import keyframe_items, resolve_keyframes
from cogsample.pipeline.options import GenerateOptions
from cogsample.pipeline.planning import plan

CLIP = FAMILY[200]


def _png(path, frame):
    pix = CLIP.render(9, 64, 96)[frame]
    Image.fromarray((pix.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return pix


def test_last_image_and_a_keyframe_are_held_and_named(tmp_path, capsys):
    last, mid = _png(tmp_path / "last.png", 8), _png(tmp_path / "mid.png", 4)
    out = tmp_path / "out"
    argv = ["generate", "--model", "builtin-trained", "--prompt", CLIP.caption, "--steps", "4", "--seed", "3",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main([*argv, "--last-image", str(tmp_path / "last.png"), "--keyframe", f"4={tmp_path / 'mid.png'}"]) == 0
    capsys.readouterr()
    (meta,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(list(out.glob("*.mp4"))) == 1
    assert [(k["frame"], k["latent_frame"]) for k in meta["keyframes"]] == [(4, 1), (8, 2)]
    assert all(len(k["sha256"]) == 64 for k in meta["keyframes"]) and meta["keyframes"][1]["path"].endswith("last.png")
    assert "--keyframe" in meta["command"]
    lat = load_file(out / meta["files"]["latents"])["latents"]
    video = BlockVAE().decode(lat)[0]
    floor = BlockVAE().decode(BlockVAE().encode(CLIP.render(9, 64, 96)[None].double()))[0]
    for f, pix in ((8, last), (4, mid)):  # the held frame is the image, up to the VAE's own round trip (and uint8)
        assert (video[f] - pix).abs().mean() <= (floor[f] - pix).abs().mean() + 2 / 255


def test_keyframes_enter_the_name_only_where_given(tmp_path):
    _png(tmp_path / "last.png", 8)
    _png(tmp_path / "other.png", 4)
    opts = GenerateOptions(prompts=("x",), model="builtin-trained")
    plain = video_identity(plan(opts), 0)
    held = video_identity(plan(dataclasses.replace(opts, last_image=str(tmp_path / "last.png"))), 0)
    other = video_identity(plan(dataclasses.replace(opts, last_image=str(tmp_path / "other.png"))), 0)
    assert "keyframes" not in plain and {**held, "keyframes": None} == {**plain, "keyframes": None}
    assert held["keyframes"][0]["frame"] == 8 and held["keyframes"] != other["keyframes"]


def test_i2v_takes_a_last_image(tmp_path):
    _png(tmp_path / "first.png", 0), _png(tmp_path / "last.png", 8)
    out = tmp_path / "out"
    argv = ["generate", "--model", "builtin-trained-i2v", "--image", str(tmp_path / "first.png"), "--steps", "3",
            "--prompt", CLIP.caption, "--last-image", str(tmp_path / "last.png"), "--out", str(out), "-q"]  # fmt: skip
    assert main(argv) == 0
    meta = json.loads(next(out.glob("*.json")).read_text())
    assert [k["frame"] for k in meta["keyframes"]] == [8]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--keyframe", "8:{png}"], "--keyframe '8:{png}' must be FRAME=PATH"),
        (["--keyframe", "9={png}"], "--keyframe 9={png}: frame 9 is outside the video's frames [0, 8]"),
        (["--keyframe=-1={png}"], "frame -1 is outside the video's frames [0, 8]"),
        (["--keyframe", "8={missing}"], "does not exist or is not a file"),
        (["--keyframe", "8={png}", "--last-image", "{png}"], "--last-image {png}: frame 8 is already given by "
                                                             "--keyframe 8={png}"),
        (["--keyframe", "5={png}", "--keyframe", "6={png}"], "frame 6 falls in latent frame 2 (video frames 5..8)"),
    ],
)  # fmt: skip
def test_bad_keyframes_are_refused_before_loading(tmp_path, capsys, args, message):
    png = tmp_path / "k.png"
    _png(png, 8)
    fill = {"png": str(png), "missing": str(tmp_path / "nope.png")}
    argv = ["generate", "--model", "builtin-trained", "--prompt", "a red ball", "--out", str(tmp_path / "o")]
    assert main([*argv, *(a.format(**fill) for a in args)]) == 2
    assert message.format(**fill) in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_frame_zero_of_an_i2v_model_is_its_image(tmp_path):
    png = tmp_path / "k.png"
    _png(png, 0)
    opts = GenerateOptions(prompts=("a ball",), model="builtin-trained-i2v", image=str(png), keyframes={0: str(png)})
    with pytest.raises(ValueError, match="frame 0 of image-to-video model 'builtin-trained-i2v' is its --image"):
        plan(opts)


def test_jsonl_keys_and_the_api_forms(tmp_path):
    _png(tmp_path / "a.png", 8)
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": "x", "last_image": "a.png", "keyframes": {"4": "a.png"}}) + "\n"
                 + json.dumps({"prompt": "y", "keyframes": ["4=a.png"]}) + "\n")  # fmt: skip
    entries = [e for _, e in read_prompts_file(str(f))]
    assert entries[0]["last_image"] == str(tmp_path / "a.png")
    assert entries[0]["keyframes"] == [f"4={tmp_path / 'a.png'}"] == entries[1]["keyframes"]
    assert keyframe_items({48: "x.png"}) == [(48, "x.png")] == keyframe_items(["48=x.png"])
    img = Image.open(tmp_path / "a.png")
    from cogsample.models import inspect

    (kf,) = resolve_keyframes(None, {4: img}, inspect("builtin-trained"), 9, 0, lambda im: im)
    assert (kf.frame, kf.latent, kf.source) == (4, 1, None)
    p = plan(GenerateOptions(prompts=("x",), model="builtin-trained", keyframes={4: img}))
    assert p.keyframes[0].sha256 == kf.sha256
