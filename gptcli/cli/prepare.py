"""`gptcli prepare`: a corpus -> a tokenized dataset."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import typer
from tqdm import tqdm

from gptcli.cli.app import app, show, table, user_errors


@app.command()
def prepare(
    input: Path | None = typer.Option(
        None,
        "--input",
        "-i",
        help="A file or a directory of them: text, JSON Lines (.jsonl), either gzipped (.gz), "
        "or Parquet (.parquet).",
    ),
    dataset: str | None = typer.Option(None, help="A corpus shipped with gptcli: shakespeare."),
    text_field: str = typer.Option(
        "text", help="JSON Lines: the field that holds the text; Parquet: the column."),
    tokenizer: str = typer.Option("gpt2", help="gpt2 | char | bpe"),
    vocab_size: int | None = typer.Option(
        None, help="bpe: the vocabulary size, <|endoftext|> included (e.g. 4096)."
    ),
    train_bytes: str | None = typer.Option(
        None, help="bpe: train on the corpus' first N bytes, e.g. 50M \\[default: 20M]."
    ),
    out: Path | None = typer.Option(
        None, help="Output directory \\[default: data/NAME_TOKENIZER]."
    ),
    val_fraction: float = typer.Option(
        0.1, help="Tail fraction of the tokens kept for validation."
    ),
    block_size: int = typer.Option(
        64, help="Refuse a corpus whose splits cannot hold one block of this many tokens."
    ),
    workers: int | None = typer.Option(
        None, help="Encoding threads \\[default: CPU count, at most 16]."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace a dataset prepare wrote earlier at --out (nothing else)."
    ),
    include: list[str] = typer.Option(
        [], "--include", help="A directory's files to keep, as globs on their path in it, e.g. "
        "'*.py' (repeatable; default: all)."),
    exclude: list[str] = typer.Option(
        [], "--exclude", help="A directory's files to leave out, e.g. 'site-packages/*' "
        "(repeatable)."),
) -> None:
    """Tokenize a corpus into data/NAME/{train.bin, val.bin, meta.json}."""
    from gptcli.data.prepare import parse_size
    from gptcli.data.prepare import prepare as run_prepare

    bars = _StageBars()
    with user_errors(), bars, _sigterm_as_interrupt():
        try:
            result = run_prepare(
                input_path=input, dataset=dataset, tokenizer=tokenizer, out_dir=out,
                val_fraction=val_fraction, force=force, vocab_size=vocab_size,
                train_bytes=None if train_bytes is None else parse_size(train_bytes),
                block_size=block_size, workers=workers, text_field=text_field,
                progress=bars.show, include=include, exclude=exclude,
            )  # fmt: skip
        except KeyboardInterrupt:
            bars.close()
            typer.echo("aborted; no dataset was written (an existing one is intact)", err=True)
            raise typer.Exit(130) from None
    show(_summary(result, tokenizer))


def _summary(result, tokenizer: str):
    mb_per_s = result.source_bytes / 1e6 / max(result.seconds["encode"], 1e-9)
    return table(
        f"prepared {result.out_dir}",
        [
            ("tokenizer", tokenizer),
            ("vocab size", f"{result.vocab_size:,}"),
            ("text bytes", f"{result.source_bytes:,}"),
            ("train tokens", f"{result.train_tokens:,}"),
            ("val tokens", f"{result.val_tokens:,}"),
            ("tokenizer time", f"{result.seconds['tokenizer']:.1f} s"),
            ("encoding time", f"{result.seconds['encode']:.1f} s ({mb_per_s:.1f} MB/s)"),
        ],
    )


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a job scheduler, `kill`) cleans up as Ctrl-C does: no half-written temporary
    dataset left beside the output."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class _StageBars:
    """One tqdm bar for the current stage of prepare, shown on a terminal only."""

    def __init__(self):
        self.bars: dict[str, tqdm] = {}

    def show(self, stage: str, done: int, total: int, unit: str) -> None:
        if stage not in self.bars:
            for bar in self.bars.values():
                bar.total = bar.n  # a stage may end early: bpe reads only --train-bytes
            self.close()
            self.bars[stage] = tqdm(
                total=total,
                desc=stage,
                unit=unit,
                unit_scale=True,
                dynamic_ncols=True,
                disable=not sys.stderr.isatty(),  # keeps logs and errors to their lines
            )
        self.bars[stage].update(done - self.bars[stage].n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def __enter__(self) -> _StageBars:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
