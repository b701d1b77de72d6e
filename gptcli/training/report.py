"""What training tells the world: callbacks for a presenter (the CLI's progress bar), the
metrics.jsonl log (mirrored to TensorBoard with train.tensorboard), and the result records."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gptcli.compute import Compute
from gptcli.config import ModelConfig
from gptcli.errors import GptcliError, first_line

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"  # OUT_DIR/tensorboard: `tensorboard --logdir OUT_DIR`
# metrics.jsonl key -> TensorBoard tag. The losses share a section so that they sit together.
TENSORBOARD_TAGS = {
    "loss": "loss/train",
    "val_loss": "loss/val",
    "train_loss": "loss/train_eval",
    "lr": "train/lr",
    "tokens_per_sec": "train/tokens_per_sec",
    "grad_norm": "train/grad_norm",
    "loss_scale": "train/loss_scale",
    "full_val_loss": "final/val_loss",
    "full_val_bits_per_byte": "final/val_bits_per_byte",
}


@dataclass
class RunInfo:
    device: str
    precision: str
    n_params: int
    vocab_size: int
    tokens_per_step: int
    start_step: int
    max_iters: int
    out_dir: str
    train_tokens: int
    val_tokens: int
    model: ModelConfig | None = None
    param_bytes: int = 0
    batch_size: int = 0
    micro_batches: int = 1  # per step, all processes together
    world_size: int = 1
    notes: list[str] = field(default_factory=list)  # what a user should know about this run


@dataclass
class EvalResult:
    step: int
    train_loss: float
    val_loss: float


@dataclass
class TrainResult:
    steps: int
    first_eval: EvalResult | None
    last_eval: EvalResult | None
    best_val_loss: float | None
    seconds: float
    # Training steps only, after the first (evaluations and checkpoints are left out).
    tokens_per_sec: float
    checkpoint: Path | None
    device: str = "cpu"
    step: int = 0  # the step the run ended at
    mfu: float | None = None  # CUDA with a known peak only
    interrupted: int | None = None  # the signal that stopped the run early, if one did
    # train.final_eval: the final checkpoint on the whole val split (tokens, loss, bits_per_byte)
    full_val: dict[str, float] | None = None
    first_step_seconds: float | None = None  # compilation and warm-up; not in tokens_per_sec
    compute: Compute | None = None  # parameters, and the tokens and FLOPs trained to its step


class Callbacks:
    """Hooks for presenting progress; the defaults stay silent."""

    def on_start(self, info: RunInfo) -> None: ...

    def on_step(self, step: int, loss: float | None, lr: float, tokens_per_sec: float) -> None:
        """Called after every step; loss is measured only every log_interval steps."""

    def on_eval(self, result: EvalResult) -> None: ...

    def on_note(self, text: str) -> None: ...  # something changed that a user should know


class Mirror(Protocol):
    """Somewhere else every metrics.jsonl record also goes."""

    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class MetricsLog:
    """OUT_DIR/metrics.jsonl, a JSON record a line, flushed as written; a resumed run appends.
    Each record also goes to the mirrors. Processes other than rank 0 get a log that writes
    nothing."""

    def __init__(self, out_dir: Path | None, append: bool, mirrors: Sequence[Mirror] = ()):
        self.file = None
        self.mirrors = list(mirrors)
        # A resumed run's clock goes on from where the log left it, so "time" stays the run's
        # training time however often it was interrupted.
        self.time_offset = 0.0
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / METRICS_FILE
            if append and path.is_file():
                self.time_offset = _last_time(path)
            self.file = open(path, "a" if append else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        for mirror in self.mirrors:
            mirror.write(record)

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()
        with contextlib.ExitStack() as closing:  # every mirror is closed, even if one fails
            for mirror in self.mirrors:
                closing.callback(mirror.close)


def summary_writer_class() -> type:
    """torch's SummaryWriter; without the tensorboard package, one line saying what to do."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise GptcliError(
            f"train.tensorboard needs the tensorboard package ({first_line(exc)}): "
            "pip install 'gptcli[tensorboard]', or leave train.tensorboard and --tensorboard "
            "off (gptcli compare --plot draws the curves without it)"
        ) from None
    return SummaryWriter


class TensorBoardLog:
    """The metrics.jsonl records as TensorBoard scalars (TENSORBOARD_TAGS), in event files under
    OUT_DIR/tensorboard, at the records' steps."""

    def __init__(self, out_dir: Path, append: bool, start_step: int):
        writer_class = summary_writer_class()
        log_dir = out_dir / TENSORBOARD_DIR
        if not append:
            # A new run starts its curves over, as it does metrics.jsonl.
            for old in log_dir.glob("events.out.tfevents.*"):
                old.unlink()
        # A resumed run hides what the interrupted one logged after the checkpoint it resumes
        # from: those steps are trained again and would otherwise show twice.
        purge = start_step + 1 if append and start_step else None
        # Flushed every few seconds rather than SummaryWriter's two minutes: this is for
        # watching a run as it trains.
        self.writer = writer_class(log_dir=str(log_dir), purge_step=purge, flush_secs=10)

    def write(self, record: dict[str, Any]) -> None:
        for key, tag in TENSORBOARD_TAGS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], record["step"])

    def close(self) -> None:
        self.writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, in file order; a line cut short by a kill is skipped."""
    records = []
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    records.append(record)
    return records


def _last_time(path: Path) -> float:
    times = [r["time"] for r in read_metrics(path) if isinstance(r.get("time"), int | float)]
    return float(times[-1]) if times else 0.0
