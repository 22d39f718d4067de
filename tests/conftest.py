import importlib.util
import json
import os
from pathlib import Path

#: The recordings of the reference shipped in the package (``cogsample/reference/goldens``), found without
#: importing cogsample, which would import torch before the math mode is set.
GOLDENS = Path(importlib.util.find_spec("cogsample").submodule_search_locations[0]) / "reference" / "goldens"


def _recorded_mkl_mode() -> str | None:
    modes = set()
    for rec in json.loads((GOLDENS / "index.json").read_text())["recordings"]:
        modes.add(json.loads((GOLDENS / rec["dir"] / "index.json").read_text()).get("math", {}).get("mkl_cbwr"))
    if len(modes) != 1:
        raise RuntimeError(f"the shipped recordings state several math modes {sorted(map(str, modes))}")
    return modes.pop()


# The reference arrays are recorded in one MKL math mode; MKL reads it once, at its first call, so
# it is set before torch computes anything, whatever the caller's environment holds (subprocesses
# that the tests start inherit it).
if _recorded_mkl_mode():
    os.environ["MKL_CBWR"] = _recorded_mkl_mode()

import pytest  # noqa: E402
import torch  # noqa: E402

from cogsample.reference import mathmode, recordings  # noqa: E402

#: The shipped recording this machine's processor family reproduces (or the closest: then the
#: bit-exact tests skip as "not bit-checkable here"), and every recording's probe result.
RECORDING, PROBES = recordings.choose(recordings.shipped())
GOLDEN = RECORDING.directory


def golden_cases() -> list[str]:
    return RECORDING.cases()


def math_probe() -> mathmode.ProbeResult | None:
    """The chosen recording's probe recomputed in this process (None for a recording without one)."""
    return PROBES[RECORDING.name]


def pytest_report_header(config):
    probe = math_probe()
    mode = probe.describe() if probe is not None else "math mode: the recording states none"
    return f"golden recording: {RECORDING.name} ({RECORDING.machine}); {mode}"


@pytest.fixture(scope="session")
def schedules() -> dict[str, torch.Tensor]:
    return recordings.load_tensors(GOLDEN, "schedules")


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and values (max abs error 0)."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def assert_reference(*pairs: tuple) -> None:
    """Each ``(got, recorded[, name])`` pair equals the reference's recorded array bit for bit.

    Shapes and dtypes must always match. Where this process cannot reproduce the recording's math
    (its probe differs, :mod:`cogsample.reference.mathmode`), values that are not identical are compared
    within the replay tolerance and the test is then skipped as unverifiable, never passed."""
    unverified = []
    for k, (got, want, *name) in enumerate(pairs):
        what = name[0] if name else f"pair {k}"
        assert got.shape == want.shape and got.dtype == want.dtype, (
            f"{what}: {tuple(got.shape)} {got.dtype} != recorded {tuple(want.shape)} {want.dtype}"
        )
        if torch.equal(got, want):
            continue
        err = float((got.double() - want.double()).abs().max())
        probe = math_probe()
        scale = float(want.double().abs().max())
        if probe is None or probe.exact or not mathmode.within_tolerance(err, scale):
            raise AssertionError(
                f"{what}: max abs error {err:.3g} from the recorded array (max |recorded| {scale:.3g})"
            )
        unverified.append(f"{what} {err:.2g}")
    if unverified:
        pytest.skip(
            f"not bit-checkable here (math mode differs from the recording's: {', '.join(math_probe().differing)}); "
            f"within {mathmode.REPLAY_RTOL:g} x max(1, |recorded|): {'; '.join(unverified)}"
        )
