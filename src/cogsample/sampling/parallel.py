"""One video on several processes (``torch.distributed``): CFG parallel and Ulysses sequence parallel.

Layout. ``--parallel cfg=C,ulysses=U`` groups ``D = C U`` ranks to make one video together; a
world of ``k D`` ranks is ``k`` such groups, each making its share of a batch. Within a group,
local rank ``l = c U + s``: ``c`` is the CFG branch it computes (0: unconditional, 1: conditional,
the order of the batched rows), ``s`` its place in the sequence-parallel group ``{c U + s'}``;
the ranks with the same ``s`` form a CFG pair ``{c' U + s}``.

* **CFG parallel** (:class:`CFGParallel`): a guided call runs the unconditional rows on branch 0
  and the conditional rows on branch 1 and all-gathers them, so every rank assembles the same
  ``u + scale (c - u)``; a conditional-only call (guidance interval, ``skip_unit_cfg``, no
  guidance) runs on branch 1 and is broadcast to branch 0, which waits meanwhile.
* **Ulysses** (the collectives below, used by a model's attention): tokens sharded over the
  ``U`` ranks of a sequence group; attention turns ``(heads, S/U)`` shards into ``(heads/U, S)``
  by an all-to-all and back. Shards may be uneven (``S`` need not divide by ``U``).

Every rank runs the whole sampler on the same latents: network outputs are gathered, so the
sampler's state, its noise draws and its result are the same bits on every rank of a group.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .denoiser import Level
from .guidance import Branches, Conditioning

Tensor = torch.Tensor

__all__ = [
    "CFGParallel",
    "ParallelConfig",
    "ParallelGroups",
    "all_gather_heads",
    "gather_sequence",
    "heads_to_sequence",
    "sequence_to_heads",
    "shard_sizes",
]


@dataclass(frozen=True)
class ParallelConfig:
    """``cfg`` (1 or 2) ranks for the CFG branches x ``ulysses`` ranks sharing the tokens."""

    cfg: int = 1
    ulysses: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.cfg, bool) or self.cfg not in (1, 2):
            raise ValueError(f"parallel cfg must be 1 or 2 (one rank per CFG branch), got {self.cfg!r}")
        if isinstance(self.ulysses, bool) or not isinstance(self.ulysses, int) or self.ulysses < 1:
            raise ValueError(f"parallel ulysses must be an integer >= 1, got {self.ulysses!r}")

    @property
    def degree(self) -> int:
        """Ranks that make one video together."""
        return self.cfg * self.ulysses

    @classmethod
    def parse(cls, text: str) -> ParallelConfig:
        """``"cfg=2"``, ``"ulysses=4"``, ``"cfg=2,ulysses=2"`` (``ValueError`` naming what is wrong)."""
        values: dict[str, int] = {}
        for part in str(text).split(","):
            m = re.fullmatch(r"\s*(\w+)\s*=\s*(\d+)\s*", part)
            if m is None or m.group(1) not in ("cfg", "ulysses") or m.group(1) in values:
                raise ValueError(
                    f"--parallel {text!r}: expected a comma-separated list of cfg=1|2 and ulysses=N, "
                    "e.g. cfg=2,ulysses=2"
                )
            values[m.group(1)] = int(m.group(2))
        return cls(**values)

    def __str__(self) -> str:
        return f"cfg={self.cfg},ulysses={self.ulysses}"

    def to_dict(self) -> dict[str, int]:
        return {"cfg": self.cfg, "ulysses": self.ulysses}


#: How long a rank of a video group waits for its leader's next message.
CONTROL_TIMEOUT = timedelta(hours=12)


def shard_sizes(n: int, parts: int) -> list[int]:
    """``n`` items cut into ``parts`` contiguous shards, the first ``n % parts`` one longer."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


