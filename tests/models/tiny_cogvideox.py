"""The tiny random-weight CogVideoX folders the tests use: :mod:`cogsample.models.tiny`, and the
generate request the pipeline tests make on them.

Kept under its old name so the tests' imports (``KINDS``, ``NATIVE``, ``TEXT_LEN``,
``build_tiny_folder``) stay as they were.
"""

from __future__ import annotations

from typing import Any

from cogsample.models.tiny import KINDS, NATIVE, TEXT_LEN, build_tiny_folder

__all__ = ["KINDS", "NATIVE", "SIZE", "TEXT_LEN", "build_tiny_folder", "tiny_request"]

#: The tiny folders' native video size.
SIZE = {"frames": 9, "height": 32, "width": 48}


def tiny_request(folder: Any, tmp_path: Any, **kw: Any):
    """A ``GenerateOptions`` for ``folder``: 4 steps at :data:`SIZE` on the CPU (the diffusers
    pipelines the results are compared with run there, also on a machine with a GPU); ``kw`` overrides."""
    from cogsample.pipeline.options import GenerateOptions

    base = {"prompts": ("a cat playing a piano",), "model": str(folder), "out": str(tmp_path / "out")}
    base.update(steps=4, device="cpu", **SIZE)
    base.update(kw)
    return GenerateOptions(**base)
