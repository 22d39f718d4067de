"""Recordings: the compact form reads back as the full one, the shipped ones are complete, and
nothing in the repository reaches outside it for its data."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cogsample.reference import recordings

ROOT = Path(__file__).resolve().parents[2]


def _full_recording(directory: Path, output_offset: float) -> None:
    """A small recording in the reference's full form; ``output_offset`` stands for another
    processor family's last bits (inputs and draws equal, results not)."""
    directory.mkdir()
    g = torch.Generator().manual_seed(0)
    x_init, draws = torch.randn(1, 2, 3, generator=g), torch.randn(4, 1, 2, 3, generator=g)
    steps = torch.randn(4, 1, 2, 3, generator=g) + output_offset
    tensors = {"x_init": x_init, "noise_draws": draws, "x_steps": steps, "output": steps[-1].clone()}
    tensors["denoised_calls"] = torch.randn(4, 1, 2, 3, generator=g).double()
    save_file(tensors, str(directory / "case.safetensors"))
    (directory / "case.json").write_text(json.dumps({"name": "case", "tensor_file": "case.safetensors"}))
    save_file({"f32/x": x_init.flatten()}, str(directory / "probe.safetensors"))
    (directory / "probe.json").write_text(json.dumps({"name": "probe", "tensor_file": "probe.safetensors"}))
    index = {"cases": ["case"], "standalone": ["probe"], "math": {"mkl_cbwr": "COMPATIBLE", "probe": "probe"}}
    (directory / "index.json").write_text(json.dumps(index))


def test_pack_keeps_every_tensor_and_digests_the_steps(tmp_path):
    _full_recording(tmp_path / "a", 0.0)
    _full_recording(tmp_path / "b", 1e-6)
    sizes = recordings.pack(
        {"one": (tmp_path / "a", "machine A"), "two": (tmp_path / "b", "machine B")}, tmp_path / "out"
    )
    assert set(sizes) == {"common", "one", "two"}
    for name, source in (("one", "a"), ("two", "b")):
        packed, full = (
            recordings.load_tensors(tmp_path / "out" / name, "case"),
            recordings.load_tensors(tmp_path / source, "case"),
        )
        assert set(packed) == set(full)
        for key, value in full.items():
            got = packed[key]
            if key in recordings.DIGESTED:
                assert isinstance(got, recordings.Digest) and got.compare(value).exact
            else:
                assert got.dtype == value.dtype and torch.equal(got, value)
        index = json.loads((tmp_path / "out" / name / "index.json").read_text())
        assert index["math"]["mkl_cbwr"] == "COMPATIBLE" and index["provenance"]["source"] == source
        assert set(index["provenance"]["files_sha256"]) == {
            "case.json",
            "case.safetensors",
            "probe.json",
            "probe.safetensors",
            "index.json",
        }
    # inputs and draws are stored once; each recording keeps only its own results
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out" / "common" / "case.safetensors"), "pt") as f:
        assert {"x_init", "noise_draws", "denoised_calls@sha256"} <= set(f.keys()) and "output" not in f.keys()
    with safe_open(str(tmp_path / "out" / "one" / "case.safetensors"), "pt") as f:
        assert set(f.keys()) == {"output", "x_steps@sha256", "x_steps@sum", "x_steps@absmax"}
    assert recordings.load_meta(tmp_path / "out" / "two", "case") == {"name": "case", "tensor_file": "case.safetensors"}
    listed = json.loads((tmp_path / "out" / "index.json").read_text())["recordings"]
    assert [(r["name"], r["machine"]) for r in listed] == [("one", "machine A"), ("two", "machine B")]


def test_pack_refuses_recordings_of_other_cases(tmp_path):
    _full_recording(tmp_path / "a", 0.0)
    _full_recording(tmp_path / "b", 0.0)
    (tmp_path / "b" / "case.json").write_text(json.dumps({"name": "other", "tensor_file": "case.safetensors"}))
    with pytest.raises(ValueError, match=r"case\.json differs between the recordings"):
        recordings.pack({"one": (tmp_path / "a", "A"), "two": (tmp_path / "b", "B")}, tmp_path / "out")


def test_the_shipped_recordings_are_two_families_of_the_same_cases():
    shipped = recordings.shipped()
    assert [(r.name, r.mode) for r in shipped] == [("intel-xeon", "COMPATIBLE"), ("amd-epyc", "COMPATIBLE")]
    assert shipped[0].cases() == shipped[1].cases() and len(shipped[0].cases()) == 27
    for rec in shipped:
        for case in rec.cases():
            t = recordings.load_tensors(rec.directory, case)
            assert {"x_init", "output", "x_steps"} <= set(t), case
            assert isinstance(t["x_steps"], recordings.Digest) and t["x_steps"].shape[0] == len(t["x_steps"].sha256)
    # the same inputs and draws; only what follows from sqrt differs (the probe says which ops)
    one, two = (recordings.load_tensors(r.directory, "t2v_vpsde_zsnr1_dyncfg_n10") for r in shipped)
    assert torch.equal(one["noise_draws"], two["noise_draws"]) and not torch.equal(one["output"], two["output"])
    probes = [recordings.load_tensors(r.directory, "probe") for r in shipped]
    assert sorted(k for k in probes[0] if not torch.equal(probes[0][k], probes[1][k])) == [
        "f32/pow_half",
        "f32/sqrt",
        "f64/pow_half",
        "f64/sqrt",
    ]


def test_nothing_reads_data_from_outside_the_repository():
    """A clone alone runs its tests and commands: no source, test or benchmark reaches for the
    folder beside the checkout that only this project's CI has."""
    pattern = re.compile(r"""\.\./sha""" r"""red|/\s*["']sha""" r"""red["']""")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for top in ("src", "tests", "benchmarks")
        for path in (ROOT / top).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
