"""`gptcli export`: a checkpoint -> a directory other tools load, and gptcli reads back.

Two formats, both with the weights in model.safetensors and gptcli.json (the gptcli config, vocab
size, tokenizer spec and where each tensor is stored; training.checkpoint reads it back):
- hf: Hugging Face's GPT-2 layout (config.json, generation_config.json, tokenizer files), which
  transformers loads with no custom code; only variants GPT-2's architecture can express;
- safetensors: any variant, in gptcli's own tensor names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptcli import atomic
from gptcli.config import Config, ModelConfig
from gptcli.data.tokenizers import Tokenizer, tokenizer_from_spec
from gptcli.errors import GptcliError
from gptcli.interop import hf, hf_tokenizer
from gptcli.model import GPT, count_params_formula
from gptcli.model.mlp import hidden_size
from gptcli.training import checkpoint, formats

FORMATS = ("hf", "safetensors")
_VERSION = 1

# What GPT-2 fixes; each other value of these keys has no place in GPT2LMHeadModel.
_GPT2 = {"position": "learned", "norm": "layernorm", "norm_placement": "pre"}
# gptcli's activations -> transformers' names; gelu_new is GPT-2's own tanh approximation.
_HF_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def hf_problem(mc: ModelConfig) -> str | None:
    """Why GPT-2's architecture cannot express mc (a message naming the key), or None."""
    for key, value in _GPT2.items():
        if getattr(mc, key) != value:
            return f"model.{key} is {getattr(mc, key)!r}, but GPT-2 has {value!r} only"
    if mc.activation not in _HF_ACTIVATIONS:
        return (
            f"model.activation is {mc.activation!r}, which GPT-2 cannot run "
            f"(it can: {', '.join(_HF_ACTIVATIONS)})"
        )
    if not mc.bias:
        return "model.bias is false, but GPT-2 has biases in every layer and norm"
    return None


@dataclass
class ExportResult:
    out_dir: Path
    format: str
    source: Path
    step: int
    tokenizer: str
    vocab_size: int
    n_params: int
    files: list[str]


def export(
    path: str | Path,
    out_dir: str | Path,
    *,
    which: str = "best",
    fmt: str = "hf",
    force: bool = False,
) -> ExportResult:
    """Write the checkpoint at path (a run directory, a checkpoint or an export) into out_dir as
    fmt, atomically: out_dir holds the whole export or what it held before."""
    if fmt not in FORMATS:
        raise GptcliError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    out_dir = Path(out_dir)
    src = checkpoint.load(path, which)
    tokenizer = tokenizer_from_spec(src.tokenizer_spec)
    mc = src.config.model
    if fmt == "hf":
        problem = hf_problem(mc) or hf_tokenizer.hf_problem(tokenizer)
        if problem:
            raise GptcliError(
                f"cannot export as hf: {problem}; --format safetensors takes any variant"
            )
    _check_out(out_dir, src.dir, force)
    state = _checked_state(src)
    if fmt == "hf":
        table = hf.hf_tensor_names(state, mc.tie_embeddings)
    else:  # gptcli's names; a tied lm_head is stored once, as wte
        table = {name: (name, False) for name in state}
        if mc.tie_embeddings:
            table["lm_head.weight"] = ("wte.weight", False)
    with atomic.new_dir(out_dir) as tmp:
        _save_safetensors(tmp / checkpoint.EXPORT_WEIGHTS, state, table)
        if fmt == "hf":
            _write_hf(tmp, src, tokenizer)
        atomic.write_json(
            tmp / checkpoint.EXPORT_FILE,
            {
                "gptcli_export": _VERSION,
                "format": fmt,
                "step": src.step,
                formats.FORMAT_KEY: formats.FORMAT,
                "vocab_size": src.vocab_size,
                "tokenizer": src.tokenizer_spec,
                "config": src.config.to_dict(),
                "tensors": {k: {"stored": v[0], "transposed": v[1]} for k, v in table.items()},
            },
        )
        files = sorted(p.name for p in tmp.iterdir())
    n_params = count_params_formula(mc, src.vocab_size)
    return ExportResult(
        out_dir, fmt, src.dir, src.step, tokenizer.name, src.vocab_size, n_params, files
    )


