"""What compare needs to know of a run directory: its config, curves, scores and status."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gptcli import checkpoint, environment
from gptcli.compute import Compute, compute, tokens_per_step
from gptcli.errors import GptcliError
from gptcli.evaluate import read_results
from gptcli.model import count_params_formula
from gptcli.study.sweep import SWEEP_FILE, read_sweep
from gptcli.training.report import METRICS_FILE, read_metrics


@dataclass
class RunRecord:
    dir: Path
    flat: dict[str, Any]  # the run's config, flattened: {"model.position": "rope", ...}
    vocab_size: int
    tokenizer: dict[str, Any]
    step: int  # of its latest checkpoint
    status: str
    params: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None
    precisions: list[str] = field(default_factory=list)  # each start's, from environment.json
    compute: Compute | None = None  # parameters, tokens and FLOPs to its latest checkpoint
    size_keys: tuple[str, ...] = ()  # the keys a grid's named size set (flat["size"] names it)

    @property
    def seed(self) -> int:
        return self.flat["train.seed"]

    def full_eval(self) -> dict[str, Any] | None:
        """eval.json's whole-val-split score of the latest checkpoint at block_size, if any."""
        block = self.flat["model.block_size"]
        key = ("step", "split", "context", "stride", "max_tokens")
        wanted = (self.step, "val", block, block, None)
        for e in reversed(self.evals):
            if tuple(e.get(k) for k in key) == wanted and self.own_data(e.get("data")):
                return e
        return None

    def own_data(self, data: str | None) -> bool:
        """Whether an eval.json entry scored the run's own dataset (eval --data may score
        another one, which must not stand for the run's val loss)."""
        own = str(self.flat["data.dir"])
        return data is None or data == own or Path(data).resolve() == Path(own).resolve()

    def curve(self, key: str) -> list[tuple[int, float, float]]:
        """(step, time, value) of the metrics records that have key, one per step in step order:
        a resumed run logs again the steps after its checkpoint, and the later record wins."""
        by_step = {r["step"]: (r["step"], r.get("time", 0.0), r[key]) for r in self.metrics
                   if key in r and r[key] is not None}  # fmt: skip
        return [by_step[step] for step in sorted(by_step)]

    @property
    def data_label(self) -> str:
        """What the run was trained on, in words: its dataset, tokenizer and vocabulary."""
        kind = self.tokenizer.get("type", "unknown")
        data = Path(str(self.flat["data.dir"])).name
        return f"{data} ({kind} tokenizer, {self.vocab_size:,} tokens)"

    def bits_per_byte_factor(self) -> float | None:
        """Bits per byte per nat per token on the run's val split (from its full-split eval): the
        factor that puts a loss curve on a scale shared across tokenizers."""
        full = self.full_eval()
        if not full or not full.get("loss") or full.get("bits_per_byte") is None:
            return None
        return full["bits_per_byte"] / full["loss"]

    @property
    def tokens_per_step(self) -> int:
        f = self.flat
        micro = f["train.grad_accum"]
        if f["train.tokens_per_step"]:
            micro = f["train.tokens_per_step"] // (f["train.batch_size"] * f["model.block_size"])
        return micro * f["train.batch_size"] * f["model.block_size"]


def load_runs(paths: list[Path]) -> list[RunRecord]:
    """Run directories and sweep directories, in any mix, each run once."""
    runs: dict[Path, RunRecord] = {}
    for path in map(Path, paths):
        if (path / SWEEP_FILE).is_file():
            for state in read_sweep(path)["runs"]:
                run_dir = Path(state["dir"])
                if not run_dir.is_absolute() and not run_dir.exists():
                    run_dir = path / run_dir.name
                if checkpoint.has_checkpoint(run_dir):
                    runs.setdefault(run_dir.resolve(), load_run(run_dir, state))
        elif checkpoint.has_checkpoint(path):
            runs.setdefault(path.resolve(), load_run(path))
        else:
            raise GptcliError(f"{path} is neither a run directory nor a sweep directory")
    if not runs:
        raise GptcliError("no run with a checkpoint to compare yet")
    return list(runs.values())


def load_run(run_dir: Path, state: dict[str, Any] | None = None) -> RunRecord:
    ckpt = checkpoint.load(run_dir, "latest")
    cfg = ckpt.config
    flat = {f"{section}.{k}": v for section, values in asdict(cfg).items()
            for k, v in values.items()}  # fmt: skip
    # null key/value heads means one per head: the same model as naming n_head, shown as such.
    flat["model.n_kv_head"] = cfg.model.kv_heads
    done = ckpt.step >= cfg.train.max_iters
    status = state["status"] if state else ("done" if done else "partial")
    size_keys: tuple[str, ...] = ()
    if state and state.get("size") is not None:
        # Named by its size: the keys the size moved together stand behind that name.
        flat = {"size": state["size"], **flat}
        size_keys = tuple(state.get("size_keys") or ())
    return RunRecord(
        dir=run_dir,
        flat=flat,
        vocab_size=ckpt.vocab_size,
        tokenizer=ckpt.tokenizer_spec,
        step=ckpt.step,
        status=status,
        params=count_params_formula(cfg.model, ckpt.vocab_size),
        metrics=read_metrics(run_dir / METRICS_FILE),
        evals=read_results(run_dir),
        seconds=(state or {}).get("seconds"),
        precisions=sorted({e["precision"] for e in environment.read(run_dir)
                           if e.get("precision")}),  # fmt: skip
        compute=compute(cfg.model, ckpt.vocab_size, ckpt.step,
                        tokens_per_step(cfg.train, cfg.model.block_size)),  # fmt: skip
        size_keys=size_keys,
    )
