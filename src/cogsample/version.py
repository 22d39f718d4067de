"""The package's version: one source for ``cogsample.__version__``, the CLI and the wheel."""

__version__ = "0.1.0"
