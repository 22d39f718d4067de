import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from cogsample.jobs import outputs
from cogsample.pipeline.pipeline import to_uint8


def _clip(f=9, h=32, w=48) -> np.ndarray:
    t = torch.linspace(0, 1, f)[:, None, None, None]
    video = torch.zeros(f, 3, h, w)
    video[:, 0] = t[:, 0]
    video[:, 2, :, : w // 2] = 1.0
    return to_uint8(video)


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
import ctypes, glob, os, sys
import av
import numpy as np
from cogsample.jobs import outputs
from pathlib import Path
if sys.argv[2] == "no-simd":  # libav's C code paths, as on a processor without SIMD
    lib = glob.glob(os.path.join(os.path.dirname(av.__file__), "..", "av.libs", "libavutil*"))
    ctypes.CDLL(lib[0]).av_force_cpu_flags(0)
rng = np.random.default_rng(0)
t = np.arange(25)[:, None, None]
y, x = np.mgrid[0:240, 0:368]  # x264 uses fewer threads than asked on small frames: this size shows it
frames = (np.sin(x / 9 + t / 2) + np.cos(y / 7 - t / 3))[..., None] * 60 + 128 + rng.normal(0, 6, (25, 240, 368, 3))
outputs.write_mp4(Path(sys.argv[1]), frames.clip(0, 255).astype(np.uint8), fps=8)
"""


def test_mp4_bytes_depend_on_the_frames_only(tmp_path):
    """The same frames give the same bytes whatever the CPUs a process may use (x264's default
    thread count, and swscale's, follow ``sched_getaffinity``, and their output the thread count)
    and whichever of libav's code paths runs (swscale's SIMD and C colour conversions round
    differently): encodes pinned to one CPU and to all, one on libav's C paths, all at once."""
    import os
    import subprocess
    import sys

    cpus = sorted(os.sched_getaffinity(0))
    masks = [{cpus[0]}, set(cpus), {cpus[-1]}, set(cpus), set(cpus)]
    modes = ["auto"] * 4 + ["no-simd"]
    procs = []
    for k, (mask, mode) in enumerate(zip(masks, modes, strict=True)):
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _ENCODE, str(tmp_path / f"{k}.mp4"), mode],
                preexec_fn=lambda m=mask: os.sched_setaffinity(0, m),
            )
        )
    assert [p.wait(timeout=120) for p in procs] == [0] * len(procs)
    blobs = {(tmp_path / f"{k}.mp4").read_bytes() for k in range(len(masks))}
    assert len(blobs) == 1


def _yuv601(rgb: np.ndarray) -> np.ndarray:
    """The BT.601 limited-range definition in float64, chroma from each 2x2 block's mean."""
    r, g, b = np.moveaxis(rgb.astype(np.float64), -1, 0)
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 + 224 / 255 * (b - luma) / 1.772
    cr = 128 + 224 / 255 * (r - luma) / 1.402
    h, w = luma.shape
    quad = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).reshape(h // 4, w)  # noqa: E731
    return np.concatenate([16 + 219 / 255 * luma, quad(cb), quad(cr)])


def test_rgb_to_yuv420p_is_bt601_limited_range():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    got = outputs.rgb_to_yuv420p(rgb)
    want = _yuv601(rgb)
    assert got.shape == (72, 64) and got.dtype == np.uint8
    # rounding, plus the coefficients' own rounding to 2^-16: under 3 x 255 x 2^-17 < 0.006
    assert np.abs(got - want).max() <= 0.506
    solid = {(0, 0, 0): (16, 128, 128), (255, 255, 255): (235, 128, 128), (128, 128, 128): (126, 128, 128),
             (255, 0, 0): (81, 90, 240), (0, 255, 0): (145, 54, 34), (0, 0, 255): (41, 240, 110)}  # fmt: skip
    for colour, (y, u, v) in solid.items():
        yuv = outputs.rgb_to_yuv420p(np.tile(np.array(colour, np.uint8), (4, 6, 1)))
        assert (yuv[:4] == y).all() and (yuv[4:5] == u).all() and (yuv[5:] == v).all(), colour


def test_mp4_decodes_to_the_frames(tmp_path):
    """Lossless (crf 0) the mp4 holds exactly :func:`rgb_to_yuv420p` of the frames, tagged as such."""
    import av

    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([128 + 90 * np.sin(x / 11), 128 + 90 * np.cos(y / 9), 128 + 70 * np.sin((x + y) / 13)], -1)
    frames = np.repeat(rgb.astype(np.uint8)[None], 3, axis=0)
    outputs.write_mp4(tmp_path / "v.mp4", frames, fps=8, crf=0)
    with av.open(str(tmp_path / "v.mp4")) as c:
        decoded = [f for f in c.decode(video=0)]
    assert decoded[0].colorspace == av.video.reformatter.Colorspace.ITU601
    assert decoded[0].color_range == av.video.reformatter.ColorRange.MPEG
    assert len(decoded) == len(frames)
    for f, rgb in zip(decoded, frames, strict=True):
        assert np.array_equal(f.to_ndarray(), outputs.rgb_to_yuv420p(rgb))


_ENCODE_TWICE = """
import hashlib, sys
from pathlib import Path
import cogsample.jobs.outputs as o
if sys.argv[2] == "off":
    o._MALLOPT = False  # the unprotected encode, to show what the test catches
from cogsample import Pipeline
# frames that show it (synthetic gradients, or 10 steps of this, did not)
frames = Pipeline.load("builtin")("a red ball bouncing", seed=7, frames=9, height=64, width=96, steps=1000).frames
out = []
for i in range(2):
    p = Path(sys.argv[1]) / f"v{i}.mp4"
    o.write_mp4(p, frames, 8)
    out.append(hashlib.sha256(p.read_bytes()).hexdigest())
print(" ".join(out))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's heap")
def test_mp4_bytes_do_not_depend_on_the_heap(tmp_path):
    """x264 reads heap bytes it never wrote: without cogsample's guard the same frames give other
    bytes as a process's first encode than as its second, and under another MALLOC_PERTURB_."""

    def hashes(guard, perturb):
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_PERTURB_"}
        if perturb:
            env["MALLOC_PERTURB_"] = perturb
        cmd = [sys.executable, "-c", _ENCODE_TWICE, str(tmp_path), guard]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    guarded = [h for p in (None, "1", "170") for h in hashes("on", p)]
    assert len(set(guarded)) == 1
    unguarded = [h for p in (None, "1", "170") for h in hashes("off", p)]
    if len(set(unguarded)) == 1:
        pytest.skip("this build of x264 / libav reads no undefined heap byte here: nothing to guard")
