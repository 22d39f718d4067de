"""Every golden case replays bit for bit, through the same code path as ``cogsample golden``."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import GOLDEN, golden_cases

from cogsample.golden import main, replay_case


@pytest.mark.parametrize("case", golden_cases())
def test_golden_case_is_bit_exact(case):
    result = replay_case(GOLDEN, case)
    assert result.passed, result.detail
    assert result.max_abs_error == 0.0


def test_cli_replays_all_cases_and_summarises():
    proc = subprocess.run(
        [sys.executable, "-m", "cogsample", "golden", str(GOLDEN)], capture_output=True, text=True, timeout=600
    )
    lines = proc.stdout.strip().splitlines()
    n = len(golden_cases())
    assert lines[-1] == f"{n} passed, 0 failed", proc.stdout + proc.stderr
    assert len(lines) == n + 1
    assert proc.returncode == 0


def _copy_case(tmp_path, case, new_name, edit):
    meta = json.loads((GOLDEN / f"{case}.json").read_text())
    shutil.copy(GOLDEN / meta["tensor_file"], tmp_path / meta["tensor_file"])
    edit(meta)
    meta["name"] = new_name
    (tmp_path / f"{new_name}.json").write_text(json.dumps(meta))


def test_broken_cases_fail_with_a_reason_and_do_not_stop_the_run(tmp_path, capsys):
    case = "t2v_vpsde_zsnr1_dyncfg_n10"
    _copy_case(tmp_path, case, "renamed_copy", lambda m: None)

    def unknown_sampler(m):
        m["sampler"]["class"] = "NoSuchSampler"

    def wrong_shift(m):
        m["sampler"]["params"]["discretization_config"]["params"]["shift_scale"] = 3.0

    _copy_case(tmp_path, case, "unknown_sampler", unknown_sampler)
    _copy_case(tmp_path, case, "wrong_shift", wrong_shift)
    (tmp_path / "malformed.json").write_text("{not json")
    (tmp_path / "index.json").write_text(
        json.dumps({"cases": ["renamed_copy", "unknown_sampler", "malformed", "wrong_shift"]})
    )
    assert main([tmp_path]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("PASS renamed_copy: max abs error 0")
    assert out[1].startswith("FAIL unknown_sampler") and "NoSuchSampler" in out[1]
    assert out[2].startswith("FAIL malformed") and "error" in out[2]
    assert out[3].startswith("FAIL wrong_shift") and "max abs error" in out[3] and "error -" not in out[3]
    assert out[-1] == "1 passed, 3 failed"


def test_missing_index_fails(tmp_path, capsys):
    assert main([tmp_path]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "0 passed, 1 failed"
