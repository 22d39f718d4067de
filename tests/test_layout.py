"""The package's layers only look down, read from the source with ``ast`` (every import counts:
module level, inside functions, under ``TYPE_CHECKING``).

* the core (the math and its plumbing: cache, denoiser, guidance, noise, samplers, sampling,
  scalings, schedules, images, ...) imports nothing from ``cogsample.models``;
* the pipeline reaches models through the registry (``cogsample.models``, ``.models.base``), never
  a model module (``cogsample.models.cogvideox``, ``.trained``, ``.builtin``);
* the benchmark modules' imports among themselves have no cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import cogsample

SRC = Path(cogsample.__file__).parent
#: Top-level modules above the models: they put models, core and files together.
ORCHESTRATION = {"cogsample", "cogsample.__main__", "cogsample.pipeline", "cogsample.cli", "cogsample.batch"}
ORCHESTRATION |= {"cogsample.raybatch"}
#: What a planned video costs reads each model's sizes (the trained transformer's config, the
#: released VAE's layout): it sits beside the pipeline, above the models, until ModelInfo carries them.
ORCHESTRATION |= {"cogsample.cost"}
#: Core modules that must exist (the layer is every top-level module that is not orchestration).
CORE_NAMED = ("cache", "denoiser", "guidance", "noise", "samplers", "sampling", "scalings", "schedules", "images")
MODEL_MODULES = ("cogsample.models.cogvideox", "cogsample.models.trained", "cogsample.models.builtin")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(paths: Iterable[Path]) -> dict[str, tuple[str, bool]]:
    """``{module: (source, is_package)}``."""
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in paths}


def imports(module: str, source: str, is_package: bool = False) -> set[str]:
    """Every module name ``module``'s source imports, anywhere in it, made absolute. ``from X import
    a`` gives ``X`` and ``X.a`` (``a`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                frm = ".".join([*base, *([node.module] if node.module else [])])
            else:
                frm = node.module or ""
            out.add(frm)
            out.update(f"{frm}.{alias.name}" for alias in node.names)
    return out


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def core_violations(mods: Mapping[str, tuple[str, bool]]) -> dict[str, list[str]]:
    """``{core module: [what it imports from cogsample.models]}`` for every offender."""
    out = {}
    for mod, (src, pkg) in mods.items():
        bad = sorted(n for n in imports(mod, src, pkg) if within(n, "cogsample.models"))
        if bad:
            out[mod] = bad
    return out


def pipeline_violations(source: str) -> list[str]:
    """What ``cogsample.pipeline``'s source imports from a model module."""
    names = imports("cogsample.pipeline", source)
    return sorted(n for n in names if any(within(n, m) for m in MODEL_MODULES))


def find_cycle(mods: Mapping[str, tuple[str, bool]]) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` in the import graph among ``mods``, or None."""
    graph = {m: sorted(n for n in imports(m, src, pkg) if n in mods and n != m) for m, (src, pkg) in mods.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in graph[m]:
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def core_modules() -> dict[str, tuple[str, bool]]:
    mods = sources(SRC.glob("*.py"))
    return {m: v for m, v in mods.items() if m not in ORCHESTRATION}


# --------------------------------------------------------------------------- the package


def test_the_core_imports_no_model():
    core = core_modules()
    assert {f"cogsample.{n}" for n in CORE_NAMED} <= set(core)
    assert core_violations(core) == {}


def test_the_pipeline_imports_no_model_module():
    assert pipeline_violations((SRC / "pipeline.py").read_text()) == []


def test_the_bench_modules_import_no_cycle():
    bench = sources((SRC / "bench").glob("*.py"))
    assert {"cogsample.bench.speed", "cogsample.bench.suite"} <= set(bench)
    assert find_cycle(bench) is None


# --------------------------------------------------------------------------- the checks themselves


def test_every_import_counts():
    src = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from .models.cogvideox import Net
def f():
    from . import models
    import cogsample.models.trained
"""
    assert imports("cogsample.cache", src) >= {
        "cogsample.models.cogvideox",
        "cogsample.models.cogvideox.Net",
        "cogsample.models",
        "cogsample.models.trained",
    }
    assert core_violations({"cogsample.cache": (src, False)}) == {
        "cogsample.cache": [
            "cogsample.models",
            "cogsample.models.cogvideox",
            "cogsample.models.cogvideox.Net",
            "cogsample.models.trained",
        ]
    }
    # in a package's __init__, "." is the package itself; ".." its parent
    assert imports("cogsample.models", "from .base import X\nfrom ..noise import y", True) >= {
        "cogsample.models.base",
        "cogsample.noise",
    }
    assert pipeline_violations("from .models import BUILTIN, inspect\nfrom .models.base import ModelInfo") == []
    assert pipeline_violations("def f():\n    from .models.builtin import x") == [
        "cogsample.models.builtin",
        "cogsample.models.builtin.x",
    ]


@pytest.mark.parametrize(
    "speed, cycle",
    [
        ("def f():\n    from .suite import cpu_name", ["cogsample.bench.speed", "cogsample.bench.suite"]),
        ("from . import suite", ["cogsample.bench.speed", "cogsample.bench.suite"]),
        ("from .common import cpu_name", None),
    ],
)
def test_a_function_level_cycle_is_found(speed, cycle):
    mods = {
        "cogsample.bench.common": ("", False),
        "cogsample.bench.speed": (speed, False),
        "cogsample.bench.suite": ("from .common import x\ndef run():\n    from .speed import run_speed", False),
    }
    found = find_cycle(mods)
    if cycle is None:
        assert found is None
    else:
        assert found is not None and set(found) == set(cycle) and found[0] == found[-1]
