"""The training loop, top-down: build the run, then for each step get its batches, forward and
backward with accumulation, clip and step, log, evaluate, checkpoint.

The library reports through callbacks and writes metrics.jsonl (mirrored to TensorBoard with
train.tensorboard); presenting progress (bars, tables) is the CLI's job. Under torchrun (RANK,
LOCAL_RANK, WORLD_SIZE set) each process runs its share of every step's micro-batches (see
batches.py); only rank 0 reports and writes.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch

from gptcli import checkpoint, environment
from gptcli.checkpoint import lock
from gptcli.compute import Compute, compute, flops_per_token
from gptcli.config import Config
from gptcli.data.tokenizers import tokenizer_from_spec
from gptcli.device import autocast, available_cores, resolve_device, set_cpu_threads
from gptcli.errors import GptcliError
from gptcli.evaluate import EvalReport, evaluate_model, merge_results
from gptcli.model import check_config
from gptcli.training import distributed, trackers
from gptcli.training.estimate import evaluate
from gptcli.training.mfu import peak_flops
from gptcli.training.optim import set_lr
from gptcli.training.report import (
    Callbacks,
    EvalResult,
    MetricsLog,
    TensorBoardLog,
    TrainResult,
    summary_writer_class,
)
from gptcli.training.run import Run, build_run, run_info, save
from gptcli.training.schedules import lr_at
from gptcli.training.sharing import CoreShare
from gptcli.training.signals import StopSignal


def train(
    cfg: Config,
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """Train as cfg says; checkpoints and metrics.jsonl go to train.out_dir."""
    check_config(cfg.model)
    if cfg.train.tensorboard:
        summary_writer_class()  # refuses now, on every process, if tensorboard is missing
    trackers.check(cfg.train.loggers)  # and so for an experiment tracker
    d = distributed.from_env()
    device = (
        distributed.setup(d, cfg.train.device) if d.enabled else resolve_device(cfg.train.device)
    )
    set_cpu_threads(cfg.train.threads, device)
    cores = None
    if device.type == "cpu":
        # torchrun's ranks step together, all-reducing inside backward: never in turns.
        mode = "threads" if d.enabled else cfg.train.share_cores
        cores = CoreShare(cfg.train.threads, available_cores(), mode=mode)
    try:
        with hold_run_dir(d, cfg.train.out_dir):
            return _train(cfg, d, device, resume, force, callbacks, cores)
    finally:
        if cores is not None:
            cores.close()
        distributed.teardown(d)


def _train(cfg: Config, d, device, resume: bool, force: bool, callbacks, cores) -> TrainResult:
    cb = (callbacks or Callbacks()) if d.is_main else Callbacks()
    run = build_run(cfg, d, device, resume_run=resume, force=force)
    info = run_info(run)
    if cores is not None and (cores.update() or cores.trainings > 1):
        info.notes.append(cores.describe())
    cb.on_start(info)
    log = metrics_log(run, append=resume)  # trackers first: a refusing store stops nothing old
    if d.is_main and force and not resume:
        checkpoint.forget(run.out_dir)  # only now that the new run is sure to start
    if d.is_main:
        where = environment.describe(device, d.world_size, run.precision)
        environment.record(run.out_dir, run.start_step, where)
    with log, StopSignal(escalate=not d.enabled) as stop:
        result = Loop(run, cb, log, stop, cores).fit()
    # Every process waits here until rank 0 has evaluated and saved, so that no process
    # tears its process group down while another still uses it (see distributed.teardown).
    distributed.barrier(d)
    return result


@contextlib.contextmanager
def hold_run_dir(d, out_dir: str):
    """One process per run directory: rank 0 holds its lock for the whole run, and every
    process learns at once when another process holds it."""
    with contextlib.ExitStack() as held:
        problem = None
        if d.is_main:
            try:
                advice = "wait for it to finish, or train into another --out"
                held.enter_context(lock.hold(out_dir, advice))
            except GptcliError as exc:
                problem = str(exc)
        problem = distributed.gather(d, problem)[0]
        if problem:
            raise GptcliError(problem)
        yield


def metrics_log(run: Run, append: bool) -> MetricsLog:
    """metrics.jsonl, mirrored to TensorBoard with train.tensorboard and to each tracker of
    train.loggers; rank 0's alone. A tracker that refuses to open stops every process (they
    all learn of it), not rank 0 alone."""
    if not run.d.is_main:
        problem = distributed.gather(run.d, None)[0]
        if problem:
            raise GptcliError(problem)
        return MetricsLog(None, append)
    try:
        mirrors = trackers.open_trackers(run.cfg, run.out_dir, append)
    except GptcliError as exc:
        distributed.gather(run.d, str(exc))
        raise
    distributed.gather(run.d, None)
    if run.cfg.train.tensorboard:
        mirrors.append(TensorBoardLog(run.out_dir, append, run.start_step))
    return MetricsLog(run.out_dir, append, mirrors)


class Loop:
    def __init__(self, run: Run, cb: Callbacks, log: MetricsLog, stop: StopSignal,
                 cores: CoreShare | None = None):  # fmt: skip
        self.run, self.cb, self.log, self.stop, self.cores = run, cb, log, stop, cores
        self.first_eval: EvalResult | None = None
        self.last_eval: EvalResult | None = None
        self.saved, self.saved_step = None, -1
        # The first step of an invocation carries torch.compile's compilation and the device's
        # warm-up (20 s of a 60-step GPT-2-sized run on an H200): timed apart, so that tokens/s
        # and MFU say what the steps run at.
        self.first_step_seconds: float | None = None
        self.train_seconds = 0.0  # the steps after the first

    def clock(self) -> float:
        """Seconds this run has been training, over all its invocations."""
        return round(self.log.time_offset + time.perf_counter() - self.t_start, 3)

    def fit(self) -> TrainResult:
        run, tc = self.run, self.run.cfg.train
        t_start = self.t_start = time.perf_counter()
        if run.start_step == 0 and tc.max_iters > 0:
            self.first_eval = self.last_eval = self.evaluate(0)
        run.model.train()
        done, stopped_by = run.start_step, 0
        t_last = time.perf_counter()
        for step in range(run.start_step, tc.max_iters):
            # Taking turns, a step holds the cores from its first op to its log line: one
            # training's work beside the other's step would slow each of its parallel ops.
            with self.cores.turn(self.stop) if self.cores else contextlib.nullcontext():
                done, stopped_by = self.step(step, t_last)
            if stopped_by:
                break
            t_last = time.perf_counter()  # keep eval and saving out of the next step's tokens/s
        result = self.result(done, time.perf_counter() - t_start, stopped_by)
        # The last record: what the run spent, and the final checkpoint's exact score.
        final = {"step": done, **result.compute.record()}
        if tc.final_eval and run.d.is_main and not stopped_by and self.saved_step == done:
            result.full_val = self.full_eval(done, result.compute)
            final.update({f"full_val_{k}": v for k, v in result.full_val.items()})
        self.log.write(final)
        return result

    def step(self, step: int, t_last: float) -> tuple[int, int]:
        """One step, its log line, and the evaluation and checkpoint due after it: the steps
        done and the signal that stops the run (0: none)."""
        run, tc = self.run, self.run.cfg.train
        lr = set_lr(run.optimizer, lr_at(step, tc))
        done, stopped_by = step + 1, 0
        loss_sum = self.forward_backward(step)
        grad_norm = self.clip_and_step(measure=self.logs_at(done))
        now = time.perf_counter()
        if self.first_step_seconds is None:
            self.first_step_seconds = now - t_last
        else:
            self.train_seconds += now - t_last
        tokens_per_sec = run.tokens_per_step / max(now - t_last, 1e-9)
        # Every process must stop at the same step, whichever got the signal: under DDP, a
        # one-number all-reduce per step.
        if done < tc.max_iters:
            stopped_by = distributed.all_max(run.d, self.stop.signum, run.device)
        self.log_step(done, loss_sum, grad_norm, lr, tokens_per_sec, stopped_by)
        if done % tc.eval_interval == 0 or done == tc.max_iters:
            self.evaluate_and_save(done)
        if stopped_by:
            if self.saved_step != done:
                self.saved, self.saved_step = save(run, done, None), done
            return done, stopped_by
        if self.cores is not None and (change := self.cores.update()):
            self.cb.on_note(change)  # another training started or ended beside this one
        return done, 0

    def full_eval(self, done: int, spent: Compute) -> dict[str, float]:
        """The exact score of the final checkpoint: the whole val split in windows of
        block_size (gptcli eval's default), into eval.json with what the run spent."""
        run = self.run
        tokenizer = tokenizer_from_spec(run.data.tokenizer_spec)
        block = run.cfg.model.block_size
        [scored] = evaluate_model(
            run.forward, tokenizer, run.data.splits["val"], [block],
            autocast_ctx=lambda: autocast(run.device, run.precision),
        )  # fmt: skip
        report = EvalReport(self.saved, done, "val", str(run.data.dir), None, None, block, [scored],
                            compute=spent)  # fmt: skip
        merge_results(run.out_dir, report)
        record = scored.record()
        return {k: record[k] for k in ("tokens", "loss", "bits_per_byte")}

    def forward_backward(self, step: int) -> torch.Tensor:
        """Accumulate the gradients of this process's micro-batches; their summed loss."""
        run = self.run
        my_micro, rows = run.share.micro, run.share.rows
        loss_sum = torch.zeros((), device=run.device)
        for m in my_micro:
            x, y = run.batches(step, m)
            x, y = x[rows], y[rows]  # all rows, unless processes share each micro-batch
            # Gradients are all-reduced once per step, in the last micro-batch's backward.
            sync = not run.d.enabled or m == my_micro[-1]
            with contextlib.nullcontext() if sync else run.trainee.no_sync():
                with autocast(run.device, run.precision):
                    _, loss = run.trainee(x.to(run.device), y.to(run.device))
                run.scaler.scale(loss / len(my_micro)).backward()
            loss_sum += loss.detach()
        return loss_sum

    def clip_and_step(self, measure: bool) -> torch.Tensor | None:
        """Clip and step; the gradients' total norm before clipping (on the device, unsynced)
        when clipping computes it anyway or measure asks for it."""
        run, clip = self.run, self.run.cfg.train.grad_clip
        norm = None
        if clip > 0 or measure:
            # fp16: the true gradients' norm; step() then knows not to unscale them again.
            run.scaler.unscale_(run.optimizer)
        if clip > 0:
            # foreach: one multi-tensor norm rather than one per parameter (the default on CUDA
            # only).
            foreach = run.device.type != "mps"
            norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip, foreach=foreach)
        elif measure:
            # Only on logged steps, so a norm per parameter costs nothing worth fusing.
            grads = [p.grad for p in run.model.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
        # fp16: a step whose gradients overflowed is skipped here and the scale lowered.
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        return norm

    def logs_at(self, done: int) -> bool:
        """Whether the step that makes done steps writes a metrics.jsonl record."""
        tc = self.run.cfg.train
        return done % tc.log_interval == 0 or done == tc.max_iters

    def log_step(
        self, done: int, loss_sum, grad_norm, lr: float, tokens_per_sec: float, stopping
    ) -> None:
        run, tc = self.run, self.run.cfg.train
        is_log = self.logs_at(done)
        is_eval = done % tc.eval_interval == 0 or done == tc.max_iters
        logged = None
        # Measured (a device sync) only when needed, and always before a checkpoint.
        if is_log or is_eval or stopping:
            total = distributed.all_sum(run.d, loss_sum, run.device)
            logged = (total / (run.n_micro * run.share.sharing)).item()
            self.check_finite(logged, "training loss", done)
        if is_log:
            record = {"step": done, "loss": logged, "lr": lr, "tokens_per_sec": tokens_per_sec}
            if grad_norm is not None:
                # The loss's .item() above has synced already. Not finite: an fp16 overflow,
                # a step the GradScaler skips (null keeps the file strict JSON).
                norm = grad_norm.item()
                record["grad_norm"] = norm if math.isfinite(norm) else None
            record["time"] = self.clock()
            if run.scaler.is_enabled():
                record["loss_scale"] = run.scaler.get_scale()
            self.log.write(record)
        self.cb.on_step(done, logged, lr, tokens_per_sec)

    def evaluate(self, step: int) -> EvalResult:
        run = self.run
        losses = evaluate(run.forward, run.data, run.cfg, run.device, run.precision, run.d)
        result = EvalResult(step, losses["train"], losses["val"])
        self.check_finite(result.val_loss, "val loss", step)
        self.log.write(
            {"step": step, "train_loss": result.train_loss, "val_loss": result.val_loss,
             "time": self.clock()}
        )  # fmt: skip
        self.cb.on_eval(result)
        return result

    def evaluate_and_save(self, done: int) -> None:
        run = self.run
        self.last_eval = self.evaluate(done)
        if self.last_eval.val_loss < run.best_val:
            run.best_val, run.best_step = self.last_eval.val_loss, done
        self.saved, self.saved_step = save(run, done, self.last_eval.val_loss), done

    def check_finite(self, value: float, what: str, step: int) -> None:
        if math.isfinite(value):
            return
        pointer = checkpoint.read_pointer(self.run.out_dir)
        kept = (
            f"the last good checkpoint, {self.run.out_dir / pointer['latest']}, is kept "
            "(--resume with a lower train.lr continues from it)"
            if pointer
            else "no checkpoint was written"
        )
        fp16 = (
            " (not a gradient overflow: the GradScaler skips those steps itself)"
            if self.run.precision == "fp16"
            else ""
        )
        raise GptcliError(
            f"the {what} became {value} at step {step}{fp16}; training stopped. Lower train.lr "
            f"or raise train.warmup_iters, or use precision fp32; {kept}"
        )

    def result(self, done: int, seconds: float, stopped_by: int) -> TrainResult:
        run = self.run
        steps = done - run.start_step
        timed, seconds = steps - 1, self.train_seconds
        if steps == 1:
            timed, seconds = 1, self.first_step_seconds
        tps = timed * run.tokens_per_step / seconds if seconds else 0.0
        peak = peak_flops(run.device, run.precision)
        per_token = flops_per_token(run.cfg.model, run.model.vocab_size)
        return TrainResult(
            steps=steps,
            first_eval=self.first_eval,
            last_eval=self.last_eval,
            best_val_loss=run.best_val if math.isfinite(run.best_val) else None,
            seconds=seconds,
            tokens_per_sec=tps,
            checkpoint=self.saved,
            device=str(run.device),
            step=done,
            mfu=per_token * tps / (peak * run.d.world_size) if peak else None,
            interrupted=stopped_by or None,
            first_step_seconds=self.first_step_seconds,
            compute=compute(run.cfg.model, run.model.vocab_size, done, run.tokens_per_step),
        )
