import json
import os

import numpy as np
import pytest
import torch

from cogsample import outputs


def _clip(f=9, h=32, w=48) -> np.ndarray:
    t = torch.linspace(0, 1, f)[:, None, None, None]
    video = torch.zeros(f, 3, h, w)
    video[:, 0] = t[:, 0]
    video[:, 2, :, : w // 2] = 1.0
    return outputs.to_uint8(video)


def test_slug():
    assert outputs.slug("A red Ball, bouncing!") == "a-red-ball-bouncing"
    assert outputs.slug("!!!") == "video"
    assert len(outputs.slug("x" * 200)) <= 48


def test_to_uint8_rounds_and_clamps():
    v = torch.tensor([-0.5, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = outputs.to_uint8(v)
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_mp4_is_h264_with_every_frame(tmp_path):
    import av

    frames = _clip()
    dest = tmp_path / "v.mp4"
    outputs.write_mp4(dest, frames, fps=8)
    with av.open(str(dest)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    assert len(decoded) == len(frames)
    assert decoded[0].shape == frames[0].shape
    # lossy, but close: crf 17
    assert np.abs(decoded[-1].astype(int) - frames[-1].astype(int)).mean() < 4
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary left behind


def test_mp4_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        outputs.write_mp4(tmp_path / "v.mp4", np.zeros((2, 15, 16, 3), np.uint8), fps=8)
    assert list(tmp_path.iterdir()) == []


def test_contact_sheet_picks_first_and_last():
    frames = _clip(f=33)
    sheet = outputs.contact_sheet(frames, columns=4, max_frames=8, gap=2)
    h, w = frames.shape[1:3]
    assert sheet.shape == (2 * h + 2, 4 * w + 6, 3)
    assert np.array_equal(sheet[:h, :w], frames[0])
    assert np.array_equal(sheet[h + 2 :, 3 * (w + 2) :], frames[-1])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out.json"
    dest.write_text("user data")
    with pytest.raises(RuntimeError), outputs.atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert dest.read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_latents_and_json_round_trip(tmp_path):
    from safetensors.torch import load_file

    lat = torch.randn(1, 3, 16, 4, 6)
    outputs.write_latents(tmp_path / "x.latents.safetensors", {"latents": lat, "latents_for_vae": lat * 2})
    back = load_file(str(tmp_path / "x.latents.safetensors"))
    assert torch.equal(back["latents"], lat) and torch.equal(back["latents_for_vae"], lat * 2)
    outputs.write_json(tmp_path / "x.json", {"path": tmp_path, "dtype": torch.bfloat16, "n": np.int64(3)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"path": str(tmp_path), "dtype": "bfloat16", "n": 3}


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_check_writable_names_the_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            outputs.check_writable(ro)
    finally:
        ro.chmod(0o700)


def test_check_writable_rejects_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(ValueError, match=r"out directory .* is not writable"):
        outputs.check_writable(f)


_ENCODE = """
import hashlib, io, sys
import numpy as np
from cogsample import outputs
from pathlib import Path
rng = np.random.default_rng(0)
t = np.arange(25)[:, None, None]
y, x = np.mgrid[0:240, 0:368]  # x264 uses fewer threads than asked on small frames: this size shows it
frames = (np.sin(x / 9 + t / 2) + np.cos(y / 7 - t / 3))[..., None] * 60 + 128 + rng.normal(0, 6, (25, 240, 368, 3))
outputs.write_mp4(Path(sys.argv[1]), frames.clip(0, 255).astype(np.uint8), fps=8)
"""


def test_mp4_bytes_depend_on_the_frames_only(tmp_path):
    """x264's default thread count follows the CPUs a process may use, and its output follows the
    thread count: encodes pinned to one CPU and to all, run at the same time, must still agree."""
    import os
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))
    masks = [{cpus[0]}, set(cpus), {cpus[-1]}, set(cpus)]
    procs = []
    for k, mask in enumerate(masks):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _ENCODE, str(tmp_path / f"{k}.mp4")],
                preexec_fn=lambda m=mask: os.sched_setaffinity(0, m),
            )
        )
    assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)
    blobs = {(tmp_path / f"{k}.mp4").read_bytes() for k in range(len(masks))}
    assert len(blobs) == 1
