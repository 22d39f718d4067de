"""Every golden case replays bit for bit, through the same code path as ``cogsample golden``.

Bit for bit where this process runs in the recording's math mode (its probe matches); elsewhere
a differing case must be within the replay tolerance and is reported as unverified, never passed.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import GOLDEN, golden_cases, math_probe

from cogsample import mathmode
from cogsample.golden import EXIT_FAILED, EXIT_PASSED, EXIT_UNVERIFIED, main, replay_case


@pytest.mark.parametrize("case", golden_cases())
def test_golden_case_is_bit_exact(case):
    probe = math_probe()
    result = replay_case(GOLDEN, case, exact_math=probe.exact)
    assert result.status != "fail", result.detail
    if result.status == "unverified":
        differing = ", ".join(probe.differing)
        pytest.skip(f"not bit-checkable here (math mode probe differs in {differing}); {result.detail}")
    assert result.max_abs_error == 0.0


def _cli(*env_mode: str):
    env = dict(os.environ)
    env.pop(mathmode.ENV, None)
    if env_mode:
        env[mathmode.ENV] = env_mode[0]
    return subprocess.run(
        [sys.executable, "-m", "cogsample", "golden", str(GOLDEN)], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.mark.parametrize("mode", [None, "AVX2", "AVX512", "COMPATIBLE"])
def test_cli_replays_in_the_recordings_math_mode_whatever_the_environment(mode):
    proc = _cli(*([mode] if mode else []))
    lines = proc.stdout.strip().splitlines()
    n = len(golden_cases())
    wanted, _ = mathmode.recorded_mode(GOLDEN)
    # the first line states the mode the replay ran in: the recording's, not the caller's
    assert lines[0].startswith(f"math mode: {mathmode.ENV}={wanted}"), proc.stdout + proc.stderr
    assert len(lines) == n + 2
    probe = math_probe()  # this test process runs in the recording's mode too (conftest)
    if probe.exact:
        assert lines[-1] == f"{n} passed, 0 failed", proc.stdout + proc.stderr
        assert proc.returncode == EXIT_PASSED
    else:
        # the same ops differ as in this (pinned) process: the restart took effect; matrix products,
        # which depend on MKL's mode on every x86 processor, are not among them
        assert ", ".join(probe.differing) in lines[0]
        unverified = sum(line.startswith("UNVERIFIED ") for line in lines)
        passed = sum(line.startswith("PASS ") for line in lines)
        assert unverified > 0 and passed + unverified == n, proc.stdout
        assert lines[-1].startswith(f"{passed} passed, 0 failed, {unverified} unverified"), lines[-1]
        assert proc.returncode == EXIT_UNVERIFIED


def test_a_process_whose_probe_differs_reports_unverified_apart(tmp_path, capsys):
    # a probe that no math library reproduces stands for a machine in another math mode
    for f in GOLDEN.iterdir():
        if f.suffix in (".json", ".safetensors") and f.stem != "probe":
            (tmp_path / f.name).symlink_to(f)
    from safetensors.torch import load_file, save_file

    t = load_file(str(GOLDEN / "probe.safetensors"))
    t["f32/tanh"] = t["f32/tanh"] + 1
    save_file(t, str(tmp_path / "probe.safetensors"))
    shutil.copy(GOLDEN / "probe.json", tmp_path / "probe.json")
    # one case nudged beyond the tolerance must still fail
    meta = json.loads((GOLDEN / "t2v_vpsde_zsnr1_dyncfg_n10.json").read_text())
    tensors = load_file(str(GOLDEN / meta["tensor_file"]))
    tensors["output"] = tensors["output"] + 1e-3
    save_file(tensors, str(tmp_path / "nudged.safetensors"))
    meta.update(name="nudged", tensor_file="nudged.safetensors")
    (tmp_path / "nudged.json").write_text(json.dumps(meta))
    index = json.loads((GOLDEN / "index.json").read_text())
    index["cases"] = ["t2v_vpsde_zsnr1_dyncfg_n10", "nudged"]
    (tmp_path / "index.json").unlink()
    (tmp_path / "index.json").write_text(json.dumps(index))

    code = main([tmp_path])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("math mode:") and "f32/tanh" in out[0] and "cannot be checked here" in out[0]
    assert out[2].startswith("FAIL nudged")
    assert code == EXIT_FAILED
    # within tolerance it is unverified, not passed (unless it is identical even here)
    first = out[1].split()[0]
    assert first in ("UNVERIFIED", "PASS")
    assert out[-1].startswith("0 passed, 1 failed, 1 unverified" if first == "UNVERIFIED" else "1 passed, 1 failed")


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
    for f in ("probe.json", "probe.safetensors"):
        shutil.copy(GOLDEN / f, tmp_path / f)
    math = json.loads((GOLDEN / "index.json").read_text())["math"]
    (tmp_path / "index.json").write_text(
        json.dumps({"cases": ["renamed_copy", "unknown_sampler", "malformed", "wrong_shift"], "math": math})
    )
    assert main([tmp_path]) == EXIT_FAILED
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("math mode:")
    # a case's name plays no part: the copy replays as the original does here
    status = "PASS" if math_probe().exact else replay_case(GOLDEN, case, exact_math=False).status.upper()
    assert out[1].startswith(f"{status} renamed_copy: max abs error")
    assert out[2].startswith("FAIL unknown_sampler") and "NoSuchSampler" in out[2]
    assert out[3].startswith("FAIL malformed") and "error" in out[3]
    assert out[4].startswith("FAIL wrong_shift") and "max abs error" in out[4] and "error -" not in out[4]
    assert out[-1].startswith(f"{int(status == 'PASS')} passed, 3 failed")


def test_missing_index_fails(tmp_path, capsys):
    assert main([tmp_path]) == EXIT_FAILED
    assert capsys.readouterr().out.splitlines()[-1] == "0 passed, 1 failed"
