"""The README and every page of the documentation site tell the truth about the CLI: every
`gptcli ...` command in their code blocks parses with the real CLI (nothing runs), every
configs/ path they name exists and loads, their Markdown has no broken headings or unclosed
fences, every relative link (and its #anchor) resolves, and their option tables list exactly the
options --help shows. A fixture page with a missing option, config and link shows the checks
fail."""

import functools
import re
import shlex
import unicodedata
from pathlib import Path

import pytest
import typer.main

from gptcli.cli import app
from gptcli.config import load_config
from gptcli.errors import GptcliError
from gptcli.study.grid import load_grid

from .conftest import REPO

try:  # typer vendors its own click in newer releases
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on the real click
    from click import ClickException

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")
HEADING = re.compile(r"^#{1,6} \S")
CONFIG_PATH = re.compile(r"configs/[\w./-]+\.yaml")
# How README lines start the CLI: gptcli, .venv/bin/gptcli, or python/torchrun ... -m gptcli.
LAUNCH = re.compile(r"^(?:\S*/)?gptcli$")


def code_and_prose(text: str) -> tuple[list[str], list[str], list[str]]:
    """(code lines, prose lines, problems): fences must pair up."""
    code, prose, inside, opened = [], [], False, 0
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside, opened = not inside, number
            continue
        (code if inside else prose).append(line)
    unclosed = [f"the code fence opened at line {opened} is never closed"] if inside else []
    return code, prose, unclosed


def commands(code: list[str]) -> list[list[str]]:
    """The argument lists after `gptcli` in code lines (continuations joined, comments cut,
    optional [brackets] kept as their content, `...` dropped)."""
    joined, found = [], []
    for line in code:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    for line in joined:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        for i, word in enumerate(words):
            if LAUNCH.match(word) or (word == "gptcli" and i and words[i - 1] == "-m"):
                args = [w.strip("[]") for w in words[i + 1 :] if w not in ("...", "|")]
                if args and not args[0].startswith(("<", "-")):
                    found.append(args)
                break
    return found


@functools.cache
def cli_group():
    """The Click group Typer builds (once: building it is most of a page's check)."""
    return typer.main.get_command(app)


def parse_problem(args: list[str]) -> str | None:
    """Why the CLI would refuse args before running anything, or None."""
    group = cli_group()
    ctx = group.context_class(group, info_name="gptcli")
    name, rest = args[0], args[1:]
    command = group.get_command(ctx, name)
    if command is None:
        return f"`gptcli {shlex.join(args)}`: no command {name!r}"
    try:
        command.make_context(name, list(rest), parent=ctx)
    except ClickException as exc:
        return f"`gptcli {shlex.join(args)}`: {exc.format_message()}"
    return None


def config_problems(text: str) -> list[str]:
    problems = []
    for path in sorted(set(CONFIG_PATH.findall(text))):
        if not (REPO / path).is_file():
            problems.append(f"{path} does not exist")
            continue
        try:
            (load_grid if "/sweeps/" in path else load_config)(REPO / path)
        except GptcliError as exc:
            problems.append(f"{path} does not load: {exc}")
    return problems


def option_tables(text: str) -> dict[str, set[str]]:
    """Command -> the options its option table names (a table whose header starts with
    `| option`, below a heading that names `gptcli NAME`)."""
    tables, command, in_table = {}, None, False
    for line in text.splitlines():
        if m := re.match(r"^#+ .*`gptcli (\w[\w-]*)`", line):
            command, in_table = m.group(1), False
        elif line.startswith("| option") and command:
            in_table = True
            tables[command] = set()
        elif in_table and line.startswith("|"):
            first = line.split("|")[1]
            tables[command] |= set(re.findall(r"--[a-z][\w-]*", first))
        else:
            in_table = False
    return tables


