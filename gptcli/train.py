"""The training loop: device and precision, AdamW with warmup + cosine decay, gradient
accumulation and clipping, evaluation, checkpoints, exact resume, stopping on a signal, and
distributed data parallel under torchrun.

The library reports through callbacks and writes metrics.jsonl; presenting progress (bars,
tables) is the CLI's job.

Under torchrun the global batch is the config's whatever the number of processes: one optimizer
step sees batch_size x grad_accum sequences (tokens_per_step tokens when that is set), and each
of the N processes runs grad_accum / N of those micro-batches, so grad_accum must be a multiple
of N. Micro-batch m of step s is drawn from (seed, s, m) alone, so the same steps see the same
data with any number of processes, and a resumed run sees what an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gptcli import checkpoint, distributed
from gptcli.config import Config, ModelConfig, TrainConfig
from gptcli.dataset import TokenDataset
from gptcli.distributed import Dist
from gptcli.errors import GptcliError, first_line
from gptcli.model import GPT

METRICS_FILE = "metrics.jsonl"

# Peak dense FLOP/s of one GPU as (bf16/fp16 tensor cores, fp32 without TF32), from the vendor's
# datasheets, for the MFU estimate. Matched against torch's device name; the first match wins.
PEAK_FLOPS = {
    "A100": (312e12, 19.5e12),
    "H100 PCIe": (756e12, 51e12),
    "H100 NVL": (835e12, 60e12),
    "H100": (989e12, 67e12),
    "H200": (989e12, 67e12),
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
    tokens_per_sec: float  # training steps only: evaluations and checkpoints are left out
    checkpoint: Path | None
    device: str = "cpu"
    step: int = 0  # the step the run ended at
    mfu: float | None = None  # CUDA with a known peak only
    interrupted: int | None = None  # the signal that stopped the run early, if one did


class Callbacks:
    """Hooks for presenting progress; the defaults stay silent."""

    def on_start(self, info: RunInfo) -> None: ...

    def on_step(self, step: int, loss: float | None, lr: float, tokens_per_sec: float) -> None:
        """Called after every step; loss is measured only every log_interval steps."""

    def on_eval(self, result: EvalResult) -> None: ...


# What a checkpoint's trainer.pt must hold for --resume.
TRAINER_KEYS = ("optimizer", "scaler", "step", "best_step", "best_val_loss", "rng")


def resolve_device(name: str) -> torch.device:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise GptcliError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GptcliError(f"device '{name}' asked for, but CUDA is not available; use --device cpu")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise GptcliError(f"device '{name}' does not exist: {torch.cuda.device_count()} GPU(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise GptcliError("device 'mps' asked for, but MPS is not available; use --device cpu")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if name == "fp16" and device.type != "cuda":
        raise GptcliError("train.precision fp16 needs a CUDA device; use bf16 or fp32 on CPU/MPS")
    return name


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warmup to lr, then cosine decay to min_lr at lr_decay_iters, then flat."""
    decay_iters = tc.lr_decay_iters or tc.max_iters
    if step < tc.warmup_iters:
        return tc.lr * (step + 1) / (tc.warmup_iters + 1)
    if step >= decay_iters:
        return tc.min_lr
    progress = (step - tc.warmup_iters) / max(1, decay_iters - tc.warmup_iters)
    return tc.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (tc.lr - tc.min_lr)


