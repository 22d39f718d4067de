"""The batch runner with real processes: concurrent runs on one folder, SIGKILL at random moments
then a rerun, SIGINT / SIGTERM, a full disk, torchrun. Every process is started in its own session
and killed by its process group id when a test ends; every wait is bounded."""

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import started as _started
from safetensors.torch import load_file

SIZE = ["--frames", "17", "--height", "96", "--width", "128", "--steps", "20"]
PROMPTS = ["a red ball bouncing", "a blue square sliding", "a green triangle rotating", "a yellow star pulsing"]
SUFFIXES = (".mp4", ".latents.safetensors", ".json", ".png")
TIMEOUT = 120


@pytest.fixture
def prompts_file(tmp_path):
    f = tmp_path / "batch.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return f


def _cmd(out, *extra):
    return [sys.executable, "-m", "cogsample", "generate", *SIZE, "--out", str(out), *extra]


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, start_new_session=True, **kw)


def _videos(out: Path) -> dict[str, dict[str, bytes]]:
    """stem -> {suffix: bytes} of what is in ``out`` (the JSON left out: it records timings)."""
    found: dict[str, dict[str, bytes]] = {}
    for p in out.iterdir():
        for suf in SUFFIXES:
            if p.name.endswith(suf) and not p.name.startswith("."):
                found.setdefault(p.name[: -len(suf)], {})[suf] = p.read_bytes() if suf != ".json" else b""
    return found


def _assert_same(out: Path, ref: Path) -> None:
    """Every video exactly once, whole, bit-identical latents and mp4 bytes, and nothing else."""
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in ref.iterdir())
    got, want = _videos(out), _videos(ref)
    assert set(got) == set(want) and len(want) == len(PROMPTS)
    for stem, files in want.items():
        a = load_file(str(out / f"{stem}.latents.safetensors"))
        b = load_file(str(ref / f"{stem}.latents.safetensors"))
        assert all((a[k] == b[k]).all() for k in b), stem
        assert got[stem][".mp4"] == files[".mp4"], stem
        assert got[stem][".png"] == files[".png"], stem


@pytest.fixture
def reference(tmp_path, prompts_file):
    ref = tmp_path / "ref"
    r = _run(_cmd(ref, "--quiet", "--prompts-file", str(prompts_file)))
    assert r.returncode == 0, r.stderr
    return ref


def test_two_runs_with_different_options_keep_both_videos(tmp_path):
    out = tmp_path / "out"
    cmds = [_cmd(out, "--quiet", "--prompt", "a red ball", "--seed", "1", "--scale", s) for s in ("6", "3")]
    with _started(cmds[0]) as a, _started(cmds[1]) as b:
        outs = [p.communicate(timeout=TIMEOUT) for p in (a, b)]
    assert a.returncode == b.returncode == 0, outs
    paths = [o[0].strip() for o in outs]
    assert paths[0] != paths[1] and all(Path(p).is_file() for p in paths)
    assert len(_videos(out)) == 2 and all(len(f) == 4 for f in _videos(out).values())


def test_the_same_batch_twice_at_once_makes_each_video_once(tmp_path, prompts_file, reference):
    out = tmp_path / "out"
    cmd = _cmd(out, "--prompts-file", str(prompts_file))
    with _started(cmd) as a, _started(cmd) as b:
        outs = [p.communicate(timeout=TIMEOUT) for p in (a, b)]
    assert a.returncode == b.returncode == 0, outs
    # both print every video's path; between them, each video was written once
    for stdout, _ in outs:
        assert sorted(stdout.split()) == sorted(str(out / f"{s}.mp4") for s in _videos(reference))
    wrote = [line for _, err in outs for line in err.splitlines() if line.startswith("wrote ")]
    assert len(wrote) == len(PROMPTS), outs
    _assert_same(out, reference)


def _kill_when(proc, out: Path, rng: random.Random, trial: int) -> str:
    """SIGKILL ``proc`` at a moment picked by ``trial``: after 0-3 finished videos plus a random
    delay, or the instant a temporary output file appears (in the middle of writing)."""
    deadline = time.monotonic() + TIMEOUT
    if trial % 3 == 2:
        while (
            not any(
                p.name.endswith((".part.mp4", ".part.png", ".part.json", ".part.safetensors")) for p in out.glob(".*")
            )
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.001)
        moment = "while writing"
    else:
        videos = trial % 4
        for _ in range(videos):
            if not proc.stdout.readline():
                break
        time.sleep(rng.uniform(0, 0.4))
        moment = f"after {videos} video(s) + a random delay"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return moment


