"""The README tells the truth about the CLI: every `gptcli ...` command in its code blocks parses
with the real CLI (nothing runs), every configs/ path it names exists and loads, its Markdown has
no broken headings or unclosed fences, and its option tables list exactly the options --help
shows. A fixture README with a missing option and config shows the checks fail."""

import re
import shlex

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


def parse_problem(args: list[str]) -> str | None:
    """Why the CLI would refuse args before running anything, or None."""
    group = typer.main.get_command(app)
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
    """Command -> the options its README option table names (a table whose header starts with
    `| option`, under a `### \\`gptcli NAME\\`` heading)."""
    tables, command, in_table = {}, None, False
    for line in text.splitlines():
        if m := re.match(r"^### `gptcli (\w[\w-]*)`", line):
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
    group = typer.main.get_command(app)
    command = group.get_command(group.context_class(group), name)
    options = set()
    for param in command.params:
        if param.param_type_name == "option":  # typer's options are not click.Option
            options |= {o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")}
    return options - {"--help"}


def readme_problems(text: str) -> list[str]:
    code, prose, problems = code_and_prose(text)
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


def test_the_readme_matches_the_cli():
    text = README.read_text(encoding="utf-8")
    assert len(commands(code_and_prose(text)[0])) > 30  # the checks really see the commands
    assert option_tables(text).keys() >= {"prepare", "sample"}
    assert readme_problems(text) == []


FIXTURE = """# a README

### `gptcli sample`
| option | meaning |
|---|---|
| `--checkpoint PATH` | a run |
| `--temprature T` | misspelt |

##    broken: ..."

```bash
gptcli train --config configs/missing.yaml --epochs 3
gptcli sample --checkpoint out/run --max-new-tokens many
gptcli fly --high
```
```bash
gptcli eval
"""


def test_the_checks_fail_on_a_readme_that_names_what_does_not_exist():
    problems = "\n".join(readme_problems(FIXTURE))
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
    ):
        assert expected in problems, (expected, problems)


@pytest.mark.parametrize("name", ["prepare", "sample"])
def test_help_lists_what_the_table_lists(name):
    assert help_options(name) == option_tables(README.read_text(encoding="utf-8"))[name]