def make_optimizer(model: torch.nn.Module, tc: TrainConfig, device: torch.device):
    """AdamW; weight decay on matrices and embeddings only, never on biases or norm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": tc.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # One fused kernel on CUDA; elsewhere one multi-tensor op per update rather than a Python
    # loop over the parameters.
    extra = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), **extra)


def micro_batches(tc: TrainConfig, block_size: int, world_size: int = 1) -> int:
    """Micro-batches of batch_size sequences per optimizer step, all processes together."""
    tokens = tc.batch_size * block_size
    if tc.tokens_per_step is not None:
        unit = tokens * world_size
        if tc.tokens_per_step % unit:
            parts = f"batch_size x block_size{' x processes' if world_size > 1 else ''}"
            values = f"{tc.batch_size} x {block_size}{f' x {world_size}' if world_size > 1 else ''}"
            below = tc.tokens_per_step // unit * unit
            near = f"{below} or {below + unit}" if below else str(unit)
            raise GptcliError(
                f"config error: train.tokens_per_step: {tc.tokens_per_step} is not a multiple of "
                f"{parts} = {values} = {unit}; use e.g. {near}"
            )
        return tc.tokens_per_step // tokens
    if tc.grad_accum % world_size:
        raise GptcliError(
            f"config error: train.grad_accum: {tc.grad_accum} micro-batches do not split evenly "
            f"over {world_size} processes (the global batch, batch_size x grad_accum sequences, "
            f"stays the config's and each process runs grad_accum / {world_size} of them); set "
            f"grad_accum to a multiple of {world_size}"
        )
    return tc.grad_accum


def _generator(*key: int) -> torch.Generator:
    # A batch depends only on its key (seed, what, index...), never on what ran before it: a
    # resumed run draws what it would have, and processes can split a step's micro-batches.
    seed = np.random.SeedSequence([k % 2**64 for k in key]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(seed))


_TRAIN, _EVAL = 0, 1


def _train_generator(seed: int, step: int, micro: int) -> torch.Generator:
    return _generator(seed, _TRAIN, step, micro)


@torch.no_grad()
def evaluate(
    model, data: TokenDataset, cfg: Config, device, precision, d: Dist = Dist()
) -> dict[str, float]:
    """Mean loss over the same eval_iters batches every time, so evaluations compare fairly.

    Distributed, each process takes every world_size-th batch; the sums are added up, so the
    result is the single-process one. model must not be DDP-wrapped: a DDP forward is a
    collective, and the processes run different numbers of batches."""
    tc = cfg.train
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64)
    for s, split in enumerate(("train", "val")):
        for i in range(d.rank, tc.eval_iters, d.world_size):
            g = _generator(tc.seed, _EVAL, s, i)
            x, y = data.batch(split, tc.batch_size, cfg.model.block_size, g)
            with autocast(device, precision):
                _, loss = model(x.to(device), y.to(device))
            totals[s] += loss.item()
    model.train(was_training)
    totals = distributed.all_sum(d, totals, device) / tc.eval_iters
    return {"train": totals[0].item(), "val": totals[1].item()}


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        cuda = state["cuda"]
        if isinstance(cuda, list):  # older checkpoints held every GPU's state
            cuda = cuda[device.index or 0]
        torch.cuda.set_rng_state(cuda, device)


def _model_differences(a: Config, b: Config) -> list[str]:
    da, db = asdict(a.model), asdict(b.model)
    return [f"model.{k}: {db[k]!r} in checkpoint vs {da[k]!r} now" for k in da if da[k] != db[k]]


def load_init(path: str, data: TokenDataset) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """train.init_from: a Hugging Face GPT-2 directory or a gptcli checkpoint -> its model config
    and weights, refused unless its tokenizer is the dataset's."""
    from gptcli import hf

    if hf.is_hf_dir(path):
        model_cfg, state = hf.load_hf_gpt2(path)
        vocab_size, spec = state["wte.weight"].shape[0], hf.GPT2_TOKENIZER
    else:
        if not Path(path).exists():
            raise GptcliError(f"train.init_from {path} does not exist")
        if not (checkpoint.has_checkpoint(path) or (Path(path) / checkpoint.CONFIG_FILE).is_file()):
            raise GptcliError(
                f"train.init_from {path} is neither a gptcli run or checkpoint directory nor a "
                "Hugging Face GPT-2 directory (config.json with model.safetensors or "
                "pytorch_model.bin)"
            )
        ckpt = checkpoint.load(path, "best")
        model_cfg, state = ckpt.config.model, ckpt.model_state()
        vocab_size, spec = ckpt.vocab_size, ckpt.tokenizer_spec
    how = f"prepare the data with --tokenizer {spec.get('type')}"
    if vocab_size != data.vocab_size:
        raise GptcliError(
            f"train.init_from {path} has vocab {vocab_size} but data.dir's dataset has "
            f"{data.vocab_size}; {how}"
        )
    if spec != data.tokenizer_spec:
        raise GptcliError(
            f"train.init_from {path} uses another tokenizer ({spec.get('type')}) than data.dir's "
            f"dataset ({data.tokenizer_spec.get('type')}); {how} and the same corpus"
        )
    return model_cfg, state


