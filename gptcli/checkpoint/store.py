"""Checkpoints: atomic to write, safe to load, self-describing.

A run directory holds immutable checkpoint directories (step-0000500/) and one small pointer
file, checkpoints.json, naming the latest and the best. A checkpoint is written in full under a
temporary name and renamed into place before the pointer (replaced atomically) names it, so a
process killed at any moment leaves the previous pointer and the checkpoints it names intact.
Weights and trainer state are loaded with torch.load(weights_only=True): no pickled code runs.

`gptcli export` writes a directory that load() reads as one checkpoint too: the weights in
model.safetensors, and gptcli.json naming the config, the tokenizer, and where each of the
model's tensors is stored in that file (Hugging Face's GPT-2 names, or gptcli's own), so that
reading it needs no knowledge of any other layout.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gptcli import atomic
from gptcli.checkpoint import formats
from gptcli.config import Config, config_from_dict
from gptcli.data.tokenizers import Tokenizer, tokenizer_from_spec
from gptcli.errors import GptcliError, first_line
from gptcli.model import GPT, check_config

POINTER = "checkpoints.json"
MODEL_FILE = "model.pt"
TRAINER_FILE = "trainer.pt"
CONFIG_FILE = "config.json"
EXPORT_FILE = "gptcli.json"
EXPORT_WEIGHTS = "model.safetensors"
_STEP_DIR = re.compile(r"^step-\d+$")
_TMP_DIR = re.compile(r"^\.step-\d+\.tmp-")


@dataclass
class Checkpoint:
    dir: Path
    config: Config
    vocab_size: int
    tokenizer_spec: dict[str, Any]
    step: int
    # An export's tensors: model name -> (names in model.safetensors, joined along the first
    # dimension when several; whether stored transposed).
    exported: dict[str, tuple[tuple[str, ...], bool]] | None = None
    # Exact conversions of an older format's weights to this version's maths (formats.py).
    conversions: list[formats.Change] = field(default_factory=list)

    def model_state(self) -> dict[str, torch.Tensor]:
        if self.exported is not None:
            state = _export_state(self.dir / EXPORT_WEIGHTS, self.exported)
        else:
            state = _torch_load(self.dir / MODEL_FILE)
        for change in self.conversions:
            state = change.convert(state)
        return state

    def trainer_state(self) -> dict[str, Any]:
        if self.exported is not None:
            raise GptcliError(
                f"{self.dir} is an export: weights without training state; start a new run "
                f"(another --out) with train.init_from: {self.dir}"
            )
        return _torch_load(self.dir / TRAINER_FILE)


def read_pointer(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / POINTER
    if not path.is_file():
        return None
    try:
        pointer = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(pointer, dict) or "latest" not in pointer:
            raise ValueError("no 'latest' entry")
        for key in ("latest", "best"):
            if key in pointer and not _STEP_DIR.match(str(pointer[key])):
                raise ValueError(f"'{key}' is {pointer[key]!r}, not a step-NNNNNNN name")
    except ValueError as exc:
        raise GptcliError(
            f"{path} is corrupt ({exc}); remove it or pick a checkpoint directory"
        ) from None
    return pointer


def step_dir_name(step: int) -> str:
    return f"step-{step:07d}"


def has_checkpoint(run_dir: Path) -> bool:
    return (Path(run_dir) / POINTER).exists()


def forget(run_dir: Path) -> None:
    """Start a run directory over: without its pointer the old checkpoints are no run to resume,
    and the next save prunes them. One atomic unlink, so a kill leaves the old run or none."""
    (Path(run_dir) / POINTER).unlink(missing_ok=True)


def save(
    run_dir: Path,
    *,
    step: int,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    config: Config,
    vocab_size: int,
    tokenizer_spec: dict[str, Any],
    best_step: int,
    best_val_loss: float | None,
    val_loss: float | None,
) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    tmp = atomic.temp_dir(run_dir, f".{name}.tmp-")
    try:
        torch.save(model_state, tmp / MODEL_FILE)
        torch.save(trainer_state, tmp / TRAINER_FILE)
        atomic.write_json(
            tmp / CONFIG_FILE,
            {
                "config": config.to_dict(),
                "vocab_size": vocab_size,
                "tokenizer": tokenizer_spec,
                "step": step,
                "val_loss": val_loss,
                formats.FORMAT_KEY: formats.FORMAT,
            },
        )
        final = run_dir / name
        best = step_dir_name(best_step)
        if final.exists():
            # Replacing what the pointer names would leave it naming nothing for a moment.
            pointer = read_pointer(run_dir) or {}
            if name in (pointer.get("latest"), pointer.get("best")):
                raise GptcliError(f"{final} is a checkpoint {POINTER} names; not replacing it")
            shutil.rmtree(final)  # left by a process killed before the pointer named it
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer = {"latest": name, "best": best, "best_val_loss": best_val_loss}
    atomic.write_json(run_dir / POINTER, pointer)
    _prune(run_dir, keep={name, best})
    return final


def _prune(run_dir: Path, keep: set[str]) -> None:
    # Also the temporary directories of saves that a killed process left half-written.
    for child in run_dir.iterdir():
        named = _STEP_DIR.match(child.name) or _TMP_DIR.match(child.name)
        if child.is_dir() and named and child.name not in keep:
            shutil.rmtree(child, ignore_errors=True)


def resolve(path: str | Path, which: str = "best") -> Path:
    """A run directory (through its pointer) or a checkpoint directory -> the checkpoint dir."""
    path = Path(path)
    if not path.exists():
        raise GptcliError(f"checkpoint not found: {path}")
    if is_export(path) or (path / CONFIG_FILE).is_file():
        return path
    pointer = read_pointer(path)
    if pointer is None:
        raise GptcliError(
            f"{path} holds no checkpoint (neither {POINTER} nor {CONFIG_FILE}); "
            "point --checkpoint at a training run's out_dir"
        )
    if which not in ("best", "latest"):
        raise GptcliError(f"--which must be best or latest, got {which!r}")
    return path / pointer.get(which, pointer["latest"])


def load(path: str | Path, which: str = "best") -> Checkpoint:
    ckpt_dir = resolve(path, which)
    if is_export(ckpt_dir):
        return _load_export(ckpt_dir)
    cfg_path = ckpt_dir / CONFIG_FILE
    try:
        info = json.loads(cfg_path.read_text(encoding="utf-8"))
        config = config_from_dict(info["config"], source=str(cfg_path))
        check_config(config.model)
        fmt = formats.format_of(info)
        ckpt = Checkpoint(
            dir=ckpt_dir,
            config=config,
            vocab_size=int(info["vocab_size"]),
            tokenizer_spec=info["tokenizer"],
            step=int(info["step"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GptcliError(f"checkpoint {ckpt_dir} is corrupt or incomplete ({exc})") from None
    ckpt.conversions = formats.check(fmt, config.model, f"checkpoint {ckpt_dir}")
    return ckpt


def is_export(path: str | Path) -> bool:
    """Whether path is a directory `gptcli export` wrote (either format)."""
    return (Path(path) / EXPORT_FILE).is_file()


def _load_export(path: Path) -> Checkpoint:
    info_path = path / EXPORT_FILE
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        config = config_from_dict(info["config"], source=str(info_path))
        check_config(config.model)
        if not isinstance(info["tokenizer"], dict):
            raise ValueError("'tokenizer' is not an object")
        tensors = {
            str(name): (_names(where["stored"]), bool(where["transposed"]))
            for name, where in info["tensors"].items()
        }
        fmt = formats.format_of(info)
        ckpt = Checkpoint(
            dir=path,
            config=config,
            vocab_size=int(info["vocab_size"]),
            tokenizer_spec=info["tokenizer"],
            step=int(info["step"]),
            exported=tensors,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GptcliError(f"export {path} is corrupt or incomplete ({exc})") from None
    ckpt.conversions = formats.check(fmt, config.model, f"export {path}")
    return ckpt


def _names(stored: Any) -> tuple[str, ...]:
    if isinstance(stored, str):
        return (stored,)
    if isinstance(stored, list) and stored and all(isinstance(n, str) for n in stored):
        return tuple(stored)
    raise ValueError(f"a tensor is stored as {stored!r}, neither a name nor a list of names")


def _export_state(
    path: Path, tensors: dict[str, tuple[tuple[str, ...], bool]]
) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        stored = load_file(path, device="cpu")
    except FileNotFoundError:
        raise GptcliError(f"checkpoint file missing: {path}") from None
    except Exception as exc:  # a truncated file or a bad header
        raise GptcliError(f"checkpoint file {path} is corrupt ({first_line(exc)})") from None
    state = {}
    for name, (keys, transposed) in tensors.items():
        if missing := [k for k in keys if k not in stored]:
            raise GptcliError(f"{path} lacks tensor {missing[0]!r}, which its {EXPORT_FILE} names")
        # A tied lm_head names wte's tensor: both get the one tensor, as in the model.
        state[name] = stored_tensor(stored, keys, transposed)
    return state


def stored_tensor(
    stored: dict[str, torch.Tensor], names: tuple[str, ...], transposed: bool
) -> torch.Tensor:
    """One model tensor from a file's: joined along the first dimension when split into
    several (Llama's q/k/v projections are one c_attn), transposed back when stored so."""
    parts = [stored[name] for name in names]
    tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
    return tensor.t() if transposed else tensor


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GptcliError(f"checkpoint file missing: {path}") from None
    except Exception as exc:  # truncated zip, bad pickle, or a pickled object we refuse to run
        first = first_line(exc)
        raise GptcliError(
            f"checkpoint file {path} is corrupt or unsafe to load ({first})"
        ) from None


def load_model(
    path: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, Checkpoint]:
    """A checkpoint (a run directory or one checkpoint) -> its model, in eval mode on device,
    its tokenizer and the checkpoint."""
    ckpt = load(path, which)
    tokenizer = tokenizer_from_spec(ckpt.tokenizer_spec)
    model = GPT.to_load(ckpt.config.model, ckpt.vocab_size)
    try:
        model.load_state_dict(ckpt.model_state())
    except RuntimeError as exc:
        first = first_line(exc)
        raise GptcliError(f"checkpoint {ckpt.dir} does not fit its own config ({first})") from None
    model.to(device).eval()
    return model, tokenizer, ckpt
