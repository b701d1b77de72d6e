"""The package map (docs/architecture.md) lists every module under gptcli/, each once, with a
line saying what it is, under the package it lives in; and names nothing that is not there."""

import re

import pytest

from .conftest import REPO

ENTRY = re.compile(r"^(?P<indent> *)(?P<name>[\w.]+(?:\.py|/))(?: +(?P<text>\S.*))?$")


def code_map(readme: str) -> dict[str, str]:
    """path -> its line, for the entries under gptcli/ in the code map's code block."""
    section = readme[readme.index("## Package map") :]
    block = section.split("```")[1].splitlines()
    entries: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, directory) of the packages open above
    for line in block:
        m = ENTRY.match(line)
        if not m:
            continue
        indent, name = len(m["indent"]), m["name"]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(d for _, d in stack) + name
        if not path.startswith("gptcli/"):
            continue
        assert path not in entries, f"{path} is in the code map twice"
        entries[path] = m["text"] or ""
        if name.endswith("/"):
            stack.append((indent, name))
    return entries


def differences(entries: dict[str, str], modules: set[str]) -> tuple[set[str], set[str]]:
    """(missing from the map, in the map but not in the tree). Every module is wanted, and every
    package as its directory, whose line stands for its __init__.py (which may be listed too)."""
    packages = {m.removesuffix("__init__.py") for m in modules if m.endswith("/__init__.py")}
    # The root is the map's heading; its __init__.py (the API's entry) is a module of its own.
    wanted = {m for m in modules if not m.endswith("/__init__.py")} | packages
    wanted = (wanted | {"gptcli/__init__.py"}) - {"gptcli/"}
    listed = set(entries) - {"gptcli/"}
    optional = {m for m in modules if m.endswith("/__init__.py")}
    return wanted - listed, listed - wanted - optional


def modules_in(root) -> set[str]:
    return {p.relative_to(REPO).as_posix() for p in (root / "gptcli").rglob("*.py")}


def test_every_module_is_in_the_code_map_with_a_line():
    entries = code_map((REPO / "docs" / "architecture.md").read_text(encoding="utf-8"))
    missing, extra = differences(entries, modules_in(REPO))
    assert not missing, f"missing from the package map (docs/architecture.md): {sorted(missing)}"
    assert not extra, f"in the code map but not in gptcli/: {sorted(extra)}"
    assert all(text.strip() for p, text in entries.items() if p != "gptcli/"), "each says what"


def test_the_map_is_read_by_nesting_and_a_missing_or_stale_entry_is_found():
    readme = ("## Package map\n```\ngptcli/\n  __init__.py  api\n  a.py   one\n  pkg/   two\n"
              "    b.py three\n  c.py four\n```\n")  # fmt: skip
    entries = code_map(readme)
    assert entries == {"gptcli/": "", "gptcli/__init__.py": "api", "gptcli/a.py": "one",
                       "gptcli/pkg/": "two", "gptcli/pkg/b.py": "three", "gptcli/c.py": "four"}
    tree = {"gptcli/__init__.py", "gptcli/a.py", "gptcli/pkg/__init__.py", "gptcli/pkg/b.py",
            "gptcli/pkg/d.py"}  # fmt: skip
    assert differences(entries, tree) == ({"gptcli/pkg/d.py"}, {"gptcli/c.py"})


ARCHITECTURE = REPO.parent / "shared" / "docs" / "architecture.md"


def architecture_parts(text: str) -> list[list[str]]:
    """The parts the architecture's picture names under gptcli/, each as its alternatives
    ("cli.py (or cli/)" -> ["cli.py", "cli/"])."""
    block = text.split("```")[1]
    parts = []
    for line in block.splitlines():
        m = re.match(r"^  ([\w.]+/?)(?: \(or ([\w.]+/?)\))?\s", line)
        if m:
            parts.append([p for p in m.groups() if p])
    return parts


def test_the_code_has_every_part_of_the_architecture_picture():
    if not ARCHITECTURE.is_file():
        pytest.skip(f"{ARCHITECTURE} is not beside this checkout (CI lays it there)")
    parts = architecture_parts(ARCHITECTURE.read_text(encoding="utf-8"))
    assert len(parts) >= 10  # the parser really reads the picture
    missing = [p for p in parts if not any((REPO / "gptcli" / alt).exists() for alt in p)]
    assert not missing, f"the architecture names parts the code lacks: {missing}"
