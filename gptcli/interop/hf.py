"""GPT-2 weights in Hugging Face's layout (a local directory: config.json plus model.safetensors
or pytorch_model.bin) -> a gptcli model config and state dict, or a gptcli checkpoint.

Nothing here touches the network, and no pickled code runs: safetensors holds raw tensors, and
.bin files are read with torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from gptcli import atomic
from gptcli.config import Config, ModelConfig, config_from_dict
from gptcli.errors import GptcliError, first_line
from gptcli.model import GPT
from gptcli.training import checkpoint

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
GPT2_TOKENIZER = {"type": "gpt2"}
GPT2_VOCAB = 50257

# transformers' activation names -> gptcli's; gelu_new is GPT-2's tanh approximation.
ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}

# Options of transformers' GPT2Config that change the computation, with the values gptcli
# computes; transformers uses these defaults when config.json leaves a key out.
_FIXED = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False,
}

# Causal-mask buffers that older transformers versions saved with the weights.
_MASK_BUFFER = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")

# HF's Conv1D stores these as (in, out); nn.Linear wants (out, in).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


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


def _read_config(path: Path) -> tuple[ModelConfig, int]:
    cfg_path = path / CONFIG_FILE
    try:
        hf = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GptcliError(f"cannot read {cfg_path} ({exc})") from None
    if not isinstance(hf, dict):
        raise GptcliError(f"{cfg_path} is not a JSON object")
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise GptcliError(f"{cfg_path}: model_type is {model_type!r}; only gpt2 can be read")
    for key in ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"):
        if not isinstance(hf.get(key), int):
            raise GptcliError(f"{cfg_path} lacks an integer {key!r}; is this a GPT-2 config?")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        raise GptcliError(
            f"{cfg_path}: layer_norm_epsilon is {eps}; gptcli's LayerNorm uses 1e-5 only"
        )
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATIONS:
        raise GptcliError(
            f"{cfg_path}: activation_function {act!r} is not supported "
            f"(supported: {', '.join(ACTIVATIONS)})"
        )
    for key, value in _FIXED.items():
        if hf.get(key, value) != value:
            raise GptcliError(f"{cfg_path}: {key}={hf[key]!r} is not supported (only {value})")
    n_embd = hf["n_embd"]
    n_inner = hf.get("n_inner") or 4 * n_embd
    model = {
        "n_layer": hf["n_layer"],
        "n_head": hf["n_head"],
        "n_embd": n_embd,
        "block_size": hf["n_positions"],
        "bias": True,
        "position": "learned",
        "norm": "layernorm",
        "norm_placement": "pre",
        "tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
        "mlp_ratio": n_inner / n_embd,
        "activation": ACTIVATIONS[act],
    }
    try:
        mc = config_from_dict({"model": model}, source=str(cfg_path)).model
    except GptcliError as exc:
        raise GptcliError(f"{cfg_path} gives an invalid model: {exc}") from None
    return mc, hf["vocab_size"]


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
    # GPT2LMHeadModel saves the body under "transformer."; the original GPT2Model has no prefix.
    return file, {k.removeprefix("transformer."): v for k, v in state.items()}


def _hf_name(name: str) -> str:
    if name.startswith("blocks."):
        return "h." + name.removeprefix("blocks.")
    if name == "positions.wpe.weight":
        return "wpe.weight"
    return name


def hf_tensor_names(names: Iterable[str], tied: bool) -> dict[str, tuple[str, bool]]:
    """gptcli tensor name -> (its name in GPT2LMHeadModel's files, whether it is stored
    transposed): load_hf_gpt2's mapping, inverted. A tied lm_head is wte itself, which is how
    transformers ties it on load (and safetensors refuses two names for one tensor)."""
    table = {}
    for name in names:
        if name == "lm_head.weight":
            table[name] = ("transformer.wte.weight", False) if tied else (name, False)
        else:
            table[name] = ("transformer." + _hf_name(name), name.endswith(_CONV1D))
    return table


def load_hf_gpt2(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """A Hugging Face GPT-2 directory -> (its ModelConfig, a state dict in gptcli's names)."""
    path = Path(path)
    if not path.is_dir():
        raise GptcliError(f"Hugging Face model directory not found: {path}")
    if not (path / CONFIG_FILE).is_file():
        raise GptcliError(f"{path} is not a Hugging Face GPT-2 directory: it has no {CONFIG_FILE}")
    mc, vocab_size = _read_config(path)
    file, hf = _read_weights(path)

    # The model's own state dict is the list of what must be filled, with the shapes it needs.
    with torch.device("meta"):
        wanted = GPT(mc, vocab_size).state_dict()
    used, state = set(), {}
    for name, target in wanted.items():
        key = _hf_name(name)
        if name == "lm_head.weight" and mc.tie_embeddings:
            state[name] = state["wte.weight"]  # tied: the same tensor, as in the model
            used.add(key)  # a copy of wte that some files carry
            continue
        if key not in hf:
            raise GptcliError(f"{file} lacks tensor {key!r} that its {CONFIG_FILE} implies")
        conv1d = name.endswith(_CONV1D)
        expected = tuple(target.shape)[::-1] if conv1d else tuple(target.shape)
        if tuple(hf[key].shape) != expected:
            raise GptcliError(
                f"{file}: tensor {key!r} has shape {tuple(hf[key].shape)}, but its "
                f"{CONFIG_FILE} implies {expected}"
            )
        tensor = hf[key].t() if conv1d else hf[key]
        state[name] = tensor.to(torch.float32).contiguous()
        used.add(key)
    extra = [k for k in hf if k not in used and not _MASK_BUFFER.match(k)]
    if extra:
        raise GptcliError(f"{file} holds unexpected tensor {extra[0]!r}; is this GPT-2?")
    return mc, state


def convert(hf_dir: str | Path, out_dir: str | Path, force: bool = False) -> Path:
    """Write a Hugging Face GPT-2 directory as a gptcli checkpoint (a run directory at step 0
    with the GPT-2 tokenizer, or an hf export's own) that `sample --checkpoint` and
    `train.init_from` accept."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if out_dir.exists() and not force:
        raise GptcliError(f"{out_dir} already exists; pass --force to replace it")
    if out_dir.exists() and out_dir.resolve() == hf_dir.resolve():
        raise GptcliError("the output directory must not be the Hugging Face directory itself")
    mc, state = load_hf_gpt2(hf_dir)
    vocab_size = state["wte.weight"].shape[0]
    # A gptcli export names its tokenizer (char, bpe); a plain Hugging Face one can only be GPT-2's.
    exported = checkpoint.is_export(hf_dir)
    spec = checkpoint.load(hf_dir).tokenizer_spec if exported else GPT2_TOKENIZER
    if not exported and vocab_size < GPT2_VOCAB:
        raise GptcliError(
            f"{hf_dir} has vocab_size {vocab_size}, fewer than the GPT-2 tokenizer's {GPT2_VOCAB}: "
            "it was not trained with GPT-2's tokenizer, which a converted checkpoint uses"
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
    return out_dir
