"""``cogsample generate --ray`` on a local Ray cluster with two workers: the same videos as one
process, a worker killed mid-batch, the driver killed then the command run again. Every process a
test started (the driver's group, and any Ray process it left) is ended by its id."""

import json
import os
import signal
import sys
import time

import pytest

from .test_batch_processes import SIZE, TIMEOUT, _assert_same, _finished, _run, _started, prompts_file, reference

pytest.importorskip("ray")

__all__ = ["prompts_file", "reference"]  # fixtures shared with the process tests

RAY_NAMES = ("ray::", "raylet", "gcs_server", "ray/dashboard", "log_monitor", "monitor.py")


def _ray_pids() -> set[int]:
    pids = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(n in cmd for n in RAY_NAMES):
            pids.add(int(d))
    return pids


@pytest.fixture
def ray_processes():
    """The Ray processes a test starts: listed for it, and killed by pid if any outlive it."""
    before = _ray_pids()
    yield lambda: _ray_pids() - before
    deadline = time.monotonic() + 15
    while _ray_pids() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _ray_pids() - before:
        os.kill(pid, signal.SIGKILL)


def _cmd(out, prompts, *extra):
    return [
        sys.executable, "-m", "cogsample", "generate", "--ray", "--workers", "2", *SIZE,
        "--out", str(out), "--prompts-file", str(prompts), *extra,
    ]  # fmt: skip


def _workers(metas) -> dict[str, int]:
    found = {}
    for meta in metas:
        m = json.loads(meta.read_text())
        assert m["engine"] == "ray" and m["world_size"] == 2 and m["rank"] == m["worker"]
        found[m["prompt"]] = m["worker"]
    return found


def test_two_workers_make_the_batch_as_one_process(tmp_path, prompts_file, reference, ray_processes):
    out = tmp_path / "out"
    r = _run(_cmd("out", prompts_file), cwd=tmp_path)  # --out relative, as the user gave it
    assert r.returncode == 0, r.stderr
    # the paths as the other engines print them: under --out as given, not resolved
    assert len(r.stdout.split()) == 4 and all(p.startswith("out/") for p in r.stdout.split()), r.stdout
    _assert_same(out, reference)
    assert set(_workers(_finished(out)).values()) == {0, 1}
    assert "ray: 2 worker(s) on the CPU, 4 video(s)" in r.stderr


def test_a_killed_worker_is_retried_and_nothing_is_lost(tmp_path, prompts_file, reference, ray_processes):
    out = tmp_path / "out"
    cmd = _cmd(out, prompts_file, "--quiet")
    with _started(cmd) as proc:
        assert proc.stdout.readline().strip().endswith(".mp4")
        workers = [p for p in ray_processes() if "ray::Worker" in open(f"/proc/{p}/cmdline").read()]
        assert workers
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, stderr
    assert len(stdout.split()) == 3  # the first was read above
    _assert_same(out, reference)


def test_the_driver_killed_then_the_same_command_finishes_the_batch(tmp_path, prompts_file, reference, ray_processes):
    out = tmp_path / "out"
    cmd = _cmd(out, prompts_file, "--quiet")
    with _started(cmd) as proc:
        assert proc.stdout.readline().strip().endswith(".mp4")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
    assert 1 <= len(_finished(out)) < 4
    r = _run(cmd)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.split()) == 4
    _assert_same(out, reference)


def test_ray_options_are_checked_before_any_work(tmp_path, prompts_file):
    r = _run([sys.executable, "-m", "cogsample", "generate", "--prompt", "x", "--workers", "2", "--out", str(tmp_path)])
    assert r.returncode == 2 and "--workers goes with --ray" in r.stderr
    r = _run([*_cmd(tmp_path, prompts_file), "--device", "cpu"])
    assert r.returncode == 2 and "--device 'cpu' goes with one process" in r.stderr


def test_without_ray_the_error_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    import importlib.util

    from cogsample.cli.main import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["generate", "--ray", "--prompt", "x", "--out", str(tmp_path)]) == 2
    assert "--ray needs Ray: pip install 'cogsample[ray]'" in capsys.readouterr().err
