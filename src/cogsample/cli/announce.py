"""What ``generate`` says of its batch before any work: the videos asked for twice, a CFG-parallel
group with nothing to guide, and the header line (what the videos are and what they cost)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..pipeline.progress import say

if TYPE_CHECKING:
    from .generate_plan import Batch


def announce(batch: Batch) -> None:
    """The warnings, then the header line (Ray's workers say their own)."""
    _unguided_cfg_group(batch)
    _repeated_videos(batch)
    if batch.args.ray is None:
        batch.log(_header_line(batch))


def _unguided_cfg_group(batch: Batch) -> None:
    groups = batch.groups
    if groups is not None and groups.config.cfg > 1 and groups.leader:
        from ..sampling.guidance import NoGuidance

        if all(isinstance(item.plan.sampling.guidance, NoGuidance) for item in batch.mine):
            batch.log(
                "warning: --parallel cfg=2 without guidance: the unconditional rank only waits (use ulysses instead)"
            )


def _repeated_videos(batch: Batch) -> None:
    """The same video asked for twice (everything that defines it equal) is made once: say so."""
    from ..jobs.batch import repeats

    mine = batch.mine
    label = {id(item): item.where or f"--prompt {n + 1}" for n, item in enumerate(batch.items)}
    for ns in repeats(mine):
        if batch.leads:
            say(
                f"{batch.prefix}cogsample generate: warning: {_which([label[id(mine[n])] for n in ns])} define the "
                f"same video ({mine[ns[0]].stem}): made once, its path printed for each"
            )


def _header_line(batch: Batch) -> str:
    """The header, and how this process's share is made and what it costs."""
    from ..pipeline.cost import describe

    mine, items, launch, groups = batch.mine, batch.items, batch.launch, batch.groups
    count = f"{batch.unique} video(s)" + (f" ({len(mine)} asked for)" if batch.unique != len(mine) else "")
    header = _header([item.plan for item in (mine or items)], count, batch.base.profile)
    if groups is not None:
        return header + f"; each on {groups.config.degree} ranks ({groups.config}); {describe([i.plan for i in mine])}"
    return (
        header
        + (
            f" (videos {launch.rank}, {launch.rank} + {launch.world_size}, ... of {len(items)})"
            if launch.distributed
            else ""
        )
        + f"; {describe([i.plan for i in mine])}"
    )


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
        f"{_varied([_guidance(p.sampling) for p in plans], 'guidances')}, profile {profile}, "
        f"uncond {_varied([p.uncond for p in plans], 'unconds')}" + note
    )


def _guidance(sampling: Any) -> str:
    """The scale schedule's name, and the combine rule where one is set (``DynamicCFG + apg``)."""
    name = type(sampling.guidance).__name__
    return name if sampling.guider is None else f"{name} + {sampling.guider.name}"


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


def _windows_note(p: Any) -> str:
    """``; N latent frames in K context windows of ...`` for a plan sampled in windows, else ``""``."""
    w = p.windows
    if w is None:
        return ""
    n = p.forwards_per_call
    return (
        f"; {p.shape[1]} latent frames in {n} context windows of {w.frames} (overlap {w.overlap}): "
        f"{n}x the forwards per step" + (", noise repeated" if p.options.noise_repeat else "")
    )


def _which(labels: Sequence[str]) -> str:
    """``FILE lines 1 and 2`` for ``FILE line 1``, ``FILE line 2``; other labels listed."""
    files = {label.rpartition(" line ")[0] for label in labels}
    if len(files) == 1 and all(" line " in label for label in labels):
        return f"{files.pop()} lines {_and([label.rpartition(' line ')[2] for label in labels])}"
    return _and(list(labels))


def _and(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