def test_sigkill_at_random_moments_then_a_rerun_gives_every_video_once(tmp_path, prompts_file, reference):
    rng = random.Random(1234)
    cmd_args = ("--quiet", "--prompts-file", str(prompts_file))
    for trial in range(12):
        out = tmp_path / f"trial{trial}"
        out.mkdir()
        with _started(_cmd(out, *cmd_args)) as proc:
            moment = _kill_when(proc, out, rng, trial)
            proc.wait(timeout=TIMEOUT)
        # what the kill left, if anything, is only ever unfinished: never a finished-looking partial video
        for stem, files in _videos(out).items():
            if ".json" in files:
                assert len(files) == 4, (trial, moment, stem)
        r = _run(_cmd(out, *cmd_args))
        assert r.returncode == 0, (trial, moment, r.stderr)
        assert len(r.stdout.split()) == len(PROMPTS)
        _assert_same(out, reference)
        shutil.rmtree(out)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_stop_at_once_and_say_how_to_resume(tmp_path, prompts_file, signum):
    out = tmp_path / "out"
    cmd = [*_cmd(out, "--prompts-file", str(prompts_file))]
    cmd[cmd.index("--steps") + 1] = "200"  # long enough to be caught in the middle of the second video
    with _started(cmd) as proc:
        first = proc.stdout.readline()
        assert first.strip().endswith(".mp4")
        time.sleep(0.2)
        os.killpg(proc.pid, signum)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum
    last = err.strip().splitlines()[-1]
    assert last == f"interrupted: {len(_finished(out))} of 4 videos finished; run the same command again to resume"
    assert "Traceback" not in err
    assert len(_finished(out)) >= 1 and all(not p.name.startswith(".") for p in out.iterdir())
    assert len(list(out.iterdir())) == 4 * len(_finished(out))


def _finished(out: Path) -> list[Path]:
    return sorted(out.glob("*.json"))


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    out = tmp_path / "out"

    def limited():  # files past 60 kB cannot be written: EFBIG, as a full disk gives ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    r = _run(_cmd(out, "--quiet", "--prompt", "a red ball"), preexec_fn=limited)
    assert r.returncode == 1 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith(f"cogsample generate: error: cannot write {out}/") and line.endswith(": File too large")
    assert list(out.iterdir()) == []


def test_a_really_full_disk(tmp_path, prompts_file):
    """A 300 kB tmpfs: the first videos fit, then ENOSPC; what was finished stays, nothing else."""
    out = tmp_path / "small"
    out.mkdir()
    if _run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(out)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        r = _run(_cmd(out, "--quiet", "--prompts-file", str(prompts_file)))
        assert r.returncode == 1, r.stderr
        (line,) = r.stderr.strip().splitlines()
        assert line.startswith(f"cogsample generate: error: cannot write {out}/")
        assert line.endswith(": No space left on device")
        done = _finished(out)
        assert 1 <= len(done) < 4 and sorted(r.stdout.split()) == sorted(str(p.with_suffix(".mp4")) for p in done)
        assert len(list(out.iterdir())) == 4 * len(done)
    finally:
        _run(["umount", str(out)])


def test_torchrun_two_ranks_split_the_batch_and_equal_one_process(tmp_path, prompts_file, reference):
    pytest.importorskip("torch.distributed.run")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "cogsample",
        "generate",
        *SIZE,
        "--out",
        str(out),
        "--prompts-file",
        str(prompts_file),
    ]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1"}
    with _started(cmd, env=env) as proc:
        _, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr
    _assert_same(out, reference)
    ranks = {}
    for meta in _finished(out):
        m = json.loads(meta.read_text())
        assert m["engine"] == "torchrun" and m["world_size"] == 2
        ranks[m["prompt"]] = m["rank"]
    assert ranks == {p: k % 2 for k, p in enumerate(PROMPTS)}  # rank r: videos r, r + 2
    assert "rank 1/2: 2 video(s)" in stderr
