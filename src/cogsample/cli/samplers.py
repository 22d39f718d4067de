"""``cogsample samplers``: list the samplers, their SAT names and options."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``samplers`` (no options)."""
    s = sub.add_parser("samplers", help="list the samplers, their SAT names and options")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One line a sampler (name, space, SAT names, summary), then its options if it has any."""
    from ..sampling.samplers import SAMPLERS

    for spec in SAMPLERS.values():
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options().items())
        print(f"{spec.name:20s} {spec.space:5s} {'/'.join(spec.reference):40s} {spec.summary}")
        if opts:
            print(f"{'':20s} options: {opts}")
    return 0
