"""The README's block for LoRAs, int8 weights, video to video and keyframes runs as written
(offline, on the trained built-in model; at 4 steps a video, for time)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("peft")
pytest.importorskip("torchao")


def _block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## LoRAs, int8 weights, a video to restyle, a last frame", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_the_readme_block_runs(tmp_path):
    if shutil.which("cogsample") is None:
        pytest.skip("the cogsample command is not installed")
    script = _block().replace("cogsample generate", "cogsample generate --steps 4")
    script = script.replace("python3 ", f"{sys.executable} ")
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    metas = [json.loads(p.read_text()) for p in (tmp_path / "outputs").glob("*.json")]
    assert len(metas) == 5
    assert sum(bool(m["lora"]) for m in metas) == 1 and sum(m["quantize"] == "int8" for m in metas) == 1
    assert sum(m.get("video") is not None for m in metas) == 1 and sum(bool(m.get("keyframes")) for m in metas) == 1
