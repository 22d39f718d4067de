"""``cogsample captions``: list the built-in models' clips (what their prompts can ask for)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``captions`` and its ``--model``."""
    c = sub.add_parser("captions", help="list the built-in model's clips (what its prompts can ask for)")
    c.add_argument("--model", default="builtin", choices=("builtin", "builtin-trained"), help="which clip set")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One caption a line, of the exact built-in model's clips or the trained one's family."""
    if args.model.startswith("builtin-trained"):
        from ..models.family import FAMILY

        names = [c.caption for c in FAMILY]
    else:
        from ..models.builtin import captions

        names = captions()
    for c in names:
        print(c)
    return 0