def flops_per_token(model: GPT) -> float:
    """Training FLOPs per token (PaLM's appendix B, as nanoGPT): 6 per weight for the matmuls
    forward and backward, plus 12 x layers x heads x head size x context for attention.
    Position tables are lookups, not matmuls, so they are left out of the weights."""
    mc = model.cfg
    weights = model.num_params() - sum(p.numel() for p in model.positions.parameters())
    return 6 * weights + 12 * mc.n_layer * mc.n_embd * mc.block_size


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The GPU's peak dense FLOP/s at this precision, None where it is not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, fp32) in PEAK_FLOPS.items():
        if key in name:
            return fp32 if precision == "fp32" else half
    return None


class _StopSignal:
    """SIGINT and SIGTERM ask the loop to stop after the current step, save a checkpoint and
    return. In one process a second signal gets the previous handler (a second Ctrl-C aborts at
    once); under torchrun, whose agent forwards the signals it gets, repeats are ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, escalate: bool):
        self.signum = 0
        self.escalate = escalate
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers; a caller's thread keeps its own
        for sig in self.SIGNALS:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # e.g. a background job without job control: stay deaf to it
            self.previous[sig] = signal.SIG_DFL if previous is None else previous
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = self.signum or signum
        if self.escalate:
            signal.signal(signum, self.previous[signum])

    def __exit__(self, *exc) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)


def train(
    cfg: Config,
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    """Train as cfg says. Under torchrun (RANK, LOCAL_RANK, WORLD_SIZE set) this process joins
    the group; only rank 0 reports to callbacks and writes metrics and checkpoints."""
    d = distributed.from_env()
    device = (
        distributed.setup(d, cfg.train.device) if d.enabled else resolve_device(cfg.train.device)
    )
    try:
        cb = (callbacks or Callbacks()) if d.is_main else Callbacks()
        return _train(cfg, d, device, resume=resume, force=force, cb=cb)
    finally:
        distributed.teardown(d)


def _train(
    cfg: Config, d: Dist, device: torch.device, *, resume: bool, force: bool, cb: Callbacks
) -> TrainResult:
    tc, mc = cfg.train, cfg.model
    out_dir = Path(tc.out_dir)
    data = TokenDataset(cfg.data.dir)
    precision = resolve_precision(tc.precision, device)

    if checkpoint.has_checkpoint(out_dir) and not (resume or force):
        raise GptcliError(
            f"{out_dir} already holds a training run; pass --resume to continue it, --force to "
            "start over, or --out DIR for a new run"
        )
    if resume and not checkpoint.has_checkpoint(out_dir):
        raise GptcliError(f"nothing to resume: {out_dir} holds no checkpoint")

    init_state = None
    if tc.init_from:
        # The source decides the architecture; dropout stays the user's, as fine-tuning may add
        # it. A resumed run already started from init_from and its checkpoint holds the result.
        if resume:
            source = checkpoint.load(out_dir, "latest").config.model
        else:
            source, init_state = load_init(tc.init_from, data)
        cfg = replace(cfg, model=replace(source, dropout=mc.dropout))
        mc = cfg.model
    data.check_block_size(mc.block_size)
    n_micro = micro_batches(tc, mc.block_size, d.world_size)
    my_micro = range(d.rank * n_micro // d.world_size, (d.rank + 1) * n_micro // d.world_size)
    tokens_per_step = n_micro * tc.batch_size * mc.block_size

    torch.manual_seed(tc.seed)
    model = GPT(mc, data.vocab_size).to(device)
    if d.rank:
        torch.manual_seed(tc.seed + d.rank)  # its own dropout noise; DDP syncs the weights
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as exc:
            first = first_line(exc)
            raise GptcliError(f"train.init_from {tc.init_from} does not fit ({first})") from None
    optimizer = make_optimizer(model, tc, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    start_step, best_val, best_step = 0, math.inf, 0

    if resume:
        ckpt = checkpoint.load(out_dir, "latest")
        state = ckpt.trainer_state()
        if "optimizer" not in state:
            raise GptcliError(
                f"{ckpt.dir} holds weights but no training state (e.g. from `gptcli convert`); "
                f"start a new run (another --out) with train.init_from: {out_dir}"
            )
        missing = [k for k in TRAINER_KEYS if k not in state]
        if missing:
            raise GptcliError(
                f"{ckpt.dir}/trainer.pt is incomplete (no {', '.join(missing)}); resume from "
                "another checkpoint or start over with --force"
            )
        if diffs := _model_differences(cfg, ckpt.config):
            raise GptcliError("cannot resume: the model config differs: " + "; ".join(diffs))
        if ckpt.vocab_size != data.vocab_size:
            raise GptcliError(
                f"cannot resume: checkpoint vocab_size {ckpt.vocab_size} != dataset's "
                f"{data.vocab_size} (data.dir {cfg.data.dir})"
            )
        model.load_state_dict(ckpt.model_state())
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_step, best_step = state["step"], state["best_step"]
        best_val = state["best_val_loss"]
        rng = state["rng"]
        rng = [rng] if isinstance(rng, dict) else rng  # one process's state, before DDP
        if len(rng) == d.world_size:
            _set_rng_state(rng[d.rank], device)
        else:  # another number of processes: dropout noise cannot continue exactly
            torch.manual_seed(tc.seed + d.rank + start_step)

    forward = torch.compile(model) if tc.compile else model
    trainee = forward
    if d.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        trainee = DDP(forward, device_ids=[device.index] if device.type == "cuda" else None)
    cb.on_start(
        RunInfo(
            device=str(device),
            precision=precision,
            n_params=model.num_params(),
            vocab_size=data.vocab_size,
            tokens_per_step=tokens_per_step,
            start_step=start_step,
            max_iters=tc.max_iters,
            out_dir=str(out_dir),
            train_tokens=len(data.splits["train"]),
            val_tokens=len(data.splits["val"]),
            model=mc,
            param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
            batch_size=tc.batch_size,
            micro_batches=n_micro,
            world_size=d.world_size,
        )
    )
    metrics = None
    if d.is_main:
        if force and not resume:
            checkpoint.forget(out_dir)  # only now that the new run is sure to start
        out_dir.mkdir(parents=True, exist_ok=True)
        mode = "a" if resume else "w"
        metrics = open(out_dir / METRICS_FILE, mode, encoding="utf-8")  # noqa: SIM115

    def log(record: dict[str, Any]) -> None:
        if metrics is not None:
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()

    def check_finite(value: float, what: str, step: int) -> None:
        if math.isfinite(value):
            return
        pointer = checkpoint.read_pointer(out_dir)
        kept = (
            f"the last good checkpoint, {out_dir / pointer['latest']}, is kept (--resume with a "
            "lower train.lr continues from it)"
            if pointer
            else "no checkpoint was written"
        )
        fp16 = (
            " (not a gradient overflow: the GradScaler skips those steps itself)"
            if precision == "fp16"
            else ""
        )
        raise GptcliError(
            f"the {what} became {value} at step {step}{fp16}; training stopped. Lower train.lr "
            f"or raise train.warmup_iters, or use precision fp32; {kept}"
        )

    def run_eval(step: int) -> EvalResult:
        losses = evaluate(forward, data, cfg, device, precision, d)
        result = EvalResult(step, losses["train"], losses["val"])
        check_finite(result.val_loss, "val loss", step)
        log({"step": step, "train_loss": result.train_loss, "val_loss": result.val_loss})
        cb.on_eval(result)
        return result

    def save(step: int, val_loss: float | None) -> Path | None:
        # Every process's RNG, so that each one's dropout noise continues exactly on resume.
        rng = distributed.gather(d, _rng_state(device))
        if not d.is_main:
            return None
        # Before any evaluation (stopped early) the latest checkpoint stands in for the best.
        best = best_step if math.isfinite(best_val) else step
        best_loss = best_val if math.isfinite(best_val) else None
        return checkpoint.save(
            out_dir,
            step=step,
            model_state=model.state_dict(),
            trainer_state={
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step,
                "best_step": best_step,
                "best_val_loss": best_val,
                "rng": rng,
            },
            config=cfg,
            vocab_size=data.vocab_size,
            tokenizer_spec=data.tokenizer_spec,
            best_step=best,
            best_val_loss=best_loss,
            val_loss=val_loss,
        )

    saved, saved_step, stopped_by, done = None, -1, 0, start_step
    train_seconds = 0.0
    t_start = time.perf_counter()
    try:
        with _StopSignal(escalate=not d.enabled) as stop:
            first_eval = run_eval(start_step) if start_step == 0 and tc.max_iters > 0 else None
            last_eval = first_eval
            model.train()
            t_last = time.perf_counter()
            for step in range(start_step, tc.max_iters):
                lr = lr_at(step, tc)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss_sum = torch.zeros((), device=device)
                for m in my_micro:
                    g = _train_generator(tc.seed, step, m)
                    x, y = data.batch("train", tc.batch_size, mc.block_size, g)
                    # Gradients are all-reduced once per step, in the last micro-batch's backward.
                    sync = not d.enabled or m == my_micro[-1]
                    with contextlib.nullcontext() if sync else trainee.no_sync():
                        with autocast(device, precision):
                            _, loss = trainee(x.to(device), y.to(device))
                        scaler.scale(loss / len(my_micro)).backward()
                    loss_sum += loss.detach()
                if tc.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                # fp16: a step whose gradients overflowed is skipped here and the scale lowered.
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                done = step + 1

                now = time.perf_counter()
                train_seconds += now - t_last
                tokens_per_sec = tokens_per_step / max(now - t_last, 1e-9)
                t_last = now
                if done < tc.max_iters:
                    # Every process must stop at the same step, whichever got the signal: under
                    # DDP, a one-number all-reduce per step.
                    stopped_by = distributed.all_max(d, stop.signum, device)
                is_eval = done % tc.eval_interval == 0 or done == tc.max_iters
                is_log = done % tc.log_interval == 0 or done == tc.max_iters
                logged = None
                # Measured (a device sync) only when needed, and always before a checkpoint.
                if is_log or is_eval or stopped_by:
                    loss_mean = distributed.all_sum(d, loss_sum, device) / n_micro
                    logged = loss_mean.item()
                    check_finite(logged, "training loss", done)
                if is_log:
                    record = {
                        "step": done,
                        "loss": logged,
                        "lr": lr,
                        "tokens_per_sec": tokens_per_sec,
                    }
                    if scaler.is_enabled():
                        record["loss_scale"] = scaler.get_scale()
                    log(record)
                cb.on_step(done, logged, lr, tokens_per_sec)

                if is_eval:
                    last_eval = run_eval(done)
                    if last_eval.val_loss < best_val:
                        best_val, best_step = last_eval.val_loss, done
                    saved, saved_step = save(done, last_eval.val_loss), done
                if stopped_by:
                    if saved_step != done:
                        saved, saved_step = save(done, None), done
                    break
                t_last = time.perf_counter()  # keep eval and saving out of the next step's tokens/s
        # No process may leave before rank 0 has written the checkpoint: torchrun stops the
        # others as soon as one exits with an error code.
        distributed.barrier(d)
    finally:
        if metrics is not None:
            metrics.close()
    seconds = time.perf_counter() - t_start
    steps = done - start_step
    tokens_per_sec = steps * tokens_per_step / train_seconds if train_seconds > 0 else 0.0
    peak = peak_flops(device, precision)
    return TrainResult(
        steps=steps,
        first_eval=first_eval,
        last_eval=last_eval,
        best_val_loss=best_val if math.isfinite(best_val) else None,
        seconds=seconds,
        tokens_per_sec=tokens_per_sec,
        checkpoint=saved,
        device=str(device),
        step=done,
        mfu=flops_per_token(model) * tokens_per_sec / (peak * d.world_size) if peak else None,
        interrupted=stopped_by or None,
    )
