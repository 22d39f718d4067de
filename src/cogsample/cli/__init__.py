"""The command line: one parser per command over the library's entry points."""

from .main import main

__all__ = ["main"]
