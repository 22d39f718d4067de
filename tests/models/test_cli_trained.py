"""``--model builtin-trained`` / ``builtin-trained-i2v`` and ``cogsample train-tiny`` from the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

pytest.importorskip("diffusers")

from cogsample.cli.main import main
from cogsample.models.builtin import MixtureNetwork
from cogsample.models.family import FAMILY


def _files(out):
    return sorted(p.name.split(".", 1)[1] for p in out.iterdir())


def test_generate_with_the_trained_model_writes_everything(tmp_path, capsys):
    clip = FAMILY[200]
    out = tmp_path / "out"
    argv = ["generate", "--model", "builtin-trained", "--prompt", clip.caption, "--seed", "3", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert len(captured.out.split()) == 1  # the video's path
    assert _files(out) == ["json", "latents.safetensors", "mp4", "png"]
    meta = json.loads(next(out.glob("*.json")).read_text())
    assert meta["model"]["name"] == "builtin-trained"
    assert (meta["frames"], meta["height"], meta["width"]) == (9, 64, 96)
    lat = load_file(next(out.glob("*.safetensors")))["latents"]
    mu = MixtureNetwork(FAMILY).means(3, 8, 12).mu
    # the trained model gets backgrounds right 9 times in 10 (docs/training.md), shapes far less often
    assert FAMILY[int(torch.cdist(lat.reshape(1, -1).double(), mu).argmin())].background == clip.background


def test_four_times_the_native_length_writes_the_whole_video(tmp_path, capsys):
    clip = FAMILY[200]
    out = tmp_path / "out"
    argv = ["generate", "--model", "builtin-trained", "--prompt", clip.caption, "--frames", "4x", "--steps", "10"]
    assert main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    # the forward counter grows with the windows: 6 windows x 2 branches per step
    assert "12 latent frames in 6 context windows of 3 (overlap 1)" in err and "fwd=120 (6 windows)" in err
    meta = json.loads(next(out.glob("*.json")).read_text())
    assert (meta["frames"], meta["latent_shape"]) == (45, [1, 12, 16, 8, 12])
    assert meta["context_windows"]["spans"] == [[0, 3], [2, 5], [4, 7], [6, 9], [8, 11], [9, 12]]
    assert meta["forwards"] == 120
    import av

    with av.open(str(next(out.glob("*.mp4")))) as f:
        assert sum(1 for _ in f.decode(video=0)) == 45
    lat = load_file(next(out.glob("*.safetensors")))["latents"]
    assert lat.shape == (1, 12, 16, 8, 12) and torch.isfinite(lat).all()


@pytest.mark.parametrize(
    "extra", [[], ["--frames", "4x", "--noise-repeat"]], ids=["native", "4x-in-windows-from-repeated-noise"]
)
def test_trained_i2v_starts_from_the_image(tmp_path, extra):
    clip = FAMILY[333]
    first = clip.render(1, 64, 96)[0]
    img = tmp_path / "first.png"
    Image.fromarray((first.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(img)
    out = tmp_path / "out"
    argv = ["generate", "--model", "builtin-trained-i2v", "--image", str(img), "--prompt", clip.caption]
    assert main([*argv, *extra, "--out", str(out), "--quiet"]) == 0
    lat = load_file(next(out.glob("*.safetensors")))["latents"]
    from cogsample.models.builtin import BlockVAE

    video = BlockVAE().decode(lat)[0]
    # the image reaches the window holding frame 0: frame 0 is the image at any length
    assert video.shape[0] == (45 if extra else 9) and (video[0] - first).abs().mean() < 0.05


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "13", "--context", "off"], "frames must be 9 for the trained built-in model"),
        (["--frames", "5"], "frames must be 9 for the trained built-in model (trained at 9 frames of 64x96 px only), "
                            "got 5\n"),
        (["--frames", "4x", "--context-frames", "4"], "context_frames must be 3 (latent frames of its native 9)"),
        (["--frames", "4x", "--context-overlap", "3"], "context_overlap must be an integer in [0, context_frames - 1]"),
        (["--height", "128"], "height must be 64 for the trained built-in model"),
        (["--image", "x.png"], "model 'builtin-trained' is text-to-video (use --model builtin-trained-i2v)"),
    ],
)  # fmt: skip
def test_trained_model_rejects_what_it_cannot_do_before_loading(tmp_path, capsys, args, message):
    argv = ["generate", "--model", "builtin-trained", "--prompt", "a red ball", "--out", str(tmp_path / "o"), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_train_tiny_writes_a_loadable_transformer_and_its_curve(tmp_path, capsys):
    from cogsample.models.trained import load_transformer

    out = tmp_path / "t"
    argv = ["train-tiny", "--out", str(out), "--steps", "4", "--batch", "4", "--log-every", "2", "--quiet"]
    assert main([*argv, "--plot", str(tmp_path / "loss.png")]) == 0
    assert "4 steps in" in capsys.readouterr().out
    record = json.loads((out / "train.json").read_text())
    assert [c["step"] for c in record["curve"]] == [2, 4] and record["config"]["batch"] == 4
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    load_transformer(out)
    assert main(argv) == 2
    assert "already holds a transformer" in capsys.readouterr().err
    assert main(["train-tiny", "--out", str(tmp_path / "u"), "--steps", "0"]) == 2
    assert "steps must be an integer >= 1, got 0" in capsys.readouterr().err


def test_train_tiny_checks_its_out_folder_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("cogsample.models.trained.train", lambda *_a, **_k: pytest.fail("trained"))
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    for out, why in (
        (blocker, f"--out {str(blocker)!r} is not writable: it is a file, not a folder"),
        (blocker / "t", f"--out {str(blocker / 't')!r} is not writable: {str(blocker)!r} is a file, not a folder"),
        ("/proc/x", "--out '/proc/x' cannot be made: "),  # what the user tried: /proc takes no folder
    ):
        assert main(["train-tiny", "--out", str(out), "--steps", "2"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cogsample train-tiny: error: {why}") and len(err.splitlines()) == 1
    assert main(["train-tiny", "--out", str(tmp_path / "t"), "--plot", str(tmp_path / "no" / "loss.png")]) == 2
    assert "--plot" in capsys.readouterr().err
    assert blocker.read_text() == "mine"
