"""Everything a run builds from its config before the first step: device and precision, data,
model, optimizer, and the state it resumes from; and how it saves a checkpoint."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from gptcli import checkpoint
from gptcli.compute import micro_batches
from gptcli.config import Config
from gptcli.data.dataset import TokenDataset
from gptcli.device import resolve_precision
from gptcli.model import GPT
from gptcli.model.norms import NORMS, CausalLeakWarning, causal_leak
from gptcli.training import distributed, resume
from gptcli.training.batches import StepShare, TrainBatches, step_share
from gptcli.training.budgets import resolve_length
from gptcli.training.distributed import Dist
from gptcli.training.optim import FusedAdamW, make_optimizer
from gptcli.training.precision import train_precision
from gptcli.training.report import TENSORBOARD_DIR, RunInfo
from gptcli.training.schedules import check_schedule


@dataclass
class Run:
    cfg: Config
    d: Dist
    device: torch.device
    precision: str
    data: TokenDataset
    model: GPT  # the weights: what is saved
    optimizer: torch.optim.Optimizer | FusedAdamW
    scaler: torch.amp.GradScaler
    n_micro: int  # micro-batches per step, all processes together
    share: StepShare  # this process's part of each step
    start_step: int = 0
    best_val: float = math.inf
    best_step: int = 0
    forward: torch.nn.Module | None = None  # the model, compiled when asked: what evaluates
    trainee: torch.nn.Module | None = None  # forward, DDP-wrapped under torchrun: what trains
    length_note: str | None = None  # what train.flops_budget or tokens_per_param chose
    batches: TrainBatches | None = None  # the train sequences of each micro-batch

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.train.out_dir)

    @property
    def tokens_per_step(self) -> int:
        return self.n_micro * self.cfg.train.batch_size * self.cfg.model.block_size


def build_run(cfg: Config, d: Dist, device: torch.device, *, resume_run: bool, force: bool) -> Run:
    tc = cfg.train
    data = TokenDataset(cfg.data.dir)
    resolve_precision(tc.precision, device)  # refuses fp16 off CUDA before anything is built
    resume.check_run_dir(Path(tc.out_dir), resume_run, force)
    cfg, init_state = resume.apply_init_from(cfg, data, resume_run)
    cfg, length = resolve_length(cfg, data.vocab_size)  # a budget decides max_iters
    tc = cfg.train
    check_schedule(tc)
    data.check_block_size(cfg.model.block_size)
    n_micro = micro_batches(tc, cfg.model.block_size)
    share = step_share(tc, n_micro, d.rank, d.world_size)

    torch.manual_seed(tc.seed)
    model = GPT(cfg.model, data.vocab_size).to(device)
    if leak := causal_leak(cfg.model.norm):
        warnings.warn(leak, CausalLeakWarning, stacklevel=2)
    if d.rank:
        torch.manual_seed(tc.seed + d.rank)  # its own dropout noise; DDP syncs the weights
    if init_state is not None:
        resume.load_init_weights(model, init_state, tc.init_from)
    rows = len(range(tc.batch_size)[share.rows])
    # Every process trains in rank 0's choice, whatever each measured.
    precision = distributed.gather(d, train_precision(tc.precision, model, rows, device))[0]
    optimizer = make_optimizer(model, tc, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    run = Run(cfg, d, device, precision, data, model, optimizer, scaler, n_micro, share)
    run.length_note = length
    run.batches = TrainBatches(cfg, data, n_micro)
    if resume_run:
        progress = resume.restore(cfg, data.vocab_size, d, device, model, optimizer, scaler)
        run.start_step, run.best_step, run.best_val = progress
    run.forward = torch.compile(model) if tc.compile else model
    run.trainee = run.forward
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        run.trainee = DDP(run.forward, device_ids=ids)
    return run


def run_info(run: Run) -> RunInfo:
    model, data = run.model, run.data
    return RunInfo(
        device=str(run.device),
        precision=run.precision,
        n_params=model.num_params(),
        vocab_size=data.vocab_size,
        tokens_per_step=run.tokens_per_step,
        start_step=run.start_step,
        max_iters=run.cfg.train.max_iters,
        out_dir=str(run.out_dir),
        train_tokens=len(data.splits["train"]),
        val_tokens=len(data.splits["val"]),
        model=run.cfg.model,
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        batch_size=run.cfg.train.batch_size,
        micro_batches=run.n_micro,
        world_size=run.d.world_size,
        notes=_notes(run),
    )


def _notes(run: Run) -> list[str]:
    notes = [run.length_note] if run.length_note else []
    if run.cfg.train.init_from and run.start_step == 0:
        notes.append(f"weights from {run.cfg.train.init_from} (train.init_from); optimizer new")
    if run.cfg.data.order == "epoch":
        passes = run.batches.passes(run.cfg.train.max_iters)
        notes.append(
            f"data.order epoch: {run.cfg.train.max_iters:,} steps read the train split's "
            f"{run.batches.windows:,} windows {passes:.2f} times"
            + (" (no token twice)" if passes <= 1 else " (tokens repeat after the first pass)")
        )
    if run.share.sharing > 1:
        rows = run.cfg.train.batch_size // run.share.sharing
        notes.append(
            f"each of the {run.d.world_size} processes runs {rows} rows of every micro-batch "
            "(grad_accum does not split over the processes, batch_size does)"
        )
    if leak := causal_leak(run.cfg.model.norm):
        notes.append(leak)
    if run.d.enabled and NORMS[run.cfg.model.norm].mixes_positions:
        notes.append(
            f"{run.cfg.model.norm} statistics are per process: each normalises over its own "
            "part of the batch, not the global batch"
        )
    if run.cfg.train.tensorboard:
        notes.append(f"TensorBoard: tensorboard --logdir {run.out_dir / TENSORBOARD_DIR}")
    return notes


def save(run: Run, step: int, val_loss: float | None) -> Path | None:
    """A checkpoint of step (rank 0 writes it; the others return None)."""
    # Every process's RNG, so that each one's dropout noise continues exactly on resume.
    rng = distributed.gather(run.d, resume.rng_state(run.device))
    if not run.d.is_main:
        return None
    # Before any evaluation (stopped early) the latest checkpoint stands in for the best.
    evaluated = math.isfinite(run.best_val)
    return checkpoint.save(
        run.out_dir,
        step=step,
        model_state=run.model.state_dict(),
        trainer_state={
            "optimizer": run.optimizer.state_dict(),
            "scaler": run.scaler.state_dict(),
            "step": step,
            "best_step": run.best_step,
            "best_val_loss": run.best_val,
            "rng": rng,
        },
        config=run.cfg,
        vocab_size=run.data.vocab_size,
        tokenizer_spec=run.data.tokenizer_spec,
        best_step=run.best_step if evaluated else step,
        best_val_loss=run.best_val if evaluated else None,
        val_loss=val_loss,
    )
