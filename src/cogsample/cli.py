"""Command line: ``cogsample generate``, ``golden DIR...``, ``samplers``, ``captions``."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path


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


class Progress:
    """A bar (step, noise level, rate, ETA) on a terminal; a log line per 10% of steps otherwise."""

    def __init__(self, stream=None, bar: bool | None = None):
        self.stream = stream or sys.stderr
        self.bar = self.stream.isatty() if bar is None else bar
        self._tqdm = None
        self._video = -1

    def __call__(self, ev) -> None:
        level = f"sigma={ev.sigma:.3g}" if ev.timestep is None else f"t={ev.timestep} sigma={ev.sigma:.3g}"
        if self.bar:
            from tqdm import tqdm

            if ev.video != self._video:
                self.close()
                self._video = ev.video
                self._tqdm = tqdm(
                    total=ev.steps,
                    desc=f"video {ev.video + 1}/{ev.videos}",
                    unit="step",
                    file=self.stream,
                    dynamic_ncols=True,
                )
            self._tqdm.set_postfix_str(level, refresh=False)
            self._tqdm.update(1)
            if ev.step + 1 == ev.steps:
                self.close()
            return
        every = max(1, ev.steps // 10)
        if (ev.step + 1) % every == 0 or ev.step + 1 == ev.steps:
            rate = (ev.step + 1) / ev.elapsed if ev.elapsed > 0 else float("inf")
            eta = (ev.steps - ev.step - 1) / rate if rate > 0 else 0.0
            print(
                f"video {ev.video + 1}/{ev.videos} step {ev.step + 1}/{ev.steps} {level} "
                f"{rate:.2f} step/s eta {eta:.0f}s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None


def _read_prompts(args: argparse.Namespace) -> tuple[str, ...]:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"--prompts-file {str(path)!r} cannot be read: {e.strerror}") from e
        prompts += [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return tuple(prompts)


def _generate(args: argparse.Namespace) -> int:
    from .pipeline import GenerateOptions, plan, run_plan

    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    # a warning is a message to the user here, not a source location
    warnings.formatwarning = lambda msg, cat, *_a, **_k: f"cogsample generate: warning ({cat.__name__}): {msg}\n"
    try:
        opts = GenerateOptions(
            prompts=_read_prompts(args),
            model=args.model,
            negative_prompt=args.negative_prompt,
            uncond=args.uncond,
            image=args.image,
            frames=args.frames,
            height=args.height,
            width=args.width,
            steps=args.steps,
            sampler=args.sampler,
            guidance=args.guidance,
            scale=args.scale,
            sampler_config=args.sampler_config,
            profile=args.profile,
            seed=args.seed,
            out=args.out,
            dtype=args.dtype,
            device=args.device,
            fps=args.fps,
        )
        p = plan(opts)
    except ValueError as e:
        print(f"cogsample generate: error: {e}", file=sys.stderr)
        return 2
    s = p.sampling
    log(
        f"{len(p.stems)} video(s) of {p.frames} frames at {p.width}x{p.height} on {p.info.name}: "
        f"{s.sampler}, {s.steps} steps, {type(s.guidance).__name__}, profile {p.options.profile}, uncond {p.uncond}"
    )
    progress = None if args.quiet else Progress()
    start = time.perf_counter()
    try:
        results = run_plan(p, progress=progress, log=log)
    finally:
        if progress is not None:
            progress.close()
    for r in results:
        print(r.files["video"])
    log(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _add_generate(sub) -> None:
    from .pipeline import DTYPES, GUIDANCE, PROFILES, UNCOND

    g = sub.add_parser(
        "generate",
        help="prompt (and image) to video: mp4, latents, JSON and a contact sheet",
        description="Generate videos. With no --model, the built-in exact model (no weights).",
    )
    g.add_argument(
        "--model",
        default="builtin",
        help="builtin (default), builtin-i2v, or a local diffusers-format CogVideoX folder",
    )
    g.add_argument("--prompt", action="append", help="a prompt (repeat for several videos)")
    g.add_argument("--prompts-file", help="a text file with one prompt per line")
    g.add_argument("--negative-prompt", help="the unconditional branch's prompt (implies --uncond negative-prompt)")
    g.add_argument(
        "--uncond",
        choices=UNCOND,
        help="unconditional branch: zero embedding (sat default) or the encoded negative prompt (diffusers default)",
    )
    g.add_argument("--image", help="first frame for an image-to-video model")
    g.add_argument("--frames", type=int, help="frames, 4k+1 (default: the model's)")
    g.add_argument("--height", type=int, help="pixels, a multiple of 16 (default: the model's)")
    g.add_argument("--width", type=int, help="pixels, a multiple of 16 (default: the model's)")
    g.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    g.add_argument("--sampler", help="a sampler name (cogsample samplers); default: the profile's")
    g.add_argument("--guidance", choices=GUIDANCE, default="dynamic", help="classifier-free guidance (default dynamic)")
    g.add_argument("--scale", type=float, default=6.0, help="guidance scale (default 6)")
    g.add_argument("--sampler-config", help="a SAT model yaml whose sampler_config/denoiser_config to use")
    g.add_argument(
        "--profile",
        choices=PROFILES,
        default="sat",
        help="reproduce the SAT reference (default) or diffusers' pipeline, bit for bit",
    )
    g.add_argument("--seed", type=int, default=42, help="seed of the first video; video k uses seed + k")
    g.add_argument("--out", default="outputs", help="output directory (default ./outputs)")
    g.add_argument("--dtype", choices=sorted(DTYPES), help="model dtype (default float32 on CPU, bfloat16 on GPU)")
    g.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    g.add_argument("--fps", type=int, help="frames per second of the mp4 (default: the model's, 8 for CogVideoX 1.0)")
    g.add_argument("--quiet", action="store_true", help="print only the written video paths")
    g.set_defaults(func=_generate)


def _captions(args: argparse.Namespace) -> int:
    from .models.builtin import captions

    for c in captions():
        print(c)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cogsample", description="CogVideoX sampling, bit-exact with the reference.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    g = sub.add_parser("golden", help="replay golden vectors recorded from the reference; exit 0 iff all match exactly")
    g.add_argument("dirs", nargs="+", metavar="DIR", help="a directory with index.json and its cases")
    g.set_defaults(func=_golden)
    s = sub.add_parser("samplers", help="list the samplers, their SAT names and options")
    s.set_defaults(func=_samplers)
    c = sub.add_parser("captions", help="list the built-in model's clips (what its prompts can ask for)")
    c.set_defaults(func=_captions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
