"""Command line: ``cogsample golden DIR...``, ``cogsample samplers``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _golden(args: argparse.Namespace) -> int:
    from .golden import main as golden_main

    return golden_main(args.dirs)


def _samplers(args: argparse.Namespace) -> int:
    from .samplers import SAMPLERS

    for spec in SAMPLERS.values():
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options().items())
        print(f"{spec.name:20s} {spec.space:5s} {'/'.join(spec.reference):40s} {spec.summary}")
        if opts:
            print(f"{'':20s} options: {opts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cogsample", description="CogVideoX sampling, bit-exact with the reference.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("golden", help="replay golden vectors recorded from the reference; exit 0 iff all match exactly")
    g.add_argument("dirs", nargs="+", metavar="DIR", help="a directory with index.json and its cases")
    g.set_defaults(func=_golden)
    s = sub.add_parser("samplers", help="list the samplers, their SAT names and options")
    s.set_defaults(func=_samplers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
