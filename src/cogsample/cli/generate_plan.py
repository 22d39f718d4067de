"""``generate``'s options checked and every video planned before any work: a :class:`Batch`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..pipeline.progress import say

if TYPE_CHECKING:
    from ..jobs.batch import BatchItem
    from ..jobs.distributed import Launch
    from ..jobs.outdir import OutDir
    from ..pipeline.options import GenerateOptions
    from ..sampling.parallel import ParallelConfig, ParallelGroups


@dataclass
class Batch:
    """The planned videos, where they go, and this process's part: which videos it makes, whether it
    speaks for them (``leads``, ``quiet``) and the prefix of its lines (its rank or video group)."""

    args: argparse.Namespace
    launch: Launch
    base: GenerateOptions  # the command line's options: each line's defaults
    jobs: list[Any]  # each line's options
    items: list[BatchItem]  # every video of the batch, planned
    out: OutDir
    device: str | None
    groups: ParallelGroups | None  # --parallel: the ranks that make each video
    mine: list[BatchItem] = field(init=False)
    prefix: str = field(init=False)
    quiet: bool = field(init=False)

    def __post_init__(self) -> None:
        groups, launch = self.groups, self.launch
        # one video group makes each video: the leader speaks for it, the others only compute
        self.quiet = self.args.quiet or (groups is not None and not groups.leader)
        if groups is None:
            self.mine = launch.share(self.items)
            self.prefix = f"rank {launch.rank}/{launch.world_size}: " if launch.distributed else ""
        else:
            self.mine = self.items[groups.group :: groups.groups]
            self.prefix = f"video group {groups.group}/{groups.groups}: " if groups.groups > 1 else ""

    @property
    def leads(self) -> bool:
        """Whether this process reports its videos (not a video group's other ranks)."""
        return self.groups is None or self.groups.leader

    @property
    def unique(self) -> int:
        """This process's distinct videos (the same video asked for twice is made once)."""
        return len({item.stem for item in self.mine})

    def log(self, message: str) -> None:
        """A line on stderr, after this process's prefix; none under ``--quiet``."""
        if not self.quiet:
            say(f"{self.prefix}{message}")


def plan(args: argparse.Namespace, launch: Launch) -> Batch:
    """Check the options and plan every line's video; a ValueError says what cannot run, before any work."""
    from .. import models
    from ..jobs.batch import batch_options, plan_jobs
    from ..jobs.outdir import OutDir
    from ..models import check_installed

    parallel = _check_engine(args, launch)
    import torch

    device = launch.device(args.device, torch.cuda.is_available())
    base = base_options(args, device)
    check_installed(base.model, base.profile)  # once, before the lines are planned
    jobs = batch_options(base, _entries(args), fast=args.fast)
    items = plan_jobs(jobs, memory=args.ray is None)  # Ray's workers check their own memory
    if parallel is not None:
        from ..pipeline.pipeline import check_parallel

        check_parallel(parallel, items[0].plan.info)
        for item in items:  # a step cache each rank must run alike (models.hook_caches)
            cache = item.plan.sampling.cache
            if cache is not None:
                models.check_cache(cache, cfg_parallel=parallel.cfg > 1, ulysses=parallel.ulysses > 1)
    out = OutDir(args.out)
    out.check_writable()
    groups = None
    if parallel is not None:
        from ..sampling.parallel import ParallelGroups, init_parallel

        init_parallel(items[0].plan.device)
        groups = ParallelGroups.build(parallel)
    return Batch(args, launch, base, jobs, items, out, device, groups)


def _check_engine(args: argparse.Namespace, launch: Launch) -> ParallelConfig | None:
    """What makes the videos: this process, torchrun's ranks (``--parallel``: several per video) or
    Ray's workers; a ValueError for options that do not go with it. The ``--parallel`` config, if any."""
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
            raise ValueError(f"--device {args.device!r} goes with one process; with --ray each worker takes its GPU")
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        from ..jobs.raybatch import check_ray

        check_ray()
    return parallel


def base_options(args: argparse.Namespace, device: str | None) -> GenerateOptions:
    """The command line's options, without prompts: the defaults of every line."""
    from ..pipeline.options import GenerateOptions

    return GenerateOptions(
        prompts=(),
        model=args.model,
        negative_prompt=args.negative_prompt,
        uncond=args.uncond,
        image=args.image,
        video=args.video,
        strength=args.strength,
        last_image=args.last_image,
        keyframes=args.keyframe,
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
        quantize=args.quantize,
        lora=tuple(args.lora or ()),
        lora_fuse=args.lora_fuse,
        vae_tiling=args.vae_tiling,
        initial_noise=args.initial_noise,
        context=args.context,
        context_frames=args.context_frames,
        context_overlap=args.context_overlap,
        noise_repeat=args.noise_repeat,
    )


def _entries(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """Each video asked for, with where it was asked (``FILE line N``; ``""`` for ``--prompt``)."""
    from ..jobs.batch import read_prompts_file

    entries: list[tuple[str, Any]] = [("", {"prompt": p}) for p in args.prompt or []]
    if args.prompts_file:
        # a bad line stays in place, so that every line's errors (reading and planning) are listed at once
        entries += read_prompts_file(args.prompts_file, keep_bad=True)
    return entries
