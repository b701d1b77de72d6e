"""`gptcli eval`: a checkpoint -> exact scores on a whole split, per context."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from gptcli.cli.app import app, show, user_errors
from gptcli.errors import GptcliError


@app.command("eval")
def eval_(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A run directory or checkpoint."),
    which: str = typer.Option("best", help="best | latest, when given a run directory."),
    data: Path | None = typer.Option(None, help="A prepared dataset \\[default: the run's]."),
    split: str = typer.Option("val", help="val | train"),
    context: str | None = typer.Option(
        None, help="Context lengths, comma-separated, e.g. 64,128,256 \\[default: block_size]."
    ),
    stride: int | None = typer.Option(
        None, help="Slide windows by S < context, scoring each window's last S tokens."
    ),
    batch_size: int = typer.Option(16, help="Windows per forward pass (does not change scores)."),
    max_tokens: int | None = typer.Option(None, help="Score only the split's first N tokens."),
    max_memory: float | None = typer.Option(
        None, help="GiB one forward pass may use; the batch and attention blocks are chosen to "
        "fit, and a context that cannot is refused \\[default: half the free memory]."
    ),
    output: str = typer.Option("table", "--format", help="table | json"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
    precision: str | None = typer.Option(
        None, help="fp32 | bf16 | fp16 \\[default: fp32 on CPU, the checkpoint's on a GPU]."
    ),
) -> None:
    """Score every token of a split once (exact, deterministic), per context length.

    Windows of CONTEXT tokens cover the split without overlap, so each window's first token is
    predicted with no history, as in training; with --stride S they slide by S and only each
    window's last S tokens are scored (the first window scores all), so every token is still
    scored once, with at least CONTEXT - S tokens of history. Reports the mean loss (nats per
    token), perplexity and bits per byte (loss in bits x tokens / UTF-8 bytes of the scored
    text, comparable across tokenizers). Results are merged into RUN/eval.json."""
    from gptcli.evaluate import evaluate_checkpoint

    with user_errors():
        if output not in ("table", "json"):
            raise GptcliError(f"--format must be table or json, got {output!r}")
        report = evaluate_checkpoint(
            checkpoint, which=which, data_dir=data, split=split, contexts=_contexts(context),
            stride=stride, batch_size=batch_size, max_tokens=max_tokens, device=device,
            precision=precision, max_memory=_bytes(max_memory),
        )  # fmt: skip
    if output == "json":
        typer.echo(json.dumps([r.record() for r in report.results], indent=2))
    else:
        show(_table(report))
        for r in report.results:
            if r.refused:
                typer.echo(f"context {r.context} refused: {r.refused}", err=True)
        typer.echo(f"results merged into {report.eval_file}")


def _bytes(gib: float | None) -> int | None:
    if gib is None:
        return None
    if gib <= 0:
        raise GptcliError(f"--max-memory must be a number of GiB > 0, got {gib}")
    return int(gib * 2**30)


def _contexts(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GptcliError(f"--context must be integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise GptcliError(f"--context needs lengths >= 1, got {text!r}")
    return values


def _table(report) -> Table:
    title = f"{report.checkpoint} (step {report.step}), {report.split} split of {report.data_dir}"
    table = Table(title=title, title_justify="left")
    for name in ("context", "tokens", "loss (nats)", "perplexity", "bits/byte"):
        table.add_column(name, justify="right")
    for r in report.results:
        mark = " (past training)" if r.beyond_training else ""
        if r.score is None:
            table.add_row(f"{r.context}{mark}", "-", "refused", "-", "-")
            continue
        rec = r.record()
        table.add_row(
            f"{r.context}{mark}", f"{rec['tokens']:,}", f"{rec['loss']:.4f}",
            f"{rec['perplexity']:.2f}", f"{rec['bits_per_byte']:.4f}",
        )  # fmt: skip
    return table
