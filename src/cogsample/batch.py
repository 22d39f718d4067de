"""The batch runner's old name: its home is :mod:`cogsample.jobs.batch` (kept importable)."""

from .jobs.batch import (
    PER_VIDEO,
    BatchItem,
    Interrupted,
    batch_items,
    batch_options,
    count_finished,
    generate,
    plan_jobs,
    read_prompts_file,
    repeats,
    run_batch,
    run_plan,
)

__all__ = [
    "PER_VIDEO",
    "BatchItem",
    "Interrupted",
    "batch_items",
    "batch_options",
    "count_finished",
    "generate",
    "plan_jobs",
    "read_prompts_file",
    "repeats",
    "run_batch",
    "run_plan",
]
