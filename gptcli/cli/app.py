"""The Typer app and what every command shares: the console, one-line errors, summary tables."""

from __future__ import annotations

import contextlib
import sys

import typer
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from typer.core import TyperGroup

from gptcli.errors import GptcliError
from gptcli.version import __version__

try:  # typer vendors its own click in newer releases
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click_errors


class OneLineErrors(TyperGroup):
    """Usage errors (an unknown option or command, a value of the wrong kind, a missing
    option) end as gptcli's own do: one line on stderr and exit code 2, where Typer draws a
    box under the usage line."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click_errors.NoArgsIsHelpError:
            sys.exit(2)  # `gptcli` alone: the help is already printed
        except click_errors.ClickException as exc:
            typer.echo(f"error: {usage_error(exc)}", err=True)
            sys.exit(2)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        # typer.Exit(n) comes back as n. gptcli's commands return None, and must: Click would
        # hand any other return value back here as if it were an exit code.
        sys.exit(code if isinstance(code, int) else 0)


def usage_error(exc: Exception) -> str:
    """Click's message on one line, and where the right options are listed."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see {ctx.command_path} --help)" if ctx is not None else message


app = typer.Typer(
    cls=OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Prepare a corpus, train a GPT-2-style model with switchable parts, and sample from it.",
)


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"gptcli {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True,
        help="Print gptcli's version and exit.",
    ),
) -> None:  # fmt: skip
    """The options before the command's name."""


# No markup: what gptcli prints holds paths and names, in which rich would read `[x]` as a tag
# (and drop it) or `[/x]` as a stray closing tag (and raise).
console = Console(markup=False)


@contextlib.contextmanager
def user_errors():
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""
    try:
        yield
    except GptcliError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def show(renderable: RenderableType) -> None:
    """Print a table whole: on a terminal it fits the window, but into a file or a pipe rich
    would squeeze it to 80 columns and cut numbers (`1,049…`), so there it takes the width it
    needs."""
    if console.is_terminal:
        console.print(renderable)
        return
    wide = Console(width=100_000, markup=False)
    width = Measurement.get(wide, wide.options, renderable).maximum
    Console(width=max(width, 20), markup=False).print(renderable)


def table(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
    return table
