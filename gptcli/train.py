"""The training loop: device and precision, AdamW with warmup + cosine decay, gradient
accumulation and clipping, evaluation, checkpoints and resume.

The library reports through callbacks and writes metrics.jsonl; presenting progress (bars,
tables) is the CLI's job.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from gptcli import checkpoint
from gptcli.config import Config, ModelConfig, TrainConfig
from gptcli.dataset import TokenDataset
from gptcli.errors import GptcliError
from gptcli.model import GPT

METRICS_FILE = "metrics.jsonl"


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
    tokens_per_sec: float
    checkpoint: Path | None


class Callbacks:
    """Hooks for presenting progress; the defaults stay silent."""

    def on_start(self, info: RunInfo) -> None: ...

    def on_step(self, step: int, loss: float | None, lr: float, tokens_per_sec: float) -> None:
        """Called after every step; loss is measured only every log_interval steps."""

    def on_eval(self, result: EvalResult) -> None: ...


def resolve_device(name: str) -> torch.device:
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
    extra = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=tc.lr, betas=(tc.beta1, tc.beta2), **extra)


def _step_generator(seed: int, step: int) -> torch.Generator:
    # Batches depend only on (seed, step), so a resumed run draws the batches it would have.
    return torch.Generator().manual_seed((seed % 2**31) * 2**32 + step)


@torch.no_grad()
def evaluate(model, data: TokenDataset, cfg: Config, device, precision) -> dict[str, float]:
    """Mean loss over the same eval_iters batches every time, so evaluations compare fairly."""
    tc = cfg.train
    was_training = model.training
    model.eval()
    losses = {}
    for i, split in enumerate(("train", "val")):
        g = torch.Generator().manual_seed(tc.seed + 1000 + i)
        total = 0.0
        for _ in range(tc.eval_iters):
            x, y = data.batch(split, tc.batch_size, cfg.model.block_size, g)
            with autocast(device, precision):
                _, loss = model(x.to(device), y.to(device))
            total += loss.item()
        losses[split] = total / tc.eval_iters
    model.train(was_training)
    return losses


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def train(
    cfg: Config,
    *,
    resume: bool = False,
    force: bool = False,
    callbacks: Callbacks | None = None,
) -> TrainResult:
    cb = callbacks or Callbacks()
    tc, mc = cfg.train, cfg.model
    out_dir = Path(tc.out_dir)
    data = TokenDataset(cfg.data.dir)
    device = resolve_device(tc.device)
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

    torch.manual_seed(tc.seed)
    model = GPT(mc, data.vocab_size).to(device)
    if init_state is not None:
        try:
            model.load_state_dict(init_state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
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
        _set_rng_state(state["rng"])

    forward = torch.compile(model) if tc.compile else model
    tokens_per_step = tc.batch_size * mc.block_size * tc.grad_accum
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
        )
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = open(out_dir / METRICS_FILE, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115

    def log(record: dict[str, Any]) -> None:
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()

    def run_eval(step: int) -> EvalResult:
        losses = evaluate(forward, data, cfg, device, precision)
        result = EvalResult(step, losses["train"], losses["val"])
        log({"step": step, "train_loss": result.train_loss, "val_loss": result.val_loss})
        cb.on_eval(result)
        return result

    first_eval = run_eval(start_step) if start_step == 0 and tc.max_iters > 0 else None
    last_eval, saved = first_eval, None
    model.train()
    t_start = t_last = time.perf_counter()
    try:
        for step in range(start_step, tc.max_iters):
            lr = lr_at(step, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            g = _step_generator(tc.seed, step)
            for _ in range(tc.grad_accum):
                x, y = data.batch("train", tc.batch_size, mc.block_size, g)
                with autocast(device, precision):
                    _, loss = forward(x.to(device), y.to(device))
                scaler.scale(loss / tc.grad_accum).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            done = step + 1

            now = time.perf_counter()
            tokens_per_sec = tokens_per_step / max(now - t_last, 1e-9)
            t_last = now
            logged = None
            if done % tc.log_interval == 0 or done == tc.max_iters:
                logged = loss.item()
                if not math.isfinite(logged):
                    raise GptcliError(
                        f"the loss became {logged} at step {done}; lower train.lr or use "
                        f"precision fp32 (the last good checkpoint in {out_dir} is kept)"
                    )
                log({"step": done, "loss": logged, "lr": lr, "tokens_per_sec": tokens_per_sec})
            cb.on_step(done, logged, lr, tokens_per_sec)

            if done % tc.eval_interval == 0 or done == tc.max_iters:
                last_eval = run_eval(done)
                if last_eval.val_loss < best_val:
                    best_val, best_step = last_eval.val_loss, done
                saved = checkpoint.save(
                    out_dir,
                    step=done,
                    model_state=model.state_dict(),
                    trainer_state={
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict(),
                        "step": done,
                        "best_step": best_step,
                        "best_val_loss": best_val,
                        "rng": _rng_state(),
                    },
                    config=cfg,
                    vocab_size=data.vocab_size,
                    tokenizer_spec=data.tokenizer_spec,
                    best_step=best_step,
                    best_val_loss=best_val,
                    val_loss=last_eval.val_loss,
                )
                t_last = time.perf_counter()  # keep eval and saving out of the next step's tokens/s
    finally:
        metrics.close()
    seconds = time.perf_counter() - t_start
    steps = tc.max_iters - start_step
    return TrainResult(
        steps=steps,
        first_eval=first_eval,
        last_eval=last_eval,
        best_val_loss=best_val if math.isfinite(best_val) else None,
        seconds=seconds,
        tokens_per_sec=steps * tokens_per_step / seconds if seconds > 0 and steps else 0.0,
        checkpoint=saved,
    )
