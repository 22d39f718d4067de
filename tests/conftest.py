import json
import os
from functools import cache
from pathlib import Path

#: The golden vectors live beside the checkout, read-only: ``../shared/golden``.
GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"


def _recorded_mkl_mode() -> str | None:
    try:
        return json.loads((GOLDEN / "index.json").read_text()).get("math", {}).get("mkl_cbwr")
    except (OSError, ValueError):
        return None


# The reference arrays are recorded in one MKL math mode; MKL reads it once, at its first call, so
# it is set before torch computes anything, whatever the caller's environment holds (subprocesses
# that the tests start inherit it).
if _recorded_mkl_mode():
    os.environ["MKL_CBWR"] = _recorded_mkl_mode()

import pytest  # noqa: E402
import torch  # noqa: E402

from cogsample import mathmode  # noqa: E402


def golden_cases() -> list[str]:
    index = GOLDEN / "index.json"
    if not index.exists():
        raise FileNotFoundError(f"golden vectors not found at {GOLDEN}: the tests need ../shared/golden")
    return json.loads(index.read_text())["cases"]


@cache
def math_probe() -> mathmode.ProbeResult | None:
    """The recording's probe recomputed in this process (None for a recording without one)."""
    from cogsample.golden import check_math_mode

    return check_math_mode(GOLDEN)


def pytest_report_header(config):
    probe = math_probe()
    return probe.describe() if probe is not None else "math mode: the recording states none"


@pytest.fixture(scope="session")
def schedules() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / "schedules.safetensors"))


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and values (max abs error 0)."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def assert_reference(*pairs: tuple) -> None:
    """Each ``(got, recorded[, name])`` pair equals the reference's recorded array bit for bit.

    Shapes and dtypes must always match. Where this process cannot reproduce the recording's math
    (its probe differs, :mod:`cogsample.mathmode`), values that are not identical are compared
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
