"""Command line: ``cogsample generate``, ``golden DIR...``, ``samplers``, ``captions``."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..pipeline.progress import BatchProgress, Progress, quiet_libraries, say
from . import bench, captions, golden, samplers, train
from .errors import missing_extra, usage_error

__all__ = ["BatchProgress", "Progress", "build_parser", "main"]


def _windows_note(p) -> str:
    w = p.windows
    if w is None:
        return ""
    n = p.forwards_per_call
    return (
        f"; {p.shape[1]} latent frames in {n} context windows of {w.frames} (overlap {w.overlap}): "
        f"{n}x the forwards per step" + (", noise repeated" if p.options.noise_repeat else "")
    )


def _entries(args: argparse.Namespace) -> list[tuple[str, Any]]:
    from ..jobs.batch import read_prompts_file

    entries: list[tuple[str, Any]] = [("", {"prompt": p}) for p in args.prompt or []]
    if args.prompts_file:
        # a bad line stays in place, so that every line's errors (reading and planning) are listed at once
        entries += read_prompts_file(args.prompts_file, keep_bad=True)
    return entries


def _varied(values: Sequence[Any], plural: str) -> str:
    """One value as itself; numbers as their range (``9-13``); up to three others listed, more
    as ``N PLURAL``: what the batch header says of a setting the lines choose themselves."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) == 1:
        return str(distinct[0])
    if all(isinstance(v, int) for v in distinct):
        return f"{min(distinct)}-{max(distinct)}"
    if len(distinct) <= 3:
        return " / ".join(map(str, distinct))
    return f"{len(distinct)} {plural}"


def _header(plans: Sequence[Any], count: str, profile: str) -> str:
    """The batch's first line: what its videos are, each setting as one value or its spread over
    the videos (the lines of a JSONL file may set their own frames, size, steps, ...)."""
    size = _varied([f"{p.width}x{p.height}" for p in plans], "sizes")
    windows = list(dict.fromkeys(_windows_note(p) for p in plans))
    note = windows[0] if len(windows) == 1 else "; context windows per video"
    return (
        f"{count} of {_varied([p.frames for p in plans], 'frame counts')} frames at {size} on {plans[0].info.name}: "
        f"{_varied([p.sampling.sampler for p in plans], 'samplers')}, "
        f"{_varied([p.sampling.steps for p in plans], 'step counts')} steps, "
        f"{_varied([type(p.sampling.guidance).__name__ for p in plans], 'guidances')}, profile {profile}, "
        f"uncond {_varied([p.uncond for p in plans], 'unconds')}" + note
    )


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _which(labels: Sequence[str]) -> str:
    """``FILE lines 1 and 2`` for ``FILE line 1``, ``FILE line 2``; other labels listed."""
    files = {label.rpartition(" line ")[0] for label in labels}
    if len(files) == 1 and all(" line " in label for label in labels):
        return f"{files.pop()} lines {_and([label.rpartition(' line ')[2] for label in labels])}"
    return _and(list(labels))


