"""`gptcli sample`: a checkpoint -> text."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gptcli.cli.app import app, user_errors
from gptcli.errors import GptcliError


@app.command()
def sample(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A run directory or checkpoint."),
    prompt: str = typer.Option("", help="Text to continue; empty starts a new document."),
    prompt_file: Path | None = typer.Option(None, help="Read the prompt from a file."),
    max_new_tokens: int | None = typer.Option(None, min=0, help="\\[default: from the config]"),
    temperature: float | None = typer.Option(None, min=0.0, help="0 is greedy."),
    top_k: int | None = typer.Option(None, min=0, help="Keep the k most likely; 0 disables."),
    top_p: float | None = typer.Option(None, min=0.0, max=1.0, help="Nucleus mass; 1 disables."),
    seed: int | None = typer.Option(None, help="Random seed: the same seed, the same sample."),
    num_samples: int | None = typer.Option(None, min=1, help="Samples, generated as one batch."),
    stop: list[str] = typer.Option(
        [], "--stop", help="End a sample at this text, which is not printed (repeatable)."
    ),
    stream: bool | None = typer.Option(
        None, "--stream/--no-stream", help="Print text as it is generated \\[default: on a tty]."
    ),
    window: bool = typer.Option(
        True,
        "--window/--no-window",
        help="Slide a block_size window over long contexts; --no-window grows past it "
        "(every position scheme but learned).",
    ),
    which: str = typer.Option("best", help="best | latest, when given a run directory."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps"),
    precision: str = typer.Option(
        "auto",
        help="auto (bf16 where the device has it natively; on a CPU, for models wide enough "
        "that it pays) | fp32 | bf16 | fp16",
    ),
) -> None:
    """Generate text from a trained checkpoint (with a KV cache)."""
    from gptcli.generate import load

    with user_errors():
        prompt = _read_prompt(prompt, prompt_file)
        model = load(checkpoint, which, device, precision)
        n = model.checkpoint.config.sample.num_samples if num_samples is None else num_samples
        pieces = model.generate_streams(
            prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
            top_p=top_p, seed=seed, num_samples=n, stop=stop, window=window,
        )  # fmt: skip
        # The first step encodes the prompt and checks the window: fail before printing.
        first = next(pieces)
        live = sys.stdout.isatty() if stream is None else stream
        if live and n == 1:
            _stream(prompt, first[0], pieces)
            return
        texts = [prompt + piece for piece in first]
        for new in pieces:
            texts = [text + piece for text, piece in zip(texts, new, strict=True)]
    for i, text in enumerate(texts):
        if i:
            typer.echo("-" * 40)
        typer.echo(text)


def _read_prompt(prompt: str, prompt_file: Path | None) -> str:
    if prompt_file is None:
        return prompt
    if prompt:
        raise GptcliError("give the prompt once: --prompt or --prompt-file, not both")
    try:
        return prompt_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GptcliError(f"cannot read --prompt-file {prompt_file}: {exc}") from None


def _stream(prompt: str, first: str, pieces) -> None:
    """One sample, printed as it is generated."""
    sys.stdout.write(prompt + first)
    for new in pieces:
        sys.stdout.write(new[0])
        sys.stdout.flush()
    sys.stdout.write("\n")
