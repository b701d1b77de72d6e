"""The gptcli command line: parse options, call the library, present the results."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from gptcli.errors import GptcliError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Prepare a corpus, train a GPT-2-style model with switchable parts, and sample from it.",
)
console = Console()


@contextlib.contextmanager
def user_errors():
    """Bad input ends in one line on stderr and exit code 2, never a traceback."""
    try:
        yield
    except GptcliError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _table(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, str(value))
    return table


@app.command()
def prepare(
    input: Path | None = typer.Option(None, "--input", "-i", help="A text file or a directory."),
    dataset: str | None = typer.Option(None, help="A named corpus: shakespeare."),
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
    workers: int | None = typer.Option(None, help="Encoding processes \\[default: CPU count]."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Tokenize a corpus into data/NAME/{train.bin, val.bin, meta.json}."""
    import sys

    from gptcli.prepare import parse_size
    from gptcli.prepare import prepare as run_prepare

    bars: dict[str, tqdm] = {}  # the current stage's

    def show(stage: str, done: int, total: int, unit: str) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.total = bar.n  # a stage may end early: bpe reads only --train-bytes
                bar.close()
            bars.clear()
            bars[stage] = tqdm(
                total=total,
                desc=stage,
                unit=unit,
                unit_scale=True,
                dynamic_ncols=True,
                disable=not sys.stderr.isatty(),  # keeps logs and errors to their lines
            )
        bars[stage].update(done - bars[stage].n)

    with user_errors():
        try:
            result = run_prepare(
                input_path=input,
                dataset=dataset,
                tokenizer=tokenizer,
                out_dir=out,
                val_fraction=val_fraction,
                force=force,
                vocab_size=vocab_size,
                train_bytes=None if train_bytes is None else parse_size(train_bytes),
                block_size=block_size,
                workers=workers,
                progress=show,
            )
        except KeyboardInterrupt:
            for bar in bars.values():
                bar.close()
            bars.clear()
            typer.echo("aborted; no dataset was written (an existing one is intact)", err=True)
            raise typer.Exit(130) from None
        finally:
            for bar in bars.values():
                bar.close()
    mb_per_s = result.source_bytes / 1e6 / max(result.seconds["encode"], 1e-9)
    console.print(
        _table(
            f"prepared {result.out_dir}",
            [
                ("tokenizer", tokenizer),
                ("vocab size", f"{result.vocab_size:,}"),
                ("source bytes", f"{result.source_bytes:,}"),
                ("train tokens", f"{result.train_tokens:,}"),
                ("val tokens", f"{result.val_tokens:,}"),
                ("tokenizer time", f"{result.seconds['tokenizer']:.1f} s"),
                ("encoding time", f"{result.seconds['encode']:.1f} s ({mb_per_s:.1f} MB/s)"),
            ],
        )
    )


