"""Hugging Face model directories (config.json plus model.safetensors or pytorch_model.bin;
GPT-2, Llama or Qwen3, see families.py) -> a gptcli model config and state dict, or a gptcli
checkpoint.

Nothing here touches the network, and no pickled code runs: safetensors holds raw tensors, and
.bin files are read with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from gptcli import atomic, checkpoint
from gptcli.config import Config, ModelConfig
from gptcli.data.tokenizers import tokenizer_from_spec
from gptcli.errors import GptcliError, first_line
from gptcli.interop.architectures import by_model_type
from gptcli.interop.families import Family
from gptcli.interop.hf_tokenizer import read_tokenizer
from gptcli.model import GPT
from gptcli.version import __version__

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CONVERTED_FILE = "converted.json"  # beside a converted checkpoint's pointer; nothing else writes it


def is_hf_dir(path: str | Path) -> bool:
    """Whether path looks like a Hugging Face model directory (rather than a gptcli run)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        return False
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return True
    try:
        return "model_type" in json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def read_config(path: Path) -> tuple[type[Family], ModelConfig, int]:
    """config.json -> (its family, the gptcli model it describes, the vocab size)."""
    cfg_path = path / CONFIG_FILE
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GptcliError(f"cannot read {cfg_path} ({exc})") from None
    if not isinstance(hf, dict):
        raise GptcliError(f"{cfg_path} is not a JSON object")
    family = by_model_type(hf.get("model_type", "gpt2"), str(cfg_path))
    mc, vocab_size = family.model_config(hf, str(cfg_path))
    return family, mc, vocab_size


def _read_weights(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    for name in WEIGHT_FILES:
        file = path / name
        if file.is_file():
            break
    else:
        raise GptcliError(f"{path} holds neither {' nor '.join(WEIGHT_FILES)}")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(file, device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated files, bad headers, pickles that are not plain tensors
        first = first_line(exc)
        raise GptcliError(f"cannot load {file} ({first})") from None
    if not isinstance(state, dict):
        raise GptcliError(f"{file} does not hold a dict of tensors")
    return file, state


def load_hf(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A Hugging Face directory (GPT-2, Llama or Qwen3) -> (its ModelConfig, a state dict in
    gptcli's names), every tensor checked against the shape its config implies."""
    path = Path(path)
    if not path.is_dir():
        raise GptcliError(f"Hugging Face model directory not found: {path}")
    if not (path / CONFIG_FILE).is_file():
        raise GptcliError(f"{path} is not a Hugging Face model directory: it has no {CONFIG_FILE}")
    family, mc, vocab_size = read_config(path)
    file, stored = _read_weights(path)
    if family.name == "gpt2" and "wte.weight" in stored:
        # The original GPT2Model saved its body without GPT2LMHeadModel's "transformer." prefix.
        stored = {k if k == "lm_head.weight" else "transformer." + k: v for k, v in stored.items()}

    # The model's own state dict is the list of what must be filled, with the shapes it needs.
    with torch.device("meta"):
        wanted = GPT(mc, vocab_size).state_dict()
    table = family.table(mc, list(wanted))
    used, state = set(), {}
    for name, target in wanted.items():
        place = table[name]
        if missing := [n for n in place.names if n not in stored]:
            raise GptcliError(f"{file} lacks tensor {missing[0]!r} that its {CONFIG_FILE} implies")
        tensor = place.join(stored)
        if tuple(tensor.shape) != tuple(target.shape):
            raise GptcliError(
                f"{file}: tensor {', '.join(place.names)} gives shape {tuple(tensor.shape)}, but "
                f"its {CONFIG_FILE} implies {tuple(target.shape)}"
            )
        state[name] = tensor.to(torch.float32).contiguous()
        used.update(place.names)
    if mc.tie_embeddings:
        state["lm_head.weight"] = state["wte.weight"]  # tied: the same tensor, as in the model
        used.add("lm_head.weight")  # a copy of wte that some files carry
    extra = [k for k in stored if k not in used and not family.ignored(k)]
    if extra:
        raise GptcliError(f"{file} holds unexpected tensor {extra[0]!r}; is it {family.name}?")
    return mc, state


def convert(hf_dir: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Write a Hugging Face directory (GPT-2, Llama or Qwen3) as a gptcli checkpoint (a run
    directory at step 0) that `sample --checkpoint` and `train.init_from` accept. A gptcli
    export is read through its gptcli.json, bit for bit; any other directory through its
    config.json, weights and tokenizer files."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    a, b = hf_dir.resolve(), out_dir.resolve()
    if a == b or a in b.parents or b in a.parents:  # replacing OUT_DIR would delete the input
        raise GptcliError(f"OUT_DIR {out_dir} and the Hugging Face directory {hf_dir} overlap; "
                          "write the checkpoint somewhere else")  # fmt: skip
    atomic.check_replace(
        out_dir, force, label="OUT_DIR", what="a checkpoint convert wrote",
        why_not_ours=_not_converted,
    )  # fmt: skip
    mc, state, vocab_size, spec = read_model(hf_dir)
    tokens = tokenizer_from_spec(spec).vocab_size
    if tokens > vocab_size:
        raise GptcliError(
            f"{hf_dir} has vocab_size {vocab_size}, fewer than its tokenizer's {tokens} tokens "
            f"({spec['type']}): the model was not trained with that tokenizer"
        )
    with atomic.new_dir(out_dir) as tmp:
        checkpoint.save(
            tmp,
            step=0,
            model_state=state,
            # No optimizer state: train --resume refuses this, train.init_from is the way on.
            trainer_state={"step": 0, "converted_from": str(hf_dir)},
            config=Config(model=mc),
            vocab_size=vocab_size,
            tokenizer_spec=spec,
            best_step=0,
            best_val_loss=None,
            val_loss=None,
        )
        # The mark by which a later --force knows this directory as its own to replace.
        atomic.write_json(
            tmp / CONVERTED_FILE, {"converted_from": str(hf_dir), "gptcli_version": __version__}
        )
    return out_dir


def _not_converted(path: Path) -> str | None:
    """None for a checkpoint convert wrote (its CONVERTED_FILE) that no training has used since;
    else why --force may not replace path."""
    if not (path / CONVERTED_FILE).is_file():
        return f"no {CONVERTED_FILE}"
    # Training's log (gptcli.training.report.METRICS_FILE, named here because training imports
    # interop): a run trained in the directory since, which --force must not delete.
    if (path / "metrics.jsonl").exists():
        return "a training run's metrics.jsonl"
    return None


def read_model(
    hf_dir: str | Path,
) -> tuple[ModelConfig, dict[str, torch.Tensor], int, dict[str, Any]]:
    """A Hugging Face directory -> (model config, state dict, vocab size, tokenizer spec)."""
    hf_dir = Path(hf_dir)
    if checkpoint.is_export(hf_dir):
        ckpt = checkpoint.load(hf_dir)
        return ckpt.config.model, ckpt.model_state(), ckpt.vocab_size, ckpt.tokenizer_spec
    mc, state = load_hf(hf_dir)
    vocab_size = state["wte.weight"].shape[0]
    family, _, _ = read_config(hf_dir)
    spec = read_tokenizer(hf_dir, gpt2_default=family.name == "gpt2")
    return mc, state, vocab_size, spec
