"""``cogsample bench``: quality per forward, forward-saving options and speed vs diffusers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import command_error


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``bench`` and its options."""
    b = sub.add_parser(
        "bench",
        help="quality per forward, forward-saving options and speed vs diffusers: JSON, PNG plots and a table",
    )
    b.add_argument(
        "--quick",
        action="store_true",
        help="the small size the tests use: about a minute on an idle 2-core CPU (measured 61 s), several times "
        "that on a busy one",
    )
    b.add_argument("--out", default="bench", help="directory for bench.json and the plots (default: ./bench)")
    b.add_argument(
        "--sections",
        default="presets,options,speed,cpu_2b,long_video",
        help="comma-separated subset to run (default: all)",
    )
    b.add_argument("-q", "--quiet", action="store_true", help="print only the final table")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the extra, the sections and ``--out`` (exit 2), run the sections and print the table."""
    import importlib.util

    missing = [m for m in ("matplotlib",) if importlib.util.find_spec(m) is None]
    if missing:
        return command_error("bench", f"needs {', '.join(missing)} for its plots: pip install 'cogsample[bench]'")
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    from ..bench.suite import SECTIONS, run_bench, table

    bad = [s for s in sections if s not in SECTIONS]
    if bad or not sections:
        return command_error(
            "bench", f"--sections must be a comma-separated subset of {','.join(SECTIONS)}, got {args.sections!r}"
        )
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return command_error("bench", f"--out {args.out!r} exists and is not a directory")
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    res = run_bench(out, quick=args.quick, sections=sections, log=log)
    print(table(res))
    return 0