class _Progress:
    """Train callbacks: summary tables, a tqdm bar with loss, lr, tokens/s and the ETA, eval
    lines above it."""

    def __init__(self):
        self.bar: tqdm | None = None
        self.loss: float | None = None

    def on_start(self, info) -> None:
        m, procs = info.model, info.world_size
        shape = f"{m.n_layer} layers x {m.n_head} heads x {m.n_embd} wide, context {m.block_size}"
        per_step = f"{info.batch_size} x {m.block_size} tokens x {info.micro_batches} micro-batches"
        console.print(
            _table(
                "training",
                [
                    ("model", f"{shape}; {m.position} positions, {m.norm}"),
                    ("parameters", f"{info.n_params:,} ({info.param_bytes / 2**20:.1f} MiB)"),
                    ("vocab size", f"{info.vocab_size:,}"),
                    ("device", info.device + (f" x {procs} processes" if procs > 1 else "")),
                    ("precision", info.precision),
                    ("tokens per step", f"{info.tokens_per_step:,} = {per_step}"),
                    ("steps", f"{info.start_step} -> {info.max_iters}"),
                    ("train / val tokens", f"{info.train_tokens:,} / {info.val_tokens:,}"),
                    ("out dir", info.out_dir),
                ],
            )
        )
        self.bar = tqdm(
            total=info.max_iters,
            initial=info.start_step,
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, ETA {remaining}{postfix}]",
        )

    def on_step(self, step, loss, lr, tokens_per_sec) -> None:
        if loss is not None:
            self.loss = loss
        self.bar.update(1)
        loss_text = f"{self.loss:.4f}" if self.loss is not None else "-"
        self.bar.set_postfix_str(
            f"loss {loss_text} lr {lr:.2e} {tokens_per_sec:,.0f} tok/s", refresh=False
        )

    def on_eval(self, result) -> None:
        tqdm.write(
            f"step {result.step}: train loss {result.train_loss:.4f}, "
            f"val loss {result.val_loss:.4f}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@app.command()
def train(
    config: Path = typer.Option(
        ..., "--config", "-c", help="A YAML config, e.g. configs/demo.yaml."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: --set model.n_layer=2 (repeatable)."
    ),
    device: str | None = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps"),
    out: Path | None = typer.Option(None, help="Run directory (sets train.out_dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint."),
    force: bool = typer.Option(False, "--force", help="Start over in a run dir that has one."),
) -> None:
    """Train a model as the config says; checkpoints go to train.out_dir.

    Ctrl-C or SIGTERM stops after the current step with a checkpoint to --resume from (exit
    code 130 or 143). Under torchrun, rank 0 alone reports and writes."""
    import shlex
    import signal

    from gptcli.config import load_config
    from gptcli.distributed import from_env
    from gptcli.train import train as run_train

    values = {"train.device": device, "train.out_dir": str(out) if out else None}
    progress = _Progress()
    with user_errors():
        processes = from_env()
        try:
            cfg = load_config(config, set_, {k: v for k, v in values.items() if v is not None})
            result = run_train(cfg, resume=resume, force=force, callbacks=progress)
        except KeyboardInterrupt:
            # A second Ctrl-C, or one before training began: whatever checkpoint there was is
            # still whole, as checkpoints are written before the pointer names them.
            progress.close()
            typer.echo("aborted; the run directory's latest checkpoint is intact", err=True)
            raise typer.Exit(130) from None
        finally:
            progress.close()
    if result.interrupted:
        if processes.is_main:
            again = ["gptcli", "train", "--config", str(config)]
            for text in set_:
                again += ["--set", text]
            again += ["--device", device] if device else []
            again += ["--out", str(out)] if out else []
            command = shlex.join([*again, "--resume"])
            if processes.enabled:
                command = f"torchrun <the same options> -m {command}"
            typer.echo(
                f"stopped by {signal.Signals(result.interrupted).name} at step {result.step}; "
                f"saved {result.checkpoint}; resume with: {command}",
                err=True,
            )
        raise typer.Exit(128 + result.interrupted)
    if not processes.is_main:
        return
    rows: list[tuple[str, object]] = [("steps", result.steps)]
    if result.first_eval:
        rows.append(("first val loss", f"{result.first_eval.val_loss:.4f}"))
    if result.last_eval:
        rows.append(("final train loss", f"{result.last_eval.train_loss:.4f}"))
        rows.append(("final val loss", f"{result.last_eval.val_loss:.4f}"))
    if result.best_val_loss is not None:
        rows.append(("best val loss", f"{result.best_val_loss:.4f}"))
        rows.append(("best val perplexity", f"{math.exp(min(result.best_val_loss, 50)):.2f}"))
    if result.mfu is not None:
        mfu = f"{100 * result.mfu:.1f}%"
    else:
        mfu = "unknown (no peak FLOP/s for this GPU)" if result.device.startswith("cuda") else "-"
    rows += [
        ("time", f"{result.seconds:.1f} s"),
        ("tokens/s", f"{result.tokens_per_sec:,.0f} (training steps only)"),
        ("MFU", mfu),
        ("checkpoint", result.checkpoint or "-"),
    ]
    console.print(_table("done", rows))


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
) -> None:
    """Generate text from a trained checkpoint (with a KV cache)."""
    import sys

    from gptcli.generate import load

    with user_errors():
        if prompt_file is not None:
            try:
                prompt = prompt_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise GptcliError(f"cannot read --prompt-file {prompt_file}: {exc}") from None
        model = load(checkpoint, which, device)
        n = model.checkpoint.config.sample.num_samples if num_samples is None else num_samples
        pieces = model.generate_streams(
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            num_samples=n,
            stop=stop,
            window=window,
        )
        # The first step encodes the prompt and checks the window: fail before printing.
        first = next(pieces)
        live = sys.stdout.isatty() if stream is None else stream
        if live and n == 1:
            sys.stdout.write(prompt + first[0])
            for new in pieces:
                sys.stdout.write(new[0])
                sys.stdout.flush()
            sys.stdout.write("\n")
            return
        texts = [prompt + piece for piece in first]
        for new in pieces:
            texts = [text + piece for text, piece in zip(texts, new, strict=True)]
    for i, text in enumerate(texts):
        if i:
            typer.echo("-" * 40)
        typer.echo(text)


@app.command()
def convert(
    hf_dir: Path = typer.Argument(..., help="A local Hugging Face GPT-2 directory."),
    out_dir: Path = typer.Argument(..., help="Where the gptcli checkpoint goes."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
) -> None:
    """Convert Hugging Face GPT-2 weights (config.json + model.safetensors or
    pytorch_model.bin) into a gptcli checkpoint for `sample` and `train.init_from`."""
    from gptcli import checkpoint, hf
    from gptcli.model.gpt import count_params_formula

    with user_errors():
        out = hf.convert(hf_dir, out_dir, force=force)
        ckpt = checkpoint.load(out)
    mc = ckpt.config.model
    console.print(
        _table(
            f"converted {hf_dir}",
            [
                ("parameters", f"{count_params_formula(mc, ckpt.vocab_size):,}"),
                ("layers", mc.n_layer),
                ("heads", mc.n_head),
                ("width", mc.n_embd),
                ("context", mc.block_size),
                ("vocab", f"{ckpt.vocab_size:,}"),
                ("out dir", out),
            ],
        )
    )


def main() -> None:
    app()
