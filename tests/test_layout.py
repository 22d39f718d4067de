"""The package's layout is its architecture (docs/ARCHITECTURE.md), read from the source with
``ast``: every import counts (module level, inside functions, under ``TYPE_CHECKING``).

* layers only look down: sampling < reference < models < pipeline < jobs < bench < server < cli < the
  top package (``cogsample``'s public names, ``__main__``); a module imports its own layer or lower;
* no import cycle anywhere in the package (a model module never loops through another);
* the top level holds at most 8 modules beside the subpackages;
* no function is longer than 80 lines, its argument declarations aside.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

import cogsample

SRC = Path(cogsample.__file__).parent
#: The layers, lowest first; a module may import its own layer and those before it.
LAYERS = ("sampling", "reference", "models", "pipeline", "jobs", "bench", "server", "cli", "top")
#: Top-level modules and the layer each belongs to (``batch``: the batch runner's old name).
TOP_LEVEL = {
    "cogsample": "top",
    "cogsample.__main__": "top",
    "cogsample.batch": "jobs",
    "cogsample.version": "sampling",  # one string, below everything
}
#: The pipeline reaches a model through the registry (``cogsample.models``, ``.models.base``).
MODEL_MODULES = ("cogsample.models.cogvideox", "cogsample.models.trained", "cogsample.models.builtin")
MAX_FUNCTION_LINES = 80
Sources = Mapping[str, tuple[str, bool]]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(paths: Iterable[Path]) -> dict[str, tuple[str, bool]]:
    """``{module: (source, is_package)}``."""
    return {module_name(p): (p.read_text(), p.name == "__init__.py") for p in paths}


def package_sources() -> dict[str, tuple[str, bool]]:
    return sources(SRC.rglob("*.py"))


def imports(module: str, source: str, is_package: bool = False, known: Iterable[str] = ()) -> set[str]:
    """Every module name ``module``'s source imports, anywhere in it, made absolute. ``from X import
    a`` gives ``X.a`` where that is a module in ``known``, else ``X`` and ``X.a`` (``a`` may be a
    submodule nobody listed)."""
    known = set(known)
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
            for alias in node.names:
                sub = f"{frm}.{alias.name}"
                out.update([sub] if sub in known else [frm, sub])
    return out


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer(module: str) -> str | None:
    """The layer of a cogsample module, None outside the package."""
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    parts = module.split(".")
    if parts[0] != "cogsample":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "top"


def graph(mods: Sources) -> dict[str, list[str]]:
    """``{module: [package modules it imports]}``."""
    known = set(mods)
    return {
        m: sorted(n for n in imports(m, src, pkg, known) if n in known and n != m) for m, (src, pkg) in mods.items()
    }


def upward_imports(mods: Sources) -> dict[str, list[str]]:
    """``{module: [what it imports from a higher layer]}`` for every offender."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    out = {}
    for m, deps in graph(mods).items():
        bad = [n for n in deps if rank[layer(n)] > rank[layer(m)]]
        if bad:
            out[m] = bad
    return out


def model_module_imports(mods: Sources, prefix: str = "cogsample.pipeline") -> dict[str, list[str]]:
    """``{pipeline module: [model modules it imports]}``: the pipeline goes through the registry."""
    out = {}
    for m, deps in graph({k: v for k, v in mods.items()}).items():
        bad = [n for n in deps if any(within(n, x) for x in MODEL_MODULES)]
        if within(m, prefix) and bad:
            out[m] = bad
    return out


def find_cycle(mods: Sources) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` in the import graph among ``mods``, or None."""
    edges = graph(mods)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in edges[m]:
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def long_functions(mods: Sources, limit: int = MAX_FUNCTION_LINES) -> Iterator[str]:
    """``module.function: N lines`` for each function whose body (from its first statement,
    docstring included, to its end) is longer than ``limit``."""
    for m, (src, _) in mods.items():
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.body[0].lineno + 1
                if n > limit:
                    yield f"{m}.{node.name}: {n} lines"


# --------------------------------------------------------------------------- the package


def test_every_module_has_a_layer():
    mods = package_sources()
    assert {layer(m) for m in mods} <= set(LAYERS)
    assert {"cogsample.sampling.samplers", "cogsample.reference.golden", "cogsample.pipeline.pipeline"} <= {
        m.rsplit(".", 1)[0] if m.count(".") > 2 else m for m in mods
    } | set(mods)


def test_layers_only_look_down():
    assert upward_imports(package_sources()) == {}


def test_no_import_cycle():
    assert find_cycle(package_sources()) is None


def test_the_pipeline_reaches_models_through_the_registry():
    assert model_module_imports(package_sources()) == {}


def test_the_top_level_holds_at_most_8_modules():
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 8, top
    assert {module_name(SRC / t) for t in top} <= set(TOP_LEVEL), "a new top-level module needs a layer"


def test_no_function_is_longer_than_80_lines():
    assert sorted(long_functions(package_sources())) == []


def test_the_old_batch_name_is_kept():
    from cogsample import batch
    from cogsample.jobs import batch as home

    assert batch.run_batch is home.run_batch and set(batch.__all__) <= set(home.__all__)


# --------------------------------------------------------------------------- the checks themselves


def test_every_import_counts():
    src = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from ..models.cogvideox import Net
def f():
    from .. import models
    import cogsample.models.trained
"""
    got = imports("cogsample.sampling.cache", src, known={"cogsample.models"})
    assert got >= {"cogsample.models.cogvideox", "cogsample.models.cogvideox.Net", "cogsample.models"}
    assert "cogsample.models.trained" in got and "cogsample" not in got  # `from .. import models`: a module
    mods = {
        "cogsample.sampling.cache": (src, False),
        "cogsample.models": ("", True),
        "cogsample.models.cogvideox": ("", False),
        "cogsample.models.trained": ("", False),
    }
    assert upward_imports(mods) == {
        "cogsample.sampling.cache": ["cogsample.models", "cogsample.models.cogvideox", "cogsample.models.trained"]
    }
    # a name from the top package (not a submodule) is an import of the top package
    assert upward_imports({"cogsample": ("", True), "cogsample.sampling.x": ("from .. import Pipeline", False)})
    # in a package's __init__, "." is the package itself; ".." its parent
    assert imports("cogsample.models", "from .base import X\nfrom ..sampling.noise import y", True) >= {
        "cogsample.models.base",
        "cogsample.sampling.noise",
    }
    pipe = {"cogsample.pipeline.plan": ("def f():\n    from ..models.builtin import x", False)}
    assert model_module_imports({**pipe, "cogsample.models.builtin": ("", False)}) == {
        "cogsample.pipeline.plan": ["cogsample.models.builtin"]
    }


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


def test_a_long_function_is_found():
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    src = f"def f(\n    a,\n    b,\n):\n{body}\n\ndef g(a):\n    return a\n"
    assert list(long_functions({"m": (src, False)})) == ["m.f: 81 lines"]
