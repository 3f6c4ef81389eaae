"""vae/ imports only downward: every import (at the top, inside a function or under
``TYPE_CHECKING``) goes to a lower floor of vae/README.md's package map or stays on its own, no
module reaches one that imports it back, and the map lists the tree as it is."""

from __future__ import annotations

import ast
import re
from pathlib import Path

VAE = Path(__file__).resolve().parents[1] / "vae"


def module_name(path: Path) -> str:
    parts = path.relative_to(VAE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The vae modules ``path`` imports: ``from vae.x import y`` names vae.x.y where that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules
                      else node.module
                      for alias in node.names}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = sorted(VAE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the modules along it (first repeated at the end), or None."""
    state: dict[str, str] = {}   # "open" while on the path, "done" once every import below is checked
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                return path[path.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    return next((cycle for node in sorted(graph) if node not in state and (cycle := visit(node))), None)


def test_the_cycle_finder_finds_a_cycle_and_passes_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_top_level_local_and_type_checking_imports():
    graph = import_graph()
    assert "vae.estimators.base" in graph["vae.estimators.arm"]     # a top-level import
    assert "vae.models.m2" in graph["vae.training.tasks"]          # ``from vae.models import m2``
    assert len(graph) == len(list(VAE.rglob("*.py")))


def package_map() -> dict[str, tuple[int, list[str]]]:
    """vae/README.md's package map: ``vae.<package>`` -> (floor, the modules its row names)."""
    rows = re.findall(r"^\| (\d+) \| `vae/(\w+)(?:/|\.py)` \| ([^|]*) \|", (VAE / "README.md").read_text(),
                      re.M)
    return {f"vae.{name}": (int(floor), re.findall(r"`(\w+)`", modules)) for floor, name, modules in rows}


def floor_of(module: str, floors: dict[str, tuple[int, list[str]]]) -> int:
    return floors[".".join(module.split(".")[:2])][0]


def test_the_package_map_lists_the_tree():
    """Every package and top-level module of vae/ has a row, every row names a package or module
    that exists, and a row's modules are its package's files (vae/estimators/: the shared parts it
    names exist; its one file per estimator is test_every_estimator_is_one_file...'s)."""
    floors = package_map()
    tree = {f"vae.{p.stem if p.is_file() else p.name}" for p in VAE.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert set(floors) == tree
    assert sorted(f for f, _ in floors.values()) == list(range(1, len(floors) + 1))   # one row per floor
    for package, (_, named) in floors.items():
        folder = VAE / package.split(".")[1]
        if not folder.is_dir():
            assert named == [package.split(".")[1]]
            continue
        files = {p.stem for p in folder.glob("*.py")} - {"__init__"}
        assert set(named) <= files | {"__init__"}, (package, set(named) - files)
        if package != "vae.estimators":
            assert set(named) == files, (package, files - set(named))


def test_every_import_of_vae_goes_down_its_floors():
    floors = package_map()
    graph = {m: deps for m, deps in import_graph().items() if m != "vae"}
    upward = [f"{m} (floor {floor_of(m, floors)}) imports {d} (floor {floor_of(d, floors)})"
              for m, deps in sorted(graph.items()) for d in sorted(deps) if d != "vae"
              if floor_of(d, floors) > floor_of(m, floors)]
    assert not upward, "; ".join(upward)


def test_the_config_knows_no_task_model_or_trainer():
    """vae/config.py validates keys; what a task allows is the task's (vae.training.tasks.check)."""
    graph = import_graph()
    reached, todo = set(), ["vae.config"]
    while todo:
        for child in graph[todo.pop()] - reached:
            reached.add(child)
            todo.append(child)
    assert not {m for m in reached
                if m.startswith(("vae.models", "vae.training", "vae.sweeps", "vae.reporting"))}


def test_vae_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_estimator_is_one_file_that_registers_it_as_a_plugin_would():
    """One estimator, one file: each built-in's class lives in a module of its own under
    vae/estimators/, which registers it with ``@register(name)`` (no list of names elsewhere)."""
    import inspect
    import sys
    from collections import Counter

    from conftest import BUILT_IN

    modules = Counter(cls.__module__ for cls in BUILT_IN.values())
    assert [m for m, n in modules.items() if n > 1] == []
    for name, cls in BUILT_IN.items():
        assert cls.__module__.startswith("vae.estimators."), (name, cls.__module__)
        assert (f'@register("{name}")\nclass {cls.__name__}('
                in inspect.getsource(sys.modules[cls.__module__])), name


def test_no_code_line_is_longer_than_110_characters():
    """Every line of the Python files under vae/, experiments/ and tests/ is at most 110 characters
    (characters, not bytes: a Greek letter counts as one)."""
    root = VAE.parent
    offenders = [f"{path.relative_to(root)}:{number} ({len(line)})"
                 for folder in ("vae", "experiments", "tests")
                 for path in sorted((root / folder).rglob("*.py"))
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if len(line) > 110]
    assert not offenders, "lines longer than 110 characters: " + ", ".join(offenders)
