"""The tiny random-weight CogVideoX folders the tests use: :mod:`cogsample.models.tiny`.

Kept under its old name so the tests' imports (``KINDS``, ``NATIVE``, ``TEXT_LEN``,
``build_tiny_folder``) stay as they were.
"""

from cogsample.models.tiny import KINDS, NATIVE, TEXT_LEN, build_tiny_folder

__all__ = ["KINDS", "NATIVE", "TEXT_LEN", "build_tiny_folder"]
