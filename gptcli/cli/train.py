"""`gptcli train`: a config -> a trained run, with a progress bar and summary tables."""

from __future__ import annotations

import math
import shlex
import signal
import sys
import warnings
from pathlib import Path

import typer
from tqdm import tqdm

from gptcli.cli.app import app, show, table, user_errors


def _on_terminal() -> bool:
    return sys.stderr.isatty()


class _Progress:
    """Train callbacks: summary tables, a tqdm bar with loss, lr, tokens/s and the ETA, eval
    lines above it."""

    def __init__(self):
        self.bar: tqdm | None = None
        self.loss: float | None = None
        # Off a terminal (a log file, a sweep's train.log) a redrawn bar is noise: print one
        # plain line per logged step instead.
        self.plain = not _on_terminal()
        self.max_iters = 0
        # BatchNorm's causal leak: the training table's notes say it, once, in our own words.
        from gptcli.model.norms import CausalLeakWarning

        warnings.filterwarnings("ignore", category=CausalLeakWarning)

    def on_start(self, info) -> None:
        m, procs = info.model, info.world_size
        shape = f"{m.n_layer} layers x {m.n_head} heads x {m.n_embd} wide, context {m.block_size}"
        per_step = f"{info.batch_size} x {m.block_size} tokens x {info.micro_batches} micro-batches"
        show(
            table(
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
                    *(("note", note) for note in info.notes),
                ],
            )
        )
        self.max_iters = info.max_iters
        self.bar = tqdm(
            disable=self.plain,
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
            if self.plain:
                typer.echo(f"step {step}/{self.max_iters}: loss {loss:.4f}, lr {lr:.2e}, "
                           f"{tokens_per_sec:,.0f} tok/s", err=True)  # fmt: skip
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

    def on_note(self, text: str) -> None:
        if self.plain:  # beside the step lines, unbuffered, where a log file shows it at once
            typer.echo(f"note: {text}", err=True)
        else:
            tqdm.write(f"note: {text}")

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
    tensorboard: bool = typer.Option(
        False,
        "--tensorboard",
        help="Also write TensorBoard event files to OUT/tensorboard (sets train.tensorboard; "
        "needs pip install 'gptcli\\[tensorboard]').",
    ),
) -> None:
    """Train a model as the config says; checkpoints go to train.out_dir.

    Ctrl-C or SIGTERM stops after the current step with a checkpoint to --resume from (exit
    code 130 or 143). Under torchrun, rank 0 alone reports and writes."""
    from gptcli.config import load_config
    from gptcli.training.distributed import from_env
    from gptcli.training.loop import train as run_train

    values = {
        "train.device": device,
        "train.out_dir": str(out) if out else None,
        "train.tensorboard": True if tensorboard else None,
    }
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
            command = _resume_command(
                config, set_, device, out, tensorboard, distributed=processes.enabled
            )
            typer.echo(
                f"stopped by {signal.Signals(result.interrupted).name} at step {result.step}; "
                f"saved {result.checkpoint}; resume with: {command}",
                err=True,
            )
        raise typer.Exit(128 + result.interrupted)
    if processes.is_main:
        show(table("done", _summary(result)))
        _say_if_nothing_was_trained(result, cfg, resume)


def _say_if_nothing_was_trained(result, cfg, resume: bool) -> None:
    """A resumed run that was already finished: which key to raise (a budget decides the
    length where one is set, and then max_iters cannot be set)."""
    if not resume or result.steps:
        return
    key = next((f"train.{k}" for k in ("flops_budget", "tokens_per_param")
                if getattr(cfg.train, k, None) is not None), "train.max_iters")  # fmt: skip
    typer.echo(f"note: the run was already at step {result.step}, its train.max_iters; nothing "
               f"was trained (raise {key} to go on)", err=True)  # fmt: skip


def _resume_command(config, set_, device, out, tensorboard: bool, distributed: bool) -> str:
    again = ["gptcli", "train", "--config", str(config)]
    for text in set_:
        again += ["--set", text]
    again += ["--device", device] if device else []
    again += ["--out", str(out)] if out else []
    again += ["--tensorboard"] if tensorboard else []
    command = shlex.join([*again, "--resume"])
    return f"torchrun <the same options> -m {command}" if distributed else command


def _timed_steps(result) -> str:
    first = result.first_step_seconds
    if result.steps < 2 or first is None:
        return "training steps only"
    took = f"{first:.1f}" if first >= 1 else f"{first:.2f}"
    return f"training steps after the first, which took {took} s with warm-up"


def _summary(result) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [("steps", result.steps)]
    if result.first_eval:
        rows.append(("first val loss", f"{result.first_eval.val_loss:.4f}"))
    if result.last_eval:
        rows.append(("final train loss", f"{result.last_eval.train_loss:.4f}"))
        rows.append(("final val loss", f"{result.last_eval.val_loss:.4f}"))
    if result.best_val_loss is not None:
        rows.append(("best val loss", f"{result.best_val_loss:.4f}"))
        rows.append(("best val perplexity", f"{math.exp(min(result.best_val_loss, 50)):.2f}"))
    if result.full_val:
        full = result.full_val
        rows.append((
            "full val split",
            f"loss {full['loss']:.4f}, {full['bits_per_byte']:.4f} bits/byte "
            f"({int(full['tokens']):,} tokens, final checkpoint; see eval.json)",
        ))  # fmt: skip
    if spent := result.compute:
        rows.append(("parameters", f"{spent.params:,} ({spent.params_non_embedding:,} without "
                                   "embeddings)"))  # fmt: skip
        rows.append(("trained", f"{spent.tokens:,} tokens, {spent.flops:.3g} FLOPs"))
    if result.mfu is not None:
        mfu = f"{100 * result.mfu:.1f}%"
    else:
        mfu = "unknown (no peak FLOP/s for this GPU)" if result.device.startswith("cuda") else "-"
    rows += [
        ("time", f"{result.seconds:.1f} s"),
        ("tokens/s", f"{result.tokens_per_sec:,.0f} ({_timed_steps(result)})"),
        ("MFU", mfu),
        ("checkpoint", result.checkpoint or "-"),
    ]
    return rows
