"""``cogsample golden [DIR...]``: replay recorded golden vectors, in the recording's math mode."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``golden`` and its recording directories."""
    g = sub.add_parser(
        "golden",
        help="replay golden vectors recorded from the reference; exit 0 iff all match exactly",
        description="Replay golden vectors in the recording's math mode (MKL_CBWR, set for the run whatever the "
        "environment holds) and compare every step bit for bit. Exit 0: all bit-exact; 1: a case failed; 3: none "
        "failed, but this machine cannot reproduce the recording's math (its probe differs), so differing cases "
        "were only checked within a stated tolerance and are reported as UNVERIFIED.",
    )
    g.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        help="a recording: a directory with index.json and its cases (default: the recordings shipped in the "
        "package, the one this machine's processor family reproduces)",
    )
    g.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay ``args.dirs`` (default: the shipped recordings); the exit code says how they compared."""
    from ..reference import mathmode
    from ..reference.golden import main as golden_main
    from ..reference.recordings import shipped

    dirs = args.dirs or [r.directory for r in shipped()]
    wanted = next((m for m in (mathmode.recorded_mode(d)[0] for d in dirs) if m), None)
    if wanted:
        # MKL reads its mode once, at its first call: a program entry point restarts itself in the
        # recording's mode; called as a library, it can only set it and let the probe tell.
        if args.entry_point:
            mathmode.reexec_in_mode(wanted)
        mathmode.pin_mode(wanted)
    return golden_main(args.dirs)