def _check_out(out_dir: Path, source_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise GptcliError(f"--out {out_dir} exists and is not a directory")
    out, src = out_dir.resolve(), source_dir.resolve()
    if out == src or out in src.parents:
        raise GptcliError(f"--out {out_dir} holds the checkpoint being exported; pick another")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise GptcliError(f"--out {out_dir} is not empty; pass --force to replace it")
        # --force replaces an earlier export, never an arbitrary directory (a typo of --out must
        # not delete a home directory).
        if not (out_dir / checkpoint.EXPORT_FILE).is_file():
            raise GptcliError(
                f"--out {out_dir} is not empty and holds no earlier export "
                f"({checkpoint.EXPORT_FILE}); --force replaces only an export: pick an empty or "
                "new directory"
            )


def _checked_state(src: checkpoint.Checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, refused unless they are exactly what its config builds."""
    state = src.model_state()
    with torch.device("meta"):
        wanted = GPT(src.config.model, src.vocab_size).state_dict()
    for name, target in wanted.items():
        if name not in state or tuple(state[name].shape) != tuple(target.shape):
            got = tuple(state[name].shape) if name in state else "nothing"
            raise GptcliError(
                f"checkpoint {src.dir} does not fit its own config: {name!r} is {got}, "
                f"the config implies {tuple(target.shape)}"
            )
    if extra := sorted(set(state) - set(wanted)):
        raise GptcliError(f"checkpoint {src.dir} holds unexpected tensor {extra[0]!r}")
    return state


def _write_hf(tmp: Path, src: checkpoint.Checkpoint, tokenizer: Tokenizer) -> None:
    mc = src.config.model
    atomic.write_json(tmp / hf.CONFIG_FILE, hf_config(mc, src.vocab_size, tokenizer))
    atomic.write_json(tmp / "generation_config.json", generation_config(src.config, tokenizer))
    for name, content in hf_tokenizer.tokenizer_files(tokenizer, mc.block_size).items():
        if isinstance(content, str):
            atomic.write_bytes(tmp / name, content.encode("utf-8"))
        else:
            atomic.write_json(tmp / name, content)


def _special_ids(tokenizer: Tokenizer) -> tuple[int, int | None]:
    """(what generation starts from, what ends a document or None) for transformers."""
    return tokenizer.start_ids()[0], tokenizer.separator_id


def hf_config(mc: ModelConfig, vocab_size: int, tokenizer: Tokenizer) -> dict[str, Any]:
    """transformers' GPT2Config for mc, every option that changes the computation spelled out."""
    bos, eos = _special_ids(tokenizer)
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": vocab_size,
        "n_positions": mc.block_size,
        "n_embd": mc.n_embd,
        "n_layer": mc.n_layer,
        "n_head": mc.n_head,
        "n_inner": hidden_size(mc),
        "activation_function": _HF_ACTIVATIONS[mc.activation],
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": mc.dropout,
        "embd_pdrop": mc.dropout,
        "attn_pdrop": mc.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "tie_word_embeddings": mc.tie_embeddings,
        "use_cache": True,
        # Explicit nulls: GPT2Config would otherwise assume GPT-2's 50256.
        "bos_token_id": bos,
        "eos_token_id": eos,
    }


def generation_config(cfg: Config, tokenizer: Tokenizer) -> dict[str, Any]:
    """gptcli's sampling defaults as transformers' generation_config.json."""
    bos, eos = _special_ids(tokenizer)
    sc = cfg.sample
    gen: dict[str, Any] = {"bos_token_id": bos, "eos_token_id": eos}
    if sc.temperature > 0:
        # top_k 0 turns transformers' own default of 50 off, as top_k null does in gptcli.
        gen.update(do_sample=True, temperature=sc.temperature, top_k=sc.top_k or 0, top_p=sc.top_p)
    else:
        gen["do_sample"] = False
    return gen


def _save_safetensors(
    path: Path, state: dict[str, torch.Tensor], table: dict[str, tuple[str, bool]]
) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name, (key, transposed) in table.items():
        if key not in tensors:  # a tied lm_head: wte's tensor, already there
            tensor = state[name].t() if transposed else state[name]
            tensors[key] = tensor.detach().contiguous()
    # transformers refuses a safetensors file whose metadata does not name its framework.
    save_file(tensors, path, metadata={"format": "pt"})
