"""Batches: a list of videos, each made exactly once into one out folder, however many processes
share it and however they end.

* **Input**: ``--prompt`` texts, a text file (one prompt a line) or JSONL (one object a line:
  ``prompt`` and any per-video option, see :data:`PER_VIDEO`), all checked, with line numbers,
  before any work (:func:`read_prompts_file`, :func:`batch_items`).
* **Names** come from what defines a video (:func:`~cogsample.jobs.naming.video_stem`), so a rerun
  of the same command finds its finished videos and skips them; leftovers of unfinished ones are
  removed and they are made again (:mod:`cogsample.jobs.outdir` has the rules).
* **Running**: :func:`run_batch` makes each unfinished video under its claim, prints it as soon
  as it is finished (``on_result``), and leaves videos another live process holds for last,
  waiting for them then, so a process that dies mid-video never loses one.
* **Video groups** (``--parallel``): the ranks of a group make each video together; the leader
  alone decides (claims, skips) and writes, and tells the others which video is next
  (:class:`~cogsample.sampling.parallel.ParallelGroups`), so every rank runs the same videos in order.
* **Signals**: :func:`signals_raise` turns SIGINT and SIGTERM into :class:`Interrupted`, which
  unwinds through the writers (temporary files removed, claims released).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.lora import lora_pairs
from ..pipeline.keyframes import rebase_keyframes
from ..pipeline.options import PROCESS_OPTIONS, GenerateOptions, fast_options
from ..pipeline.pipeline import Pipeline
from ..pipeline.plan import Plan
from ..pipeline.planning import plan
from .interrupts import defer, deferring
from .naming import video_stem
from .outdir import Claim, OutDir
from .write import Result, write_video

__all__ = [
    "PER_VIDEO",
    "BatchItem",
    "Interrupted",
    "batch_items",
    "batch_options",
    "count_finished",
    "entry_options",
    "generate",
    "plan_jobs",
    "read_prompts_file",
    "repeats",
    "run_batch",
    "run_plan",
    "signals_raise",
]

#: The keys a JSONL line may set: ``prompt`` (required), ``fast`` (``--fast`` for that video) and
#: every generate option that is not fixed per process (:data:`~cogsample.pipeline.options.PROCESS_OPTIONS`).
PER_VIDEO = (
    "prompt",
    "fast",
    *(f.name for f in dataclasses.fields(GenerateOptions) if f.name not in ("prompts", *PROCESS_OPTIONS)),
)
_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,),
    "fast": (bool,),
    **{k: (str,) for k in ("image", "negative_prompt", "uncond", "sampler", "guidance", "sampler_config")},
    **{k: (str,) for k in ("grid", "cfg_index", "cache_kind", "vae_tiling", "initial_noise", "context")},
    **{k: (int,) for k in ("seed", "height", "width", "steps", "fps", "initial_noise_row")},
    **{k: (int,) for k in ("context_frames", "context_overlap")},
    "frames": (int, str),  # 4k+1, or "4x"
    "scale": (int, float),
    "video": (str,),
    "strength": (int, float),
    "cache": (int, float, str),  # "KIND[:key=value,...]" or a threshold number
    "skip_unit_cfg": (bool,),
    "noise_repeat": (bool,),
    "cfg_interval": (list, str),
    "last_image": (str,),
    "keyframes": (dict, list),  # {"FRAME": "PATH"} or ["FRAME=PATH", ...]
    "lora": (str, list, dict),  # "PATH[:WEIGHT]", a list of them, or {"path": ..., "weight": ...}
}


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (:func:`signals_raise`); ``exit_code`` is the shell's 128 + N."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` in the main thread (at
    once, between two Python operations), so every ``finally`` and writer cleans up."""

    def handler(signum: int, _frame: Any) -> None:
        if deferring():  # a claim or a file half taken: the step ends first, then this signal acts
            defer(signum)
            return
        raise Interrupted(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ----------------------------------------------------------------------------------------------
# input


def read_prompts_file(path: str | Path, *, keep_bad: bool = False) -> list[tuple[str, Any]]:
    """The entries of a prompts file as ``(where, options)``: ``where`` is ``"FILE line N"``,
    ``options`` at least ``{"prompt": ...}``. JSONL (a ``.jsonl``/``.ndjson`` name, or a first
    entry that starts with ``{``): one object a line, relative ``image``/``initial_noise``/
    ``sampler_config`` paths taken from the file's folder. Otherwise one prompt a line. Blank
    lines and lines starting with ``#`` are skipped. ``ValueError`` lists every bad line; with
    ``keep_bad``, a bad line's entry is ``(where, ValueError)`` instead, in its place, so that
    :func:`batch_items` reports it together with the other lines' planning errors (and every
    line keeps its index, hence its seed)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise ValueError(f"--prompts-file {str(p)!r} cannot be read: {reason}") from e
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    jsonl = p.suffix.lower() in (".jsonl", ".ndjson") or (bool(lines) and lines[0][1].startswith("{"))
    if not jsonl:
        return [(f"{p} line {n}", {"prompt": line}) for n, line in lines]
    entries, errors = [], []
    for n, line in lines:
        where = f"{p} line {n}"
        try:
            entries.append((where, _jsonl_entry(line, p.parent)))
        except ValueError as e:
            errors.append(f"{where}: {e}")
            entries.append((where, e))
    if errors and not keep_bad:
        raise ValueError(_listed(errors))
    return entries


def _jsonl_entry(line: str, base: Path) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON object ({e.msg} at column {e.colno})") from None
    return entry_options(obj, base)


def entry_options(obj: Any, base: Path) -> dict[str, Any]:
    """One video's request (a JSONL line's object, or an HTTP request's body) checked: its keys
    (:data:`PER_VIDEO`, with ``-`` read as ``_``), their types, relative paths taken from ``base``;
    ``ValueError`` names the key, the value and what is allowed."""
    if not isinstance(obj, dict):
        raise ValueError(f'must be a JSON object such as {{"prompt": "..."}}, got {type(obj).__name__}')
    obj = {str(k).replace("-", "_"): v for k, v in obj.items()}
    fixed = sorted(k for k in obj if k in PROCESS_OPTIONS)
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)} cannot vary per video (one model and out folder a run): give it on the command line"
        )
    unknown = sorted(k for k in obj if k not in PER_VIDEO)
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(PER_VIDEO)}")
    if "prompt" not in obj:
        raise ValueError('no "prompt"')
    for k, v in obj.items():
        types = _TYPES[k]
        if v is None and k not in ("prompt", "fast", "skip_unit_cfg"):
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            want = " or ".join(
                {
                    "str": "a string",
                    "int": "an integer",
                    "float": "a number",
                    "bool": "true/false",
                    "list": {"cfg_interval": "[start, end]", "lora": 'a list of "PATH[:WEIGHT]"'}.get(
                        k, 'a list of "FRAME=PATH"'
                    ),
                    "dict": 'an object {"FRAME": "PATH"}',
                }[t.__name__]
                for t in types
            )
            raise ValueError(f"{k} must be {want}, got {json.dumps(v)}")
    if isinstance(obj.get("cfg_interval"), (list, str)):
        obj["cfg_interval"] = _interval(obj["cfg_interval"])
    for k in ("image", "initial_noise", "last_image", "video"):
        if isinstance(obj.get(k), str) and not Path(obj[k]).is_absolute():
            obj[k] = str(base / obj[k])
    if obj.get("keyframes") is not None:
        obj["keyframes"] = rebase_keyframes(obj["keyframes"], base)
    if obj.get("lora") is not None:
        obj["lora"] = tuple((str(base / Path(q).expanduser()), w) for q, w in lora_pairs(obj["lora"]))
    cfg = obj.get("sampler_config")
    if isinstance(cfg, str) and ("/" in cfg or cfg.endswith((".yaml", ".yml"))) and not Path(cfg).is_absolute():
        obj["sampler_config"] = str(base / cfg)
    return obj


def _interval(v: Any) -> tuple[float, float]:
    try:
        if isinstance(v, str):
            a, _, b = v.partition(":")
            return float(a), float(b) if b else 1.0
        a, b = v
        return float(a), float(b)
    except (TypeError, ValueError):
        raise ValueError(f'cfg_interval must be [start, end] or "start:end" fractions, got {json.dumps(v)}') from None


def _listed(errors: Sequence[str], limit: int = 20) -> str:
    more = f"\n... and {len(errors) - limit} more" if len(errors) > limit else ""
    return "\n".join(errors[:limit]) + more


@dataclass(frozen=True)
class BatchItem:
    """Video ``k`` of ``plan``; ``where`` says where it was asked for (for messages); ``stem``: its
    name in the out folder (:func:`~cogsample.jobs.naming.video_stem`), given when it is made."""

    plan: Plan
    k: int = 0
    where: str = ""
    stem: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stem", video_stem(self.plan, self.k))  # frozen: set once, here

    @property
    def prompt(self) -> str:
        return self.plan.options.prompts[self.k]


def batch_options(
    base: GenerateOptions,
    entries: Sequence[tuple[str, Any]],
    *,
    fast: bool = False,
) -> list[tuple[str, Any]]:
    """One single-video request per entry: ``base`` with the entry's options on top; entry k
    without a ``seed`` takes ``base.seed + k``, and with ``base``'s multi-row ``initial_noise``,
    row k. ``fast`` (or an entry's ``"fast": true``) applies ``--fast`` after the options,
    keeping a given step count. A bad entry (a ``ValueError``, see :func:`read_prompts_file`)
    stays in its place for :func:`plan_jobs` to report."""
    if not entries:
        raise ValueError("no prompt: give --prompt TEXT (repeatable) or --prompts-file FILE")
    jobs: list[tuple[str, Any]] = []
    for k, (where, entry) in enumerate(entries):
        if isinstance(entry, ValueError):
            jobs.append((where, entry))
            continue
        opts = dict(entry)
        prompt = opts.pop("prompt")
        use_fast = bool(opts.pop("fast", False)) or fast
        changes: dict[str, Any] = {"prompts": (prompt,), "seed": base.seed + k}
        if base.initial_noise is not None and "initial_noise" not in opts:
            changes["initial_noise_row"] = k + (base.initial_noise_row or 0)
        changes.update(opts)
        job = dataclasses.replace(base, **changes)
        if use_fast:
            job = fast_options(job, steps_given="steps" in opts or base.steps is not None)
        jobs.append((where, job))
    return jobs


def plan_jobs(jobs: Sequence[tuple[str, Any]], *, memory: bool = True) -> list[BatchItem]:
    """Plan (check) every job before any work; ``ValueError`` lists every bad one (a job that is a
    ``ValueError`` already, a line that could not be read, included), in order, with where it
    came from. ``memory``: each video's memory is checked against this machine's
    (:func:`~cogsample.pipeline.planning.plan`; off where other processes run the batch)."""
    # the rows a shared --initial-noise needs: one per video that takes a row of it
    rows: dict[str, int] = {}
    for _, job in jobs:
        if not isinstance(job, ValueError) and job.initial_noise is not None and job.initial_noise_row is not None:
            rows[job.initial_noise] = max(rows.get(job.initial_noise, 0), job.initial_noise_row + 1)
    items, errors = [], []
    for where, job in jobs:
        try:
            if isinstance(job, ValueError):
                raise job
            n = rows.get(job.initial_noise or "") if job.initial_noise_row is not None else None
            items.append(BatchItem(plan(job, memory=memory, noise_rows=n), 0, where))
        except ValueError as e:
            errors.append(f"{where}: {e}" if where else str(e))
    errors += _unfused(items)
    if errors:
        raise ValueError(_listed(list(dict.fromkeys(errors))))
    return items


def _unfused(items: Sequence[BatchItem]) -> list[str]:
    """``--lora-fuse`` merges one LoRA set for the process: each video asking for another is named."""
    fused = [item for item in items if item.plan.options.lora_fuse]
    if not fused:
        return []
    first = [(x.sha256, x.weight) for x in fused[0].plan.loras]
    return [
        f"{item.where or 'video'}: --lora-fuse merges one LoRA set into the weights for the whole run; this video asks "
        "for another (drop --lora-fuse to vary LoRAs per video)"
        for item in fused[1:]
        if [(x.sha256, x.weight) for x in item.plan.loras] != first
    ]


def batch_items(
    base: GenerateOptions,
    entries: Sequence[tuple[str, Any]],
    *,
    fast: bool = False,
    memory: bool = True,
) -> list[BatchItem]:
    """:func:`batch_options` then :func:`plan_jobs`."""
    return plan_jobs(batch_options(base, entries, fast=fast), memory=memory)


def repeats(items: Sequence[BatchItem]) -> list[list[int]]:
    """The positions in ``items`` of each video asked for more than once (same name: everything
    that defines it is the same), in order; it is made once (:func:`run_batch`)."""
    at: dict[str, list[int]] = {}
    for n, item in enumerate(items):
        at.setdefault(item.stem, []).append(n)
    return [ns for ns in at.values() if len(ns) > 1]


# ----------------------------------------------------------------------------------------------
# running


def run_batch(
    items: Sequence[BatchItem],
    out: str | Path | OutDir,
    *,
    pipeline: Pipeline | Callable[[], Pipeline],
    overwrite: bool = False,
    run: Mapping[str, Any] | None = None,
    on_result: Callable[[Result], None] | None = None,
    progress: Callable[[Any], None] | None = None,
    log: Callable[[str], None] | None = None,
    group: Any = None,
    wait: bool = True,
    keep: Callable[[str], bool] | None = None,
) -> list[Result]:
    """Make every item not yet finished in ``out`` (all of them with ``overwrite``), each under
    its claim; one :class:`~cogsample.jobs.write.Result` per distinct video, in order.

    ``pipeline``: a loaded :class:`Pipeline`, or a function that loads one (called only if
    something is left to make). Every prompt is encoded first, then the text encoder released.
    ``run`` is recorded in each JSON (engine, rank, world size, worker). ``on_result`` hears of
    each video as soon as it is finished, skipped ones first. Videos another live process holds
    are made (or found finished) last, after waiting for it. With ``overwrite``, a video finished
    after this call started (by a process beside it) counts as made, not to be made again.

    ``wait``: False leaves the videos another live process holds (they get no result), for a caller
    that comes back to them; ``keep``: asked under each claim, a name it rejects (a job cancelled
    meanwhile) is not made and gets no result.

    ``group``: the :class:`~cogsample.sampling.parallel.ParallelGroups` of a video group; every rank of it
    calls this with the same ``items``; the leader works as above and tells the others what to
    load and which video to make with it; they write nothing and return ``[]``."""
    if group is not None and not group.leader:
        _follow(items, group, pipeline, progress)
        return []
    steps = _Steps(group)
    try:
        results = _run_batch(items, out, pipeline, overwrite, run, on_result, progress, log, steps, wait, keep)
    except Interrupted:
        raise  # a signal reaches every rank of the group (the launcher's): none waits for the end
    except BaseException:
        steps.end(failing=True)
        raise
    steps.end()
    return results


class _Steps:
    """The leader's messages to the rest of its video group (nothing without a group): ``load``
    (the stems to encode), ``make`` (the next stem), ``end``; ``end`` once, also after an error
    outside a video (inside one the others are in its collectives, and the launcher ends them)."""

    def __init__(self, group: Any):
        self.group = group
        self.ended = group is None
        self.in_video = False

    def send(self, *msg: Any) -> None:
        if not self.ended:
            self.group.send(msg)

    def end(self, failing: bool = False) -> None:
        if not self.ended and not self.in_video:
            try:
                self.group.send(("end",))
            except RuntimeError:
                if not failing:
                    raise
                # the others are gone already: the error that brought us here is the one to report
        self.ended = True


def _follow(items: Sequence[BatchItem], group: Any, pipeline: Any, progress: Any) -> None:
    """A non-leading rank of a video group: load, encode and make what the leader says, in step."""
    by_stem = {item.stem: item for item in items}
    pipe = None
    while True:
        msg = group.send(None)
        if msg[0] == "end":
            return
        if msg[0] == "load":
            pipe = pipeline if isinstance(pipeline, Pipeline) else pipeline()
            pipe.encode_videos([(by_stem[stem].plan, by_stem[stem].k) for stem in msg[1]])
        elif msg[0] == "make":
            assert pipe is not None
            item = by_stem[msg[1]]
            pipe.run(item.plan, item.k, progress=progress, video=msg[2], videos=msg[3], decode=False)


def _run_batch(
    items: Sequence[BatchItem],
    out: str | Path | OutDir,
    pipeline: Pipeline | Callable[[], Pipeline],
    overwrite: bool,
    run: Mapping[str, Any] | None,
    on_result: Callable[[Result], None] | None,
    progress: Callable[[Any], None] | None,
    log: Callable[[str], None] | None,
    steps: _Steps,
    wait: bool = True,
    keep: Callable[[str], bool] | None = None,
) -> list[Result]:
    say = log or (lambda _m: None)
    tell = on_result or (lambda _r: None)
    d = out if isinstance(out, OutDir) else OutDir(out)
    d.check_writable()
    unique: list[BatchItem] = []
    seen: set[str] = set()
    for item in items:  # the same video asked for twice is made once
        if item.stem not in seen:
            seen.add(item.stem)
            unique.append(item)
    started = time.time()
    results: dict[str, Result] = {}
    pending = []
    for item in unique:
        if not overwrite and d.finished(item.stem):
            _tidy(d, item.stem)
            results[item.stem] = _finished(d, item)
            tell(results[item.stem])
        else:
            pending.append(item)
    if len(pending) < len(unique):
        say(f"{len(unique) - len(pending)} of {len(unique)} video(s) already finished in {d.path}")
    if not pending:
        return [results[item.stem] for item in unique]

    steps.send("load", [item.stem for item in pending])
    t0 = time.perf_counter()
    pipe = pipeline if isinstance(pipeline, Pipeline) else pipeline()
    t_load = time.perf_counter() - t0
    pipe.encode_videos([(item.plan, item.k) for item in pending])

    def make(item: BatchItem, claim: Claim, index: int) -> None:
        if keep is not None and not keep(item.stem):
            return
        if d.finished(item.stem):
            newer = d.files(item.stem)["meta"].stat().st_mtime >= started
            if not overwrite or newer:
                results[item.stem] = _finished(d, item)  # another process made it meanwhile
                tell(results[item.stem])
                return
            d.remove(claim)
        else:
            left = d.clean(claim)
            if left:
                say(f"removed {len(left)} file(s) an interrupted run left of {item.stem}")
        steps.send("make", item.stem, index, len(unique))
        steps.in_video = True
        r = pipe.run(item.plan, item.k, progress=progress, video=index, videos=len(unique))
        steps.in_video = False
        t1 = time.perf_counter()
        files = write_video(d, claim, r, dict(run or {}))
        timings = {"load_s": t_load, **r.timings, "save_s": time.perf_counter() - t1}
        results[item.stem] = Result(r.prompt, r.seed, files, r.latents, r.video, timings)
        say(f"wrote {files['video']} ({r.timings['sample_s']:.1f} s sampling, {r.timings['decode_s']:.1f} s decoding)")
        tell(results[item.stem])

    index = {item.stem: n for n, item in enumerate(unique)}
    held = []
    for item in pending:
        with d.claimed(item.stem) as claim:
            if claim is None:
                held.append(item)
            else:
                make(item, claim, index[item.stem])
    for item in held if wait else []:
        say(f"waiting for the process that holds {item.stem}")
        with d.claimed(item.stem, wait=True) as claim:
            assert claim is not None
            make(item, claim, index[item.stem])
    return [results[item.stem] for item in unique if item.stem in results]


def _finished(d: OutDir, item: BatchItem) -> Result:
    o = item.plan.options
    return Result(o.prompts[item.k], o.seed + item.k, d.files(item.stem), None, None, {}, skipped=True)


def _tidy(d: OutDir, stem: str) -> None:
    """Remove a finished video's stale lock and temporary files (of a process killed while another
    one finished it), if no live process holds it."""
    if not (d.path / f".{stem}.lock").exists():
        return
    with d.claimed(stem) as claim:
        if claim is not None:
            d.clean(claim)


def count_finished(items: Sequence[BatchItem], out: str | Path | OutDir) -> tuple[int, int]:
    """``(finished, total)`` over the distinct videos of ``items``."""
    d = out if isinstance(out, OutDir) else OutDir(out)
    stems = list(dict.fromkeys(item.stem for item in items))
    return sum(d.finished(s) for s in stems), len(stems)


def run_plan(
    p: Plan,
    *,
    model: Any = None,
    progress: Callable[[Any], None] | None = None,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> list[Result]:
    """Every video of ``p`` into ``p.out`` (:func:`run_batch`); ``model``: an already loaded
    :class:`~cogsample.models.base.VideoModel` of the plan's kind, else it is loaded."""
    o = p.options
    items = [BatchItem(p, k) for k in range(len(o.prompts))]

    def load() -> Pipeline:
        if model is not None:
            if o.lora_fuse:
                model.use_loras(p.loras, fuse=True)
            return Pipeline(
                model,
                model_name=o.model,
                device=p.device,
                dtype=p.dtype,
                profile=o.profile,
                offload=o.offload,
                quantize=o.quantize,
                lora=o.lora,
                lora_fuse=o.lora_fuse,
            )
        return Pipeline.for_options(o, device=str(p.device), log=log)

    return run_batch(items, p.out, pipeline=load, overwrite=overwrite, progress=progress, log=log)


def generate(opts: GenerateOptions, **kw: Any) -> list[Result]:
    """:func:`~cogsample.pipeline.planning.plan` then :func:`run_plan`."""
    return run_plan(plan(opts), **kw)
