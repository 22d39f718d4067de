"""``cogsample generate`` on a CogVideoX folder, as a new process: ``--quiet`` prints the paths only."""

import os
import subprocess
import sys

from .tiny_cogvideox import SIZE


def _size() -> list[str]:
    return [a for k, v in SIZE.items() for a in (f"--{k}", str(v))]


def test_quiet_silences_the_loading_bars_of_transformers_and_diffusers(tiny_folders, tmp_path):
    cmd = [sys.executable, "-m", "cogsample", "generate", "--model", str(tiny_folders["t2v"]), "--device", "cpu"]
    cmd += ["--prompt", "a cat", "--steps", "2", *_size(), "--out", str(tmp_path)]
    # the bars as a user's environment has them (the test session turns them off)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    loud = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    quiet = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=300, env=env)
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    assert "Loading weights" in loud.stderr  # transformers' bar, which --quiet must silence
    assert quiet.stderr == "", quiet.stderr
    assert quiet.stdout == loud.stdout and quiet.stdout.strip().endswith(".mp4")  # the second run found it finished
