"""Every golden case replays bit for bit, through the same code path as ``cogsample golden``.

Bit for bit where this process reproduces a shipped recording's math (its probe matches: the
recording of this processor family); elsewhere a differing case must be within the replay
tolerance and is reported as unverified, never passed.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import GOLDEN, PROBES, RECORDING, golden_cases, math_probe

from cogsample.reference import mathmode, recordings
from cogsample.reference.golden import EXIT_FAILED, EXIT_PASSED, EXIT_UNVERIFIED, main, replay_case, replay_dir


@pytest.mark.parametrize("case", golden_cases())
def test_golden_case_is_bit_exact(case):
    probe = math_probe()
    result = replay_case(GOLDEN, case, exact_math=probe.exact)
    assert result.status != "fail", result.detail
    if result.status == "unverified":
        differing = ", ".join(probe.differing)
        pytest.skip(f"not bit-checkable here (math mode probe differs in {differing}); {result.detail}")
    assert result.max_abs_error == 0.0


def test_every_shipped_recording_is_the_reference_within_rounding_here():
    """The recordings of other processor families differ from this machine's bits only in rounding:
    none of their cases fails, and a family whose probe differs is not passed as exact."""
    for rec in recordings.shipped():
        if rec.name == RECORDING.name:
            continue
        results = replay_dir(rec.directory, exact_math=False)
        assert [r.name for r in results] == rec.cases() and len(results) == 27
        assert all(r.status in ("pass", "unverified") for r in results), [r.detail for r in results]
        if PROBES[rec.name].differing and math_probe().exact:
            # this machine reproduces another family's probe: what follows from sqrt differs
            assert sum(r.status == "unverified" for r in results) > 0


def _cli(*args: str, mode: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop(mathmode.ENV, None)
    if mode:
        env[mathmode.ENV] = mode
    return subprocess.run(
        [sys.executable, "-m", "cogsample", "golden", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.parametrize("mode", [None, "AVX2", "AVX512", "COMPATIBLE"])
def test_cli_replays_this_machines_recording_in_its_math_mode_whatever_the_environment(mode):
    proc = _cli(mode=mode)
    lines = proc.stdout.strip().splitlines()
    n = len(golden_cases())
    shipped = recordings.shipped()
    # a line per recording: which one is replayed, and why the others do not apply here
    assert [line.split(",")[0] for line in lines[: len(shipped)]] == [f"recording {r.name}" for r in shipped]
    chosen = lines[shipped.index(RECORDING)]
    assert ("replaying it" if math_probe().exact else "replaying the closest") in chosen, proc.stdout
    for rec, line in zip(shipped, lines, strict=False):
        if rec.name != RECORDING.name:
            assert "not replayed" in line and ", ".join(PROBES[rec.name].differing) in line
    # then the mode the replay ran in: the recording's, not the caller's
    wanted = RECORDING.mode
    assert lines[len(shipped)].startswith(f"math mode: {mathmode.ENV}={wanted}"), proc.stdout + proc.stderr
    assert len(lines) == len(shipped) + n + 2
    if math_probe().exact:
        assert lines[-1] == f"{n} passed, 0 failed", proc.stdout + proc.stderr
        assert proc.returncode == EXIT_PASSED
    else:
        unverified = sum(line.startswith("UNVERIFIED ") for line in lines)
        passed = sum(line.startswith("PASS ") for line in lines)
        assert unverified > 0 and passed + unverified == n, proc.stdout
        assert lines[-1].startswith(f"{passed} passed, 0 failed, {unverified} unverified"), lines[-1]
        assert proc.returncode == EXIT_UNVERIFIED


def test_cli_replays_a_named_recording():
    other = next(r for r in recordings.shipped() if r.name != RECORDING.name)
    proc = _cli(str(other.directory))
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"math mode: {mathmode.ENV}={other.mode}")
    assert len(lines) == len(other.cases()) + 2
    want = EXIT_PASSED if not PROBES[other.name].differing else EXIT_UNVERIFIED
    assert proc.returncode == want, proc.stdout


def _recording_copy(tmp_path, cases=None):
    """A recording in tmp_path reading the shipped common files: its own files linked, index rewritten."""
    for f in GOLDEN.iterdir():
        if f.name != "index.json":
            (tmp_path / f.name).symlink_to(f)
    index = json.loads((GOLDEN / "index.json").read_text())
    index["compact"]["common"] = str((GOLDEN / index["compact"]["common"]).resolve())
    if cases is not None:
        index["cases"] = cases
    (tmp_path / "index.json").write_text(json.dumps(index))
    return tmp_path


def _write_case(tmp_path, case, new_name, edit_meta=None, edit_tensors=None):
    meta = recordings.load_meta(GOLDEN, case)
    tensors = recordings.load_tensors(GOLDEN, case)
    if edit_meta:
        edit_meta(meta)
    if edit_tensors:
        edit_tensors(tensors)
    meta.update(name=new_name, tensor_file=f"{new_name}.safetensors")
    recordings.save_tensors(tmp_path / f"{new_name}.safetensors", tensors)
    (tmp_path / f"{new_name}.json").write_text(json.dumps(meta))


def test_a_process_whose_probe_differs_reports_unverified_apart(tmp_path, capsys):
    # a probe that no math library reproduces stands for a machine in another math mode
    _recording_copy(tmp_path, ["t2v_vpsde_zsnr1_dyncfg_n10", "nudged"])
    probe = {k: v for k, v in recordings.load_tensors(GOLDEN, "probe").items()}
    probe["f32/tanh"] = probe["f32/tanh"] + 1
    (tmp_path / "probe.safetensors").unlink()
    recordings.save_tensors(tmp_path / "probe.safetensors", probe)
    # one case nudged beyond the tolerance must still fail
    _write_case(
        tmp_path, "t2v_vpsde_zsnr1_dyncfg_n10", "nudged", edit_tensors=lambda t: t.update(output=t["output"] + 1e-3)
    )

    code = main([tmp_path])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("math mode:") and "f32/tanh" in out[0] and "cannot be checked here" in out[0]
    assert out[2].startswith("FAIL nudged") and "output 0.001" in out[2]
    assert code == EXIT_FAILED
    # within tolerance it is unverified, not passed (unless it is identical even here)
    first = out[1].split()[0]
    assert first in ("UNVERIFIED", "PASS")
    assert out[-1].startswith("0 passed, 1 failed, 1 unverified" if first == "UNVERIFIED" else "1 passed, 1 failed")


def test_a_differing_step_is_named(tmp_path, capsys):
    """A step sequence kept as digests still says where a replay first differs."""
    _recording_copy(tmp_path, ["late_step"])

    def nudge_step_3(t):
        steps = t["x_steps"]
        assert isinstance(steps, recordings.Digest)
        sha = steps.sha256.clone()
        sha[3:] ^= 1  # what a recording of another machine would hold from step 3 on
        t["x_steps"] = recordings.Digest(steps.shape, steps.dtype, sha, steps.sum, steps.absmax)

    _write_case(tmp_path, "t2v_ddim_zsnr3_vanillacfg_n10", "late_step", edit_tensors=nudge_step_3)
    assert main([tmp_path]) == EXIT_FAILED
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("FAIL late_step") and "x_steps 0 (steps differ from step 3 on (7 of 10))" in line, line


def test_broken_cases_fail_with_a_reason_and_do_not_stop_the_run(tmp_path, capsys):
    case = "t2v_vpsde_zsnr1_dyncfg_n10"
    _recording_copy(tmp_path, ["renamed_copy", "unknown_sampler", "malformed", "wrong_shift"])
    _write_case(tmp_path, case, "renamed_copy")

    def unknown_sampler(m):
        m["sampler"]["class"] = "NoSuchSampler"

    def wrong_shift(m):
        m["sampler"]["params"]["discretization_config"]["params"]["shift_scale"] = 3.0

    _write_case(tmp_path, case, "unknown_sampler", edit_meta=unknown_sampler)
    _write_case(tmp_path, case, "wrong_shift", edit_meta=wrong_shift)
    (tmp_path / "malformed.json").write_text("{not json")
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


def test_a_full_recording_replays_as_the_compact_one(tmp_path, capsys, monkeypatch):
    """A recording as the reference writes it (every step whole) replays through the same code:
    made here from this machine's own replay of one case, so only where that replay is exact."""
    if not math_probe().exact:
        pytest.skip("not bit-checkable here: no shipped recording is this machine's")
    case = "t2v_vpsde_zsnr1_dyncfg_n10"
    whole = {}
    compare = recordings.compare

    def keep(value, recorded, what, *rest):
        whole[what] = value
        return compare(value, recorded, what, *rest)

    monkeypatch.setattr(recordings, "compare", keep)
    assert replay_case(GOLDEN, case).status == "pass"
    monkeypatch.setattr(recordings, "compare", compare)
    assert isinstance(recordings.load_tensors(GOLDEN, case)["x_steps"], recordings.Digest)

    (tmp_path / "index.json").write_text(json.dumps({"cases": [case]}))
    _write_case(
        tmp_path,
        case,
        case,
        edit_tensors=lambda t: t.update(x_steps=whole["x_steps"], denoised_calls=whole["denoised_calls"]),
    )
    assert all(isinstance(v, torch.Tensor) for v in recordings.load_tensors(tmp_path, case).values())
    assert main([tmp_path]) == EXIT_PASSED
    assert capsys.readouterr().out.splitlines()[0].startswith(f"PASS {case}: max abs error 0")


def test_missing_index_fails(tmp_path, capsys):
    assert main([tmp_path]) == EXIT_FAILED
    assert capsys.readouterr().out.splitlines()[-1] == "0 passed, 1 failed"


def test_digests_check_every_step_exactly():
    steps = torch.randn(5, 2, 3, dtype=torch.float32)
    digest = recordings.Digest.of(steps)
    assert digest.compare(steps.clone()).exact
    off = steps.clone()
    off[2, 1, 1] = torch.nextafter(off[2, 1, 1], torch.tensor(float("inf")))  # one ulp, one element
    c = digest.compare(off)
    assert not c.exact and c.within and c.note == "steps differ from step 2 on (1 of 5)"
    far = steps.clone()
    far[4] += 1.0
    c = digest.compare(far)
    assert not c.exact and not c.within and c.error > 0.99
    with pytest.raises(AssertionError, match="shape"):
        digest.compare(steps.double())
