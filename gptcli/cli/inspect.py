"""`gptcli inspect SUBJECT`: look inside a model (parameters, attention, positions, norm leak)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from gptcli.cli.app import app, show, user_errors
from gptcli.errors import GptcliError

# The options that only some subjects read; given to another, they would be ignored silently.
ONLY_FOR = {
    "config": ("params",), "set_": ("params",), "vocab_size": ("params",),
    "prompt": ("attention",), "layer": ("attention",), "head": ("attention",),
    "data": ("norm-leak", "embeddings"), "tokens": ("embeddings",), "top": ("embeddings",),
    "neighbours": ("embeddings",),
    "out": ("attention", "positions", "norm-leak", "embeddings"),
}  # fmt: skip


@app.command("inspect")
def inspect_(
    ctx: typer.Context,
    subject: str = typer.Argument(
        ..., help="params | attention | positions | norm-leak | embeddings"
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="A run or checkpoint."),
    which: str = typer.Option("best", help="best | latest, when given a run directory."),
    config: Path | None = typer.Option(None, "--config", "-c", help="params only: a config."),
    set_: list[str] = typer.Option([], "--set", help="params --config: override a key."),
    vocab_size: int | None = typer.Option(None, help="params --config: vocabulary size."),
    prompt: str = typer.Option("", help="attention: the text to attend over."),
    layer: int | None = typer.Option(None, help="attention: one layer \\[default: all]."),
    head: int | None = typer.Option(None, help="attention: one head \\[default: all]."),
    data: Path | None = typer.Option(
        None, help="norm-leak, embeddings: a dataset \\[default: the run's]."
    ),
    tokens: str | None = typer.Option(
        None, help="embeddings: tokens to find neighbours of, e.g. 'e,t,\\n' \\[default: the 8 "
        "most frequent]."
    ),
    top: int = typer.Option(100, help="embeddings: how many of the most frequent tokens to map."),
    neighbours: int = typer.Option(5, help="embeddings: neighbours shown per token."),
    out: Path | None = typer.Option(None, help="The PNG \\[default: RUN/inspect/SUBJECT.png]."),
    output: str = typer.Option("table", "--format", help="table | json"),
) -> None:
    """Look inside a model; every picture is a PNG (no display needed).

    params: parameters module by module, with totals and each part's share (from a checkpoint, or
    from --config before training). attention: the weights each layer and head gives a prompt,
    biases and causal mask included. positions: the position scheme as a picture. norm-leak: how
    far BatchNorm's batch statistics let a causal model see the future. embeddings: each chosen
    token's nearest neighbours by cosine similarity, and a 2-D map (PCA) of the most frequent
    tokens (both matrices when the embeddings are untied)."""
    from gptcli.inspect import inspection

    with user_errors():
        if subject not in inspection.SUBJECTS:
            raise GptcliError(f"unknown subject {subject!r}; choose one of: "
                              f"{', '.join(inspection.SUBJECTS)}")  # fmt: skip
        if output not in ("table", "json"):
            raise GptcliError(f"--format must be table or json, got {output!r}")
        _check_options(ctx, subject)
        if subject == "params":
            report = inspection.params_of(checkpoint, config, which, set_, vocab_size)
        else:
            if checkpoint is None:
                raise GptcliError(f"inspect {subject} needs --checkpoint RUN")
            loaded = inspection.load_subject(checkpoint, which)
            found = _look(subject, loaded, prompt, layer, head, data, out,
                          (tokens, top, neighbours))  # fmt: skip
    if subject == "params":
        _show_params(report, output)
    else:
        _show_finding(found, output)


def _check_options(ctx: typer.Context, subject: str) -> None:
    for name, subjects in ONLY_FOR.items():
        source = ctx.get_parameter_source(name)
        if subject not in subjects and source is not None and source.name != "DEFAULT":
            option = "--" + name.rstrip("_").replace("_", "-")
            raise GptcliError(f"{option} is for inspect {' and '.join(subjects)}, not "
                              f"{subject}; leave it out")  # fmt: skip


def _show_params(report, output: str) -> None:
    if output == "json":
        typer.echo(json.dumps(report.record(), indent=2))
    else:
        show(_params_table(report))


def _show_finding(found, output: str) -> None:
    if output == "json":
        typer.echo(json.dumps({"summary": found.summary, "picture": str(found.picture or ""),
                               **found.record}))  # fmt: skip
        return
    typer.echo(found.summary)  # plain lines: a path must not be wrapped
    if found.table is not None:
        head, rows = found.table
        grid = Table(*head, title_justify="left")
        for row in rows:
            grid.add_row(*row)
        show(grid)
    if found.picture is not None:
        typer.echo(f"picture: {found.picture}")


def _look(subject, loaded, prompt, layer, head, data, out, embedding_options):
    from gptcli.inspect import inspection

    if subject == "embeddings":
        tokens, top, neighbours = embedding_options
        return inspection.embeddings(loaded, tokens, top, neighbours, out, data)
    if subject == "attention":
        return inspection.attention(loaded, prompt, out, layer, head)
    if subject == "positions":
        return inspection.positions(loaded, out)
    return inspection.norm_leak(loaded, out, data)


def _params_table(report) -> Table:
    table = Table(title=f"parameters: {report.variant_line}", title_justify="left")
    for name, justify in (("module", "left"), ("kind", "left"), ("shapes", "left"),
                          ("params", "right"), ("part", "left")):  # fmt: skip
        table.add_column(name, justify=justify)
    for r in report.rows:
        shapes = ", ".join("x".join(map(str, s)) for s in r.shapes)
        table.add_row(r.name, r.kind, shapes + (f" ({r.note})" if r.note else ""),
                      f"{r.params:,}", r.part)  # fmt: skip
    table.add_section()
    for part, count in report.parts.items():
        table.add_row(part, "", "", f"{count:,}", f"{count / max(report.total, 1):.1%}")
    table.add_section()
    table.add_row("total", "", "", f"{report.total:,}", "100.0%")
    table.add_row("without embeddings", "", "", f"{report.non_embedding:,}",
                  f"{report.non_embedding / max(report.total, 1):.1%}")  # fmt: skip
    return table