def _generate(args: argparse.Namespace) -> int:
    from ..jobs.batch import Interrupted, batch_options, count_finished, plan_jobs, repeats, run_batch, signals_raise
    from ..jobs.distributed import Launch
    from ..jobs.outdir import OutDir, WriteError
    from ..models import check_installed
    from ..pipeline.cost import describe
    from ..pipeline.pipeline import GenerateOptions

    def log(m: str) -> None:
        if not args.quiet:
            say(f"{prefix}{m}")

    prefix = ""
    launch = None
    # a warning is a message to the user here, not a source location
    warnings.formatwarning = lambda msg, cat, *_a, **_k: f"cogsample generate: warning ({cat.__name__}): {msg}\n"
    try:
        launch = Launch.from_env()
        if launch.distributed:
            prefix = f"rank {launch.rank}/{launch.world_size}: "
        if args.workers is not None and args.ray is None:
            raise ValueError("--workers goes with --ray (under torchrun, each rank is one worker)")
        parallel = None
        if args.parallel is not None:
            from ..sampling.parallel import ParallelConfig, check_world

            parallel = ParallelConfig.parse(args.parallel)
            if args.ray is not None:
                raise ValueError("--parallel runs under torchrun (one rank per process); it does not go with --ray")
            if parallel.degree > 1 and not launch.distributed:
                raise ValueError(
                    f"--parallel {parallel} makes each video on {parallel.degree} processes: run it as "
                    f"torchrun --nproc-per-node {parallel.degree} -m cogsample generate ... --parallel {parallel}"
                )
            check_world(parallel, launch.world_size)
        if args.ray is not None:
            if launch.distributed:
                raise ValueError("--ray starts its own workers: run it as one process, not under torchrun")
            if args.device is not None:
                raise ValueError(
                    f"--device {args.device!r} goes with one process; with --ray each worker takes its GPU"
                )
            if args.workers is not None and args.workers < 1:
                raise ValueError(f"--workers must be >= 1, got {args.workers}")
            from ..jobs.raybatch import check_ray

            check_ray()
        import torch

        device = launch.device(args.device, torch.cuda.is_available())
        base = GenerateOptions(
            prompts=(),
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
            device=device,
            fps=args.fps,
            grid=args.grid,
            cfg_index=args.cfg_index,
            cfg_interval=args.cfg_interval,
            skip_unit_cfg=args.skip_unit_cfg,
            cache=args.cache,
            cache_kind=args.cache_kind,
            offload=args.offload,
            vae_tiling=args.vae_tiling,
            initial_noise=args.initial_noise,
            context=args.context,
            context_frames=args.context_frames,
            context_overlap=args.context_overlap,
            noise_repeat=args.noise_repeat,
        )
        check_installed(base.model, base.profile)  # once, before the lines are planned
        jobs = batch_options(base, _entries(args), fast=args.fast)
        items = plan_jobs(jobs, memory=args.ray is None)  # Ray's workers check their own memory
        if parallel is not None:
            from ..pipeline.pipeline import check_parallel

            check_parallel(parallel, items[0].plan.info)
        out = OutDir(args.out)
        out.check_writable()
        groups = None
        if parallel is not None:
            from ..sampling.parallel import ParallelGroups, init_parallel

            init_parallel(items[0].plan.device)
            groups = ParallelGroups.build(parallel)
    except ValueError as e:
        return usage_error(f"cogsample generate: error: {e}", launch)
    if groups is not None:
        # one video group makes each video: the leader speaks for it, the others only compute
        prefix = f"video group {groups.group}/{groups.groups}: " if groups.groups > 1 else ""
        if not groups.leader:
            args.quiet = True
    if args.quiet and base.model not in ("builtin", "builtin-i2v"):
        quiet_libraries()
    mine = launch.share(items) if groups is None else items[groups.group :: groups.groups]
    if groups is not None and groups.config.cfg > 1 and groups.leader:
        from ..sampling.guidance import NoGuidance

        if all(isinstance(item.plan.sampling.guidance, NoGuidance) for item in mine):
            log("warning: --parallel cfg=2 without guidance: the unconditional rank only waits (use ulysses instead)")
    leads = groups is None or groups.leader
    # the same video asked for twice (everything that defines it equal) is made once: say so
    label = {id(item): item.where or f"--prompt {n + 1}" for n, item in enumerate(items)}
    for ns in repeats(mine):
        if leads:
            say(
                f"{prefix}cogsample generate: warning: {_which([label[id(mine[n])] for n in ns])} define the same "
                f"video ({mine[ns[0]].stem}): made once, its path printed for each"
            )
    unique = len({item.stem for item in mine})
    count = f"{unique} video(s)" + (f" ({len(mine)} asked for)" if unique != len(mine) else "")
    plans = [item.plan for item in (mine or items)]
    if args.ray is None and groups is not None:
        log(
            _header(plans, count, base.profile)
            + f"; each on {groups.config.degree} ranks ({groups.config}); {describe([i.plan for i in mine])}"
        )
    elif args.ray is None:
        log(
            _header(plans, count, base.profile)
            + (
                f" (videos {launch.rank}, {launch.rank} + {launch.world_size}, ... of {len(items)})"
                if launch.distributed
                else ""
            )
            + f"; {describe([i.plan for i in mine])}"
        )

    paths = sys.stdout  # the video paths, and only they, go here (Ray's messages go to stderr)

    asked = Counter(out.files(item.stem)["video"].name for item in mine)  # 2: a video two lines ask for
    batch = BatchProgress(unique, log)

    def finished(r) -> None:
        if not leads:
            return
        for _ in range(asked.get(r.files["video"].name, 1)):
            say(str(r.files["video"]), paths)
        if r.skipped:
            log(f"finished before: {r.files['video']}")
        batch.result(r)

    progress = None if args.quiet else Progress(bar=False if launch.distributed else None, prefix=prefix)
    try:
        with signals_raise():
            if args.ray is not None:
                import contextlib

                from ..jobs.raybatch import run_on_ray

                with contextlib.redirect_stdout(sys.stderr):
                    run_on_ray(
                        jobs,
                        out,
                        address=args.ray or None,
                        workers=args.workers,
                        overwrite=args.overwrite,
                        on_result=finished,
                        log=log,
                        quiet=args.quiet,
                    )
            else:
                from ..pipeline.pipeline import Pipeline

                def load() -> Pipeline:
                    return Pipeline.load(
                        base.model,
                        device=device,
                        dtype=args.dtype,
                        profile=base.profile,
                        offload=base.offload,
                        log=log,
                        parallel=groups,
                    )

                record = launch.record()
                if groups is not None:
                    record.update(parallel=groups.config.to_dict(), video_group=groups.group, ranks=groups.ranks)
                run_batch(
                    mine,
                    out,
                    pipeline=load,
                    overwrite=args.overwrite,
                    run=record,
                    group=groups,
                    on_result=finished,
                    progress=progress,
                    log=log,
                )
    except Interrupted as e:
        if progress is not None:
            progress.close()
        if groups is not None and not groups.leader:
            return e.exit_code  # the leader reports for its group
        done, total = getattr(e, "finished", None) or count_finished(mine, out)
        say(f"{prefix}interrupted: {done} of {total} videos finished; run the same command again to resume")
        return e.exit_code
    except OSError as e:
        if progress is not None:
            progress.close()
        what = str(e) if isinstance(e, WriteError) else f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        say(f"{prefix}cogsample generate: error: {what}")
        if leads:
            log(batch.summary(failed=1))
        return 1
    finally:
        if progress is not None:
            progress.close()
    if leads:
        log(batch.summary())
    if groups is not None:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _add_generate(sub) -> None:
    from ..pipeline.pipeline import (
        CACHE_KINDS,
        CFG_INDEX,
        CONTEXT,
        CONTEXT_OVERLAP_SHARE,
        DTYPES,
        FAST,
        GRIDS,
        GUIDANCE,
        OFFLOAD,
        PROFILES,
        UNCOND,
        VAE_TILING,
    )

    g = sub.add_parser(
        "generate",
        help="prompt (and image) to video: mp4, latents, JSON and a contact sheet",
        description="Generate videos. With no --model, the built-in exact model (no weights).",
    )
    g.add_argument(
        "--model",
        default="builtin",
        help="builtin (default), builtin-i2v, builtin-trained, builtin-trained-i2v, or a local diffusers-format "
        "CogVideoX folder",
    )
    g.add_argument("--prompt", action="append", help="a prompt (repeat for several videos)")
    g.add_argument(
        "--prompts-file",
        help="one prompt a line, or JSONL (.jsonl, or lines starting with '{'): one object a line with 'prompt' and "
        "any per-video option (image, seed, negative_prompt, frames, height, width, steps, scale, ...); the "
        "command line's options are the defaults",
    )
    g.add_argument("--negative-prompt", help="the unconditional branch's prompt (implies --uncond negative-prompt)")
    g.add_argument(
        "--uncond",
        choices=UNCOND,
        help="unconditional branch: zero embedding (sat default) or the encoded negative prompt (diffusers default)",
    )
    g.add_argument("--image", help="first frame for an image-to-video model")
    g.add_argument(
        "--frames",
        type=_frames,
        help="frames, 4k+1, or NX: N times the model's native length (4x: 4x its latent frames); default: the "
        "model's. Beyond its native length a trained model samples in context windows (see --context)",
    )
    g.add_argument("--height", type=int, help="pixels, a multiple of 16 (default: the model's)")
    g.add_argument("--width", type=int, help="pixels, a multiple of 16 (default: the model's)")
    g.add_argument(
        "--steps",
        type=int,
        help="sampler steps; they also set DynamicCFG's num_steps, so the guidance ramp spans the run, with or "
        "without --sampler-config (default: the yaml's own counts as written, else 50; with --fast, its count)",
    )
    g.add_argument("--sampler", help="a sampler name (cogsample samplers); default: the profile's")
    g.add_argument("--guidance", choices=GUIDANCE, default="dynamic", help="classifier-free guidance (default dynamic)")
    g.add_argument("--scale", type=float, default=6.0, help="guidance scale (default 6)")
    g.add_argument(
        "--sampler-config",
        help="a SAT model yaml whose sampler_config/denoiser_config to use: a path, or a shipped name "
        "(cogvideox-2b, cogvideox-5b, cogvideox-5b-i2v, cogvideox1.5-5b, cogvideox1.5-5b-i2v)",
    )
    g.add_argument(
        "--profile",
        choices=PROFILES,
        default="sat",
        help="reproduce the SAT reference (default) or diffusers' pipeline, bit for bit",
    )
    g.add_argument("--seed", type=int, default=42, help="seed of the first video; video k uses seed + k")
    g.add_argument("--out", default="outputs", help="output directory (default ./outputs)")
    g.add_argument(
        "--dtype",
        choices=sorted(DTYPES),
        help="model dtype (default: float32 on the CPU; on a GPU what the release runs in: float16 for 2B, "
        "else bfloat16)",
    )
    g.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if available)")
    g.add_argument("--fps", type=int, help="frames per second of the mp4 (default: the model's, 8 for CogVideoX 1.0)")
    g.add_argument(
        "--vae-tiling",
        choices=VAE_TILING,
        default="auto",
        help="decode in spatial tiles: on, off (as SAT and diffusers' pipelines), or auto (default): tiled only "
        "when an untiled decode would not fit the device's free memory; recorded in each video's JSON",
    )
    g.add_argument(
        "--initial-noise",
        metavar="FILE",
        help="start from this noise instead of drawing it: a .safetensors or .pt tensor of the sampled latent "
        "shape (1 or one row per video, T, 16, H/8, W/8), e.g. what a SAT or diffusers run drew",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only the video paths (one a line, as each is finished; warnings still go to stderr)",
    )
    g.add_argument(
        "--overwrite",
        action="store_true",
        help="make every video again (default: videos already finished in --out are skipped, unfinished ones redone)",
    )
    c = g.add_argument_group("videos longer than the model's native length: temporal context windows")
    c.add_argument(
        "--context",
        choices=CONTEXT,
        default="auto",
        help="auto (default): a latent longer than a window is denoised in overlapping windows blended every "
        "step (for the built-in exact model only with --context-frames); off: the whole length at once",
    )
    c.add_argument(
        "--context-frames",
        type=int,
        metavar="N",
        help="latent frames per window (default: the model's native latent length, 13 for 49 frames)",
    )
    c.add_argument(
        "--context-overlap",
        type=int,
        metavar="N",
        help=f"latent frames neighbouring windows share (default: {CONTEXT_OVERLAP_SHARE:.2g} of a window, rounded)",
    )
    c.add_argument(
        "--noise-repeat",
        action="store_true",
        help="FreeNoise-style noise: after the first window, the initial noise and every in-loop draw are a "
        "shuffled repeat of the first window's (the shuffle seeded by --seed)",
    )
    r = g.add_argument_group("many processes and machines (torchrun; Ray: pip install 'cogsample[ray]')")
    r.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run the batch on a Ray cluster (ADDRESS, e.g. ray://head:10001 or auto; none: a local cluster); "
        "--out must be a folder every worker sees",
    )
    r.add_argument(
        "--workers",
        type=int,
        help="Ray workers, each with one GPU (default: one per GPU of the cluster; 1 on a cluster without GPUs)",
    )
    r.add_argument(
        "--parallel",
        metavar="cfg=2,ulysses=U",
        help="make each video on several ranks (under torchrun, 2U of them or a multiple): cfg=2 puts the two CFG "
        "branches on two ranks, ulysses=U shards the transformer's video tokens over U ranks (U divides the heads); "
        "rank 0 of each group writes; every rank holds the whole model",
    )
    f = g.add_argument_group("fewer forwards (off by default; measured by `cogsample bench`)")
    f.add_argument(
        "--fast",
        action="store_true",
        help=f"the measured fewest-forwards setup: --sampler {FAST['sampler']} --grid logsnr --cfg-index loop "
        f"--cfg-interval {FAST['cfg_interval'][0]}:1 --skip-unit-cfg --steps {FAST['steps']} (sat profile)",
    )
    f.add_argument("--grid", choices=GRIDS, default="reference", help="timestep grid (sat): reference = trailing")
    f.add_argument("--cfg-index", choices=CFG_INDEX, default="reference", help="DynamicCFG's step index")
    f.add_argument(
        "--cfg-interval",
        type=_interval,
        metavar="START:END",
        help="guide only steps with START <= i/steps < END (fractions); conditional-only elsewhere",
    )
    f.add_argument("--skip-unit-cfg", action="store_true", help="no uncond forward where the scale is exactly 1")
    f.add_argument("--cache", type=float, metavar="THRESHOLD", help="step cache: reuse while the change < THRESHOLD")
    f.add_argument("--cache-kind", choices=CACHE_KINDS, help="output (any model) or first-block (CogVideoX default)")
    f.add_argument("--offload", choices=OFFLOAD, default="none", help="CPU offload of a CogVideoX model's parts")
    g.set_defaults(func=_generate)


def _frames(text: str) -> int | str:
    """``--frames``: an integer, or ``NX`` (checked against the model by the plan)."""
    t = text.strip()
    if t.lower().endswith("x"):
        return t.lower()
    try:
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected frames (4k+1) or a multiple of the native length such as 4x, got {text!r}"
        ) from None


def _interval(text: str) -> tuple[float, float]:
    try:
        start, _, end = text.partition(":")
        return float(start), float(end) if end else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END fractions such as 0.4:1, got {text!r}") from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from ..version import __version__

    try:
        torch = version("torch")
    except PackageNotFoundError:
        torch = "not installed"
    return f"cogsample {__version__} (torch {torch}, Python {sys.version.split()[0]})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cogsample", description="CogVideoX sampling, bit-exact with the reference.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    _add_generate(sub)
    for command in (golden, samplers, captions, train, bench):
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


if __name__ == "__main__":
    sys.exit(main())
