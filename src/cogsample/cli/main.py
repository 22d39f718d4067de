"""Command line: ``cogsample generate``, ``serve``, ``golden DIR...``, ``samplers``, ``captions``, ``train-tiny``,
``bench``; each command's parser and run live in a module of its own."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..pipeline.progress import BatchProgress, Progress
from . import bench, captions, generate, golden, samplers, serve, train
from .errors import missing_extra

__all__ = ["BatchProgress", "Progress", "build_parser", "main"]

#: The commands, in the order ``--help`` lists them: each module's ``add_parser`` declares one.
COMMANDS = (generate, serve, golden, samplers, captions, train, bench)


def build_parser() -> argparse.ArgumentParser:
    """The ``cogsample`` parser: ``--version`` and one subcommand per module of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="cogsample", description="CogVideoX sampling, bit-exact with the reference.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``cogsample`` program; ``argv`` None: this process's command line (the program entry
    point, which may restart itself, see ``golden``)."""
    args = build_parser().parse_args(argv)
    args.entry_point = argv is None
    try:
        return args.func(args)
    except ModuleNotFoundError as e:
        code = missing_extra(args.command, e)
        if code is None:
            raise
        return code


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from ..version import __version__

    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return f"cogsample {__version__} (torch {torch}, Python {sys.version.split()[0]})"


if __name__ == "__main__":
    sys.exit(main())
