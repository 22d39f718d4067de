"""``cogsample train-tiny``: train the trained built-in model's transformer from scratch."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import command_error

if TYPE_CHECKING:
    from ..models.trained import TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Declare ``train-tiny`` and its options (the defaults: the shipped weights' run)."""
    t = sub.add_parser(
        "train-tiny",
        help="train the trained built-in model's transformer from scratch (the shipped weights: the defaults)",
        description="Train a small diffusers CogVideoX transformer on the clip family with CogVideoX's objective "
        "(v-prediction, ZeroSNR DDPM, caption dropout), deterministically on one machine. Writes a diffusers "
        "transformer folder (EMA weights) and train.json (the loss curve, the wall time).",
    )
    t.add_argument("--out", required=True, help="directory for the transformer folder")
    t.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the shipped weights' 5000)")
    t.add_argument("--batch", type=int, default=64, help="samples per step (default 64)")
    t.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    t.add_argument("--log-every", type=int, default=50, help="steps per loss line (default 50)")
    t.add_argument("--plot", default=None, metavar="PNG", help="also plot the loss curve there")
    t.add_argument("--overwrite", action="store_true", help="replace a transformer already in --out")
    t.add_argument("-q", "--quiet", action="store_true", help="no loss lines")
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the options (exit 2 before any training), train, plot if asked, and say the result."""
    from ..models.trained import train

    try:
        cfg, out = _checked(args)
    except ValueError as e:
        return command_error("train-tiny", str(e))
    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    record = train(out, cfg, log=log, every=args.log_every)
    if args.plot:
        from ..bench.plots import plot_loss

        plot_loss(record, Path(args.plot))
    print(f"{out}: {record['parameters']} parameters, {cfg.steps} steps in {record['seconds']:.0f} s, "
          f"held-out loss {record['eval_loss']:.4f}")  # fmt: skip
    return 0


def _checked(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The training's config and output folder; a ValueError names an option that cannot work."""
    from ..models import check_installed
    from ..models.trained import TrainConfig

    check_installed("builtin-trained")  # a diffusers transformer
    steps = TrainConfig().steps if args.steps is None else args.steps
    cfg = TrainConfig(steps=steps, batch=args.batch, seed=args.seed)
    out = Path(args.out)
    if (out / "config.json").exists() and not args.overwrite:
        raise ValueError(f"--out {args.out!r} already holds a transformer (config.json); pass --overwrite")
    from ..jobs.outputs import check_writable

    check_writable(out, "--out")  # before training, not after it
    if args.plot is not None:
        plot = Path(args.plot)
        if plot.is_dir() or not plot.parent.is_dir() or not os.access(plot.parent, os.W_OK):
            raise ValueError(f"--plot {args.plot!r} cannot be written: name a file in an existing writable folder")
    return cfg, out