@dataclass
class ParallelGroups:
    """This rank's place in the layout (module docstring) and its process groups.

    ``group``: which of ``groups`` video groups it belongs to; ``cfg_index`` / ``cfg_group``: its
    CFG branch and pair (None with ``cfg=1``); ``seq_rank`` / ``seq_group``: its place in the
    sequence group (None with ``ulysses=1``); ``control``: a gloo group over the video group, for
    the small messages that keep its ranks in step (which video next); ``leader``: local rank 0,
    the one that writes."""

    config: ParallelConfig
    rank: int
    world_size: int
    group: int
    groups: int
    ranks: list[int]
    cfg_index: int
    cfg_ranks: list[int]
    cfg_group: Any
    seq_rank: int
    seq_ranks: list[int]
    seq_group: Any
    control: Any

    @property
    def leader(self) -> bool:
        return self.rank == self.ranks[0]

    @classmethod
    def build(cls, config: ParallelConfig) -> ParallelGroups:
        """Make the process groups (every rank calls this, in the same order); needs
        ``torch.distributed`` initialised with a world size that is a multiple of the degree."""
        if not dist.is_initialized():
            raise RuntimeError("ParallelGroups.build needs torch.distributed initialised (init_parallel)")
        rank, world = dist.get_rank(), dist.get_world_size()
        d, u = config.degree, config.ulysses
        check_world(config, world)
        mine: dict[str, Any] = {}
        # new_group is collective over the whole world: every rank makes every group, in one order.
        for g in range(world // d):
            base = g * d
            ranks = list(range(base, base + d))
            # followers wait here while their leader waits for another process's video: hours, not minutes
            control = dist.new_group(ranks, backend="gloo", timeout=CONTROL_TIMEOUT)
            if rank in ranks:
                mine.update(group=g, ranks=ranks, control=control)
            for s in range(u):
                pair = [base + c * u + s for c in range(config.cfg)]
                handle = dist.new_group(pair) if config.cfg > 1 else None
                if rank in pair:
                    mine.update(cfg_ranks=pair, cfg_group=handle, cfg_index=pair.index(rank))
            for c in range(config.cfg):
                seq = [base + c * u + s for s in range(u)]
                handle = dist.new_group(seq) if u > 1 else None
                if rank in seq:
                    mine.update(seq_ranks=seq, seq_group=handle, seq_rank=seq.index(rank))
        return cls(config=config, rank=rank, world_size=world, groups=world // d, **mine)

    def cfg_parallel(self) -> CFGParallel | None:
        """The branch runner for :class:`~cogsample.sampling.guidance.GuidedModel` (None with ``cfg=1``)."""
        if self.config.cfg == 1:
            return None
        return CFGParallel(self.cfg_group, self.cfg_index, self.cfg_ranks)

    def send(self, obj: Any) -> Any:
        """``obj`` from the leader to every rank of the video group (returns it everywhere)."""
        box = [obj if self.leader else None]
        dist.broadcast_object_list(box, src=self.ranks[0], group=self.control)
        return box[0]


def check_world(config: ParallelConfig, world_size: int) -> None:
    """``ValueError`` unless ``world_size`` ranks split into groups of ``config.degree``."""
    if world_size % config.degree:
        raise ValueError(
            f"--parallel {config} needs {config.degree} processes per video (or a multiple), but "
            f"WORLD_SIZE is {world_size}: torchrun --nproc-per-node {config.degree} -m cogsample generate ..."
        )


def init_parallel(device: torch.device | str) -> None:
    """Join torchrun's process group once (``env://``): NCCL for CUDA devices, gloo otherwise."""
    if dist.is_initialized():
        return
    device = torch.device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)


# --------------------------------------------------------------------------- CFG parallel


class CFGParallel:
    """CFG branches on two ranks (the pair ``ranks``, this one computing branch ``index``).

    ``bind(cond)`` gives the :class:`~cogsample.sampling.guidance.Branches` that
    :class:`~cogsample.sampling.guidance.GuidedModel` calls."""

    def __init__(self, group: Any, index: int, ranks: Sequence[int]):
        if index not in (0, 1) or len(ranks) != 2:
            raise ValueError(f"CFG parallel needs a pair of ranks and a branch 0 or 1, got {ranks}, {index}")
        self.group = group
        self.index = index
        self.ranks = list(ranks)

    def bind(self, cond: Conditioning) -> Branches:
        return _CFGParallelBranches(self, cond)


class _CFGParallelBranches(Branches):
    def __init__(self, cfg: CFGParallel, cond: Conditioning):
        self.cfg = cfg
        self.cond = cond
        self.mine = cond.uncond() if cfg.index == 0 else cond.context

    def both(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> tuple[Tensor, Tensor]:
        c = self.cond
        out = fn(x, level, self.mine, c.image_latents, c.ofs).contiguous()
        parts = [torch.empty_like(out) for _ in range(2)]
        dist.all_gather(parts, out, group=self.cfg.group)
        return parts[0], parts[1]

    def conditional(self, fn: Callable[..., Tensor], x: Tensor, level: Level) -> Tensor:
        c, src = self.cond, self.cfg.ranks[1]
        if self.cfg.index == 1:
            out = fn(x, level, c.context, c.image_latents, c.ofs).contiguous()
            _broadcast_header(out, src, self.cfg.group)
        else:
            # the unconditional rank waits for the conditional branch's result
            out = _broadcast_header(None, src, self.cfg.group, device=x.device)
        dist.broadcast(out, src=src, group=self.cfg.group)
        return out


_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _broadcast_header(t: Tensor | None, src: int, group: Any, device: torch.device | None = None) -> Tensor:
    """Send ``t``'s dtype and shape from ``src`` (receivers get an empty tensor of them)."""
    if t is not None:
        header = torch.tensor([_DTYPES.index(t.dtype), t.ndim, *t.shape, *[0] * (8 - t.ndim)], device=t.device)
        dist.broadcast(header, src=src, group=group)
        return t
    header = torch.zeros(10, dtype=torch.int64, device=device)
    dist.broadcast(header, src=src, group=group)
    code, ndim, *shape = header.tolist()
    return torch.empty(shape[:ndim], dtype=_DTYPES[code], device=device)


# --------------------------------------------------------------------------- Ulysses collectives


def sequence_to_heads(x: Tensor, sizes: Sequence[int], group: Any) -> Tensor:
    """``(..., H, S_r, d)`` on rank ``r`` of ``group`` -> ``(..., H/U, S, d)``: rank ``r`` gets heads
    ``[r H/U, (r+1) H/U)`` of every rank's tokens, in rank order (``S = sum(sizes)``)."""
    u, r = len(sizes), dist.get_rank(group)
    *lead, heads, s_r, d = x.shape
    if heads % u or s_r != sizes[r]:
        raise ValueError(f"sequence_to_heads: {heads} heads over {u} ranks, shard {s_r} of sizes {list(sizes)}")
    h = heads // u
    send = torch.cat([x[..., j * h : (j + 1) * h, :, :].reshape(-1) for j in range(u)])
    per_token = math.prod(lead) * h * d
    recv = send.new_empty(per_token * sum(sizes))
    dist.all_to_all_single(
        recv,
        send,
        output_split_sizes=[per_token * n for n in sizes],
        input_split_sizes=[per_token * s_r] * u,
        group=group,
    )
    pieces = recv.split([per_token * n for n in sizes])
    return torch.cat([p.view(*lead, h, n, d) for p, n in zip(pieces, sizes, strict=True)], dim=-2)


def heads_to_sequence(y: Tensor, sizes: Sequence[int], group: Any) -> Tensor:
    """The inverse of :func:`sequence_to_heads`: ``(..., H/U, S, d)`` -> ``(..., H, S_r, d)``."""
    u, r = len(sizes), dist.get_rank(group)
    *lead, h, s, d = y.shape
    if s != sum(sizes):
        raise ValueError(f"heads_to_sequence: {s} tokens, shards {list(sizes)}")
    send = torch.cat([p.reshape(-1) for p in y.split(list(sizes), dim=-2)])
    per_token = math.prod(lead) * h * d
    recv = send.new_empty(per_token * sizes[r] * u)
    dist.all_to_all_single(
        recv,
        send,
        output_split_sizes=[per_token * sizes[r]] * u,
        input_split_sizes=[per_token * n for n in sizes],
        group=group,
    )
    return torch.cat([p.view(*lead, h, sizes[r], d) for p in recv.chunk(u)], dim=-3)


def all_gather_heads(t: Tensor, group: Any) -> Tensor:
    """``(..., H/U, L, d)`` from each rank -> ``(..., H, L, d)``, heads in rank order."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.cat(parts, dim=-3)


def gather_sequence(x: Tensor, sizes: Sequence[int], group: Any, dim: int = 1) -> Tensor:
    """Every rank's shard of ``dim`` (``sizes[r]`` long) -> the whole, in rank order."""
    top = max(sizes)
    pad = top - x.shape[dim]
    if pad:
        x = torch.cat([x, x.new_zeros(*x.shape[:dim], pad, *x.shape[dim + 1 :])], dim=dim)
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat([p.narrow(dim, 0, n) for p, n in zip(parts, sizes, strict=True)], dim=dim)
