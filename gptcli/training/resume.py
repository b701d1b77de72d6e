"""Where a run's weights and state come from: a fresh init, `train.init_from` (a gptcli
checkpoint or Hugging Face GPT-2 weights), or the run's own latest checkpoint (--resume)."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from gptcli import checkpoint
from gptcli.config import Config, ModelConfig
from gptcli.data.dataset import TokenDataset
from gptcli.errors import GptcliError, first_line
from gptcli.training.distributed import Dist

# What a checkpoint's trainer.pt must hold for --resume.
TRAINER_KEYS = ("optimizer", "scaler", "step", "best_step", "best_val_loss", "rng")


def check_run_dir(out_dir: Path, resume: bool, force: bool) -> None:
    if checkpoint.has_checkpoint(out_dir) and not (resume or force):
        raise GptcliError(
            f"{out_dir} already holds a training run; pass --resume to continue it, --force to "
            "start over, or --out DIR for a new run"
        )
    if resume and not checkpoint.has_checkpoint(out_dir):
        raise GptcliError(f"nothing to resume: {out_dir} holds no checkpoint")


def apply_init_from(
    cfg: Config, data: TokenDataset, resume: bool
) -> tuple[Config, dict[str, torch.Tensor] | None]:
    """cfg with the init_from source's architecture, and the source's weights (None when there
    is no init_from, or when resuming: the run's checkpoint already holds what it became)."""
    if not cfg.train.init_from:
        return cfg, None
    # The source decides the architecture; dropout stays the user's, as fine-tuning may add it.
    if resume:
        source, state = checkpoint.load(cfg.train.out_dir, "latest").config.model, None
    else:
        source, state = load_init(cfg.train.init_from, data)
    return replace(cfg, model=replace(source, dropout=cfg.model.dropout)), state


def load_init(path: str, data: TokenDataset) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """train.init_from: a Hugging Face directory or a gptcli checkpoint or export -> its
    model config and weights, refused unless its tokenizer is the dataset's."""
    from gptcli.interop import hf

    # An hf export is a Hugging Face directory too, but its gptcli.json also names its tokenizer
    # (char, bpe), where a plain one can only mean GPT-2's: read it as the checkpoint it is.
    if hf.is_hf_dir(path) and not checkpoint.is_export(path):
        model_cfg, state, vocab_size, spec = hf.read_model(path)
    else:
        if not Path(path).exists():
            raise GptcliError(f"train.init_from {path} does not exist")
        if not (
            checkpoint.has_checkpoint(path)
            or checkpoint.is_export(path)
            or (Path(path) / checkpoint.CONFIG_FILE).is_file()
        ):
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


def load_init_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise GptcliError(f"train.init_from {source} does not fit ({first_line(exc)})") from None


class Progress(NamedTuple):
    """Where a resumed run stands: the step it continues from and its best so far."""

    step: int
    best_step: int
    best_val: float


def restore(cfg: Config, vocab_size: int, d: Dist, device: torch.device, model: torch.nn.Module,
            optimizer: Any, scaler: torch.amp.GradScaler) -> Progress:  # fmt: skip
    """Continue from cfg's run directory's latest checkpoint: load the weights, optimizer and
    scaler state into those given and this process's RNG (d: its Dist); return the progress."""
    out_dir = Path(cfg.train.out_dir)
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
    if ckpt.vocab_size != vocab_size:
        raise GptcliError(
            f"cannot resume: checkpoint vocab_size {ckpt.vocab_size} != dataset's "
            f"{vocab_size} (data.dir {cfg.data.dir})"
        )
    model.load_state_dict(ckpt.model_state())
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise GptcliError(f"cannot resume: the checkpoint's optimizer state does not fit "
                          f"train.optimizer {cfg.train.optimizer} ({exc}); resume with the "
                          "optimizer the run started with") from None
    scaler.load_state_dict(state["scaler"])
    progress = Progress(state["step"], state["best_step"], state["best_val_loss"])
    rng = state["rng"]
    rng = [rng] if isinstance(rng, dict) else rng  # one process's state, before DDP
    if len(rng) == d.world_size:
        set_rng_state(rng[d.rank], device)
    else:  # another number of processes: dropout noise cannot continue exactly
        torch.manual_seed(cfg.train.seed + d.rank + progress.step)
    return progress


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        cuda = state["cuda"]
        if isinstance(cuda, list):  # older checkpoints held every GPU's state
            cuda = cuda[device.index or 0]
        torch.cuda.set_rng_state(cuda, device)


def _model_differences(a: Config, b: Config) -> list[str]:
    da, db = asdict(a.model), asdict(b.model)
    return [f"model.{k}: {db[k]!r} in checkpoint vs {da[k]!r} now" for k in da if da[k] != db[k]]
