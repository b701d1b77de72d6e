"""The shape of the package, checked: no import loops between modules or between packages
(lazy imports inside functions count too, and so do imports for type checking only: a loop
held apart by TYPE_CHECKING is still two ideas leaning on each other), config below the
model, checkpoint below every stage, inspect apart from study, no module over 400 lines, no
function body over 60."""

import ast
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "gptcli"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The gptcli modules that path imports anywhere in it (top level or inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from gptcli.training import checkpoint` names the submodule; `from gptcli.model
            # import GPT` names the package.
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                for a in node.names
            ]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def package_of(module: str) -> str:
    """gptcli.training.loop -> gptcli.training; a top-level module (gptcli.config) is its own."""
    return ".".join(module.split(".")[:2])


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        mine = package_of(module)
        packages.setdefault(mine, set()).update(package_of(t) for t in targets)
        packages[mine].discard(mine)
    return packages


def test_no_import_loops():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_import_loops_between_packages():
    packages = package_graph(import_graph())
    assert {"gptcli.checkpoint", "gptcli.inspect", "gptcli.study"} <= set(packages)
    cycle = find_cycle(packages)
    assert cycle is None, " -> ".join(cycle)


def test_checkpoints_sit_below_every_stage():
    packages = package_graph(import_graph())
    stages = {"gptcli.training", "gptcli.evaluate", "gptcli.generate", "gptcli.interop",
              "gptcli.study", "gptcli.inspect", "gptcli.cli"}  # fmt: skip
    assert not packages["gptcli.checkpoint"] & stages
    assert all("gptcli.checkpoint" in packages[s] for s in stages - {"gptcli.cli"})


def test_inspect_and_study_meet_only_in_the_report():
    graph = import_graph()
    both = {"gptcli.inspect", "gptcli.study"}
    crossing = {(a, b) for a, targets in graph.items() for b in targets
                if {package_of(a), package_of(b)} == both}  # fmt: skip
    assert {a for a, _ in crossing} == {"gptcli.study.report"}
    assert all(package_of(b) == "gptcli.inspect" for _, b in crossing)


def test_a_type_checking_import_counts(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from gptcli.training.run import Run\n")  # fmt: skip
    assert imports(module, {"gptcli.training.run"}) == {"gptcli.training.run"}


def test_the_cycle_finder_finds_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_config_sits_below_the_model():
    graph = import_graph()
    assert not {m for m in graph["gptcli.config"] if m.startswith("gptcli.model")}
    assert "gptcli.config" in graph["gptcli.model.gpt"]


def test_modules_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # The body: a Typer command's option list is its signature, not its logic.
                body = node.body[1:] if ast.get_docstring(node) else node.body
                lines = node.end_lineno - body[0].lineno + 1 if body else 0
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {lines}")
    assert not too_long, too_long
