import json
from pathlib import Path

import pytest
import torch

#: The golden vectors live beside the checkout, read-only: ``../shared/golden``.
GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden"


def golden_cases() -> list[str]:
    index = GOLDEN / "index.json"
    if not index.exists():
        raise FileNotFoundError(f"golden vectors not found at {GOLDEN}: the tests need ../shared/golden")
    return json.loads(index.read_text())["cases"]


@pytest.fixture(scope="session")
def schedules() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / "schedules.safetensors"))


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape, dtype and values (max abs error 0)."""
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
