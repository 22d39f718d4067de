"""How a video flows through the layers, measured with ``sys.setprofile``: the job layer plans it,
claims its name, enters the pipeline once to compute it and writes it; the pipeline never calls
back into the job layer. Per batch (once, whatever its length): loading the model, and encoding
every prompt before the text encoder is freed."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

from cogsample.jobs import batch
from cogsample.pipeline.options import GenerateOptions

SMALL = {"frames": 9, "height": 64, "width": 96, "steps": 2}
#: The job layer's own steps the flow is checked against (besides each entry into the pipeline).
MARKS = {
    "cogsample.jobs.outdir.OutDir.try_claim": "claim",
    "cogsample.jobs.outdir.OutDir.wait_claim": "claim",
    "cogsample.jobs.write.write_video": "write",
}
#: What each entry into the pipeline is.
ENTRIES = {
    "cogsample.pipeline.planning.plan": "plan",
    "cogsample.pipeline.pipeline.Pipeline.load": "load",
    "cogsample.pipeline.pipeline.Pipeline.for_options": "load",
    "cogsample.pipeline.pipeline.Pipeline.encode_videos": "encode",
    "cogsample.pipeline.pipeline.Pipeline.run": "compute",
}


def layer(module: str) -> str | None:
    """A module's layer, the second part of its name (``jobs``, ``pipeline``, ...; ``top`` for the
    package itself); None outside the package."""
    parts = module.split(".")
    if parts[0] != "cogsample":
        return None
    return parts[1] if len(parts) > 1 else "top"


def traced(fn: Callable[[], Any]) -> tuple[list[tuple[str | None, str | None, str]], Any]:
    """``fn()`` under ``sys.setprofile``: ``(caller layer, callee layer, callee)`` for every call of a
    Python function of the package, the caller being the nearest package frame below it (generated
    ``__init__`` methods count as their class's module), and what ``fn`` returned."""
    calls: list[tuple[str | None, str | None, str]] = []

    def profile(frame: Any, event: str, _arg: Any) -> None:
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        if layer(callee) is None:
            return
        up = frame.f_back  # the nearest frame of the package: a call through the standard library
        while up is not None and layer(up.f_globals.get("__name__", "")) is None:  # (contextlib, dataclasses)
            up = up.f_back  # counts as its caller's
        caller = up.f_globals.get("__name__", "") if up is not None else ""
        calls.append((layer(caller), layer(callee), f"{callee}.{frame.f_code.co_qualname}"))

    sys.setprofile(profile)
    try:
        out = fn()
    finally:
        sys.setprofile(None)
    return calls, out


def flow(calls: list[tuple[str | None, str | None, str]]) -> list[str]:
    """The job layer's entries into the pipeline and its claims and writes, in order."""
    steps = []
    for caller, callee, name in calls:
        if caller == "jobs" and callee == "pipeline":
            steps.append(ENTRIES.get(name, name))
        elif name in MARKS:
            steps.append(MARKS[name])
    return steps


@pytest.mark.parametrize(
    "prompts, want",
    [
        (("a red ball",), ["plan", "load", "encode", "claim", "compute", "write"]),
        (("a red ball", "a blue square"), ["plan", "load", "encode", *["claim", "compute", "write"] * 2]),
    ],
    ids=["one video", "two videos"],
)
def test_a_video_enters_the_pipeline_once_to_compute_and_the_pipeline_never_calls_jobs(tmp_path, prompts, want):
    opts = GenerateOptions(prompts=prompts, out=str(tmp_path / "out"), **SMALL)
    calls, results = traced(lambda: batch.generate(opts))
    assert [r.skipped for r in results] == [False] * len(prompts)
    assert flow(calls) == want
    assert [name for caller, callee, name in calls if caller == "pipeline" and callee == "jobs"] == []
    # the pipeline is entered from the job layer only at those named entries
    assert {name for caller, callee, name in calls if caller == "jobs" and callee == "pipeline"} <= set(ENTRIES)


def test_the_python_entry_point_computes_in_the_pipeline_and_saves_in_the_job_layer(tmp_path):
    import cogsample

    pipe = cogsample.Pipeline.load("builtin", device="cpu")
    calls, r = traced(lambda: pipe("a red ball", progress=False, **SMALL))
    entries = [name for caller, callee, name in calls if caller == "jobs" and callee == "pipeline"]
    assert entries == ["cogsample.pipeline.pipeline.Pipeline.__call__"]  # one compute entry
    calls, files = traced(lambda: r.save(tmp_path / "out"))
    assert set(files) == {"video", "latents", "meta", "sheet"}
    assert flow(calls) == ["claim", "write"]  # saving computes nothing
    assert not [c for c in calls if c[0] == "pipeline" and c[1] == "jobs"]
