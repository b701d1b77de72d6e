"""The Typer app and what every command shares: the console, one-line errors, summary tables."""

from __future__ import annotations

import contextlib

import typer
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table

from gptcli.errors import GptcliError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Prepare a corpus, train a GPT-2-style model with switchable parts, and sample from it.",
)
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