def help_options(name: str) -> set[str]:
    group = cli_group()
    command = group.get_command(group.context_class(group), name)
    options = set()
    for param in command.params:
        if param.param_type_name == "option":  # typer's options are not click.Option
            options |= {o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")}
    return options - {"--help"}


def slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def anchors(text: str) -> set[str]:
    prose = code_and_prose(text)[1]
    return {slug(line.lstrip("#")) for line in prose if HEADING.match(line)}


def link_problems(text: str, where: Path) -> list[str]:
    """Relative links (and images) whose file is missing, or whose #anchor no heading has."""
    problems = []
    for target in LINK.findall("\n".join(code_and_prose(text)[1])):
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        page = (where.parent / path).resolve() if path else None  # None: this page
        if page and not page.exists():
            problems.append(f"{where.name}: the link {target} names no file")
        elif anchor and (page is None or page.suffix == ".md"):
            linked = page.read_text(encoding="utf-8") if page else text
            if anchor not in anchors(linked):
                problems.append(f"{where.name}: the link {target} names no heading")
    return problems


def glued_lists(prose: list[str]) -> list[str]:
    """Lists that start on the line after a paragraph's: GitHub renders them, MkDocs (Python-
    Markdown) prints them as part of the paragraph."""
    item, para = re.compile(r"^(?:[-*] |\d+\. )\S"), re.compile(r"^[^\s|#>-]")
    return [f"a list glued to the paragraph above it: {line[:40]!r}"
            for above, line in zip(prose, prose[1:], strict=False)
            if item.match(line) and para.match(above) and not item.match(above)]  # fmt: skip


def readme_problems(text: str, where: Path = README) -> list[str]:
    code, prose, problems = code_and_prose(text)
    problems += glued_lists(prose)
    problems += link_problems(text, where)
    problems += [f"broken heading: {line!r}" for line in prose
                 if line.startswith("#") and not HEADING.match(line)]  # fmt: skip
    problems += [p for args in commands(code) if (p := parse_problem(args))]
    problems += config_problems(text)
    for name, documented in option_tables(text).items():
        shown = help_options(name)
        problems += [f"gptcli {name}: the table names {o}, which --help lacks"
                     for o in sorted(documented - shown)]  # fmt: skip
        problems += [f"gptcli {name}: --help has {o}, which the table lacks"
                     for o in sorted(shown - documented)]  # fmt: skip
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_each_page_matches_the_cli(page):
    assert readme_problems(page.read_text(encoding="utf-8"), page) == []


def test_the_checks_see_the_pages():
    texts = [p.read_text(encoding="utf-8") for p in PAGES]
    assert len(PAGES) > 20
    assert sum(len(commands(code_and_prose(t)[0])) for t in texts) > 50
    assert set().union(*(option_tables(t).keys() for t in texts)) >= {"prepare", "sample"}
    assert sum(len(LINK.findall(t)) for t in texts) > 50


def test_the_readme_is_a_front_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) < 250
    linked = {(REPO / t.partition("#")[0]).resolve() for t in LINK.findall(text)}
    for name in ("getting-started.md", "reference/cli.md", "reference/config.md",
                 "performance.md", "architecture.md"):  # fmt: skip
        assert (REPO / "docs" / name).resolve() in linked, name


FIXTURE = """# a README

### `gptcli sample`
| option | meaning |
|---|---|
| `--checkpoint PATH` | a run |
| `--temprature T` | misspelt |

##    broken: ..."

See [the guide](missing.md), [a heading](#nowhere) and [this one](#a-readme).
Two points:
- glued

```bash
gptcli train --config configs/missing.yaml --epochs 3
gptcli sample --checkpoint out/run --max-new-tokens many
gptcli fly --high
```
```bash
gptcli eval
"""


def test_the_checks_fail_on_a_readme_that_names_what_does_not_exist():
    problems = "\n".join(readme_problems(FIXTURE, REPO / "docs" / "fixture.md"))
    for expected in (
        "never closed",
        "broken heading: '##    broken",
        "No such option: --epochs",
        "Invalid value for '--max-new-tokens'",
        "`gptcli eval`: Missing option '--checkpoint'",
        "no command 'fly'",
        "configs/missing.yaml does not exist",
        "the table names --temprature, which --help lacks",
        "--help has --temperature, which the table lacks",
        "the link missing.md names no file",
        "the link #nowhere names no heading",
        "a list glued to the paragraph above it: '- glued'",
    ):
        assert expected in problems, (expected, problems)


@pytest.mark.parametrize("name", ["prepare", "sample"])
def test_help_lists_what_the_table_lists(name):
    page = REPO / "docs" / "how-to" / f"{name}.md"
    assert help_options(name) == option_tables(page.read_text(encoding="utf-8"))[name]


def test_slugs_are_mkdocs_anchors():
    assert slug(" Compare the runs: `gptcli compare`") == "compare-the-runs-gptcli-compare"
    assert slug(" The position study's wall time") == "the-position-studys-wall-time"
    assert slug(" Learning rates across width: standard against µP") == (
        "learning-rates-across-width-standard-against-p")


MACHINE = re.compile(r"EPYC|Xeon|H100|H200|A100")
COMMIT = re.compile(r"\b[0-9a-f]{7}\b")


def test_the_performance_page_names_every_benchmark_with_its_machine():
    text = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    table = text[text.index("## Every benchmark") :].split("\n## ")[0]
    rows = {m[1]: m[0] for m in re.finditer(r"^\| `([\w.]+)` .*$", table, flags=re.M)}
    scripts = {p.name for p in (REPO / "benchmarks").glob("*.py")}
    assert set(rows) == scripts, "the table lists exactly the scripts in benchmarks/"
    for name, row in rows.items():
        assert MACHINE.search(row), f"{name}: the row names no machine"
        assert COMMIT.search(row) or "its section" in row, f"{name}: the row names no commit"
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        title = section.splitlines()[0]
        assert MACHINE.search(section) and COMMIT.search(section), f"section {title!r}"


@pytest.mark.parametrize("page", sorted((REPO / "docs" / "studies").glob("*.md")),
                         ids=lambda p: p.stem)  # fmt: skip
def test_each_study_page_has_its_command_table_and_pictures(page):
    text = page.read_text(encoding="utf-8")
    code = "\n".join(code_and_prose(text)[0])
    assert re.search(r"^gptcli sweep --grid configs/sweeps/[\w-]+\.yaml", code, flags=re.M)
    assert re.search(r"^gptcli compare ", code, flags=re.M)
    assert "|---|" in text, "a table of its results"
    pictures = re.findall(r"!\[[^\]]+\]\(([^)]+\.png)\)", text)
    assert pictures and all((page.parent / p).is_file() for p in pictures)
    readme = README.read_text(encoding="utf-8")
    assert f"](docs/studies/{page.name})" in readme, "a row in the README's studies table"
