"""Session fixtures: tiny CogVideoX folders of every kind, built once, and their loaded models.

Nothing here imports diffusers until a fixture is used, so the directory's torch-only tests
(the built-in model) run where diffusers is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# huggingface_hub reads these when first imported: set them before anything imports diffusers,
# so that no test can reach the Hub even by mistake.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from .tiny_cogvideox import KINDS, build_tiny_folder


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{kind: folder}`` for every kind of :data:`tiny_cogvideox.KINDS` (read-only: copy to mutate)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("tiny_cogvideox")
    return {kind: build_tiny_folder(root / f"tiny-{kind}", kind, seed=i) for i, kind in enumerate(KINDS)}


@pytest.fixture(scope="session")
def tiny_models(tiny_folders: dict[str, Path]) -> dict:
    """``{kind: CogVideoXModel}`` loaded in float32 on the CPU (shared: load your own to mutate one)."""
    from cogsample.models.cogvideox import load_cogvideox

    return {kind: load_cogvideox(path) for kind, path in tiny_folders.items()}
