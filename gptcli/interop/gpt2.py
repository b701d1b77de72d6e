"""GPT-2 (GPT2LMHeadModel): learned positions, pre-LayerNorm, the standard MLP, full multi-head
attention. A model without biases is GPT-2 with zero biases, exactly."""

from __future__ import annotations

import re
from typing import Any

import torch

from gptcli.config import ModelConfig, config_from_dict
from gptcli.data.tokenizers import Tokenizer
from gptcli.errors import GptcliError
from gptcli.interop.families import (
    FAMILIES,
    Family,
    Place,
    first_difference,
    require,
    require_int,
)
from gptcli.model.mlp import ACTIVATIONS as ACTIVATION_CLASSES
from gptcli.model.mlp import hidden_size

# gptcli's activations -> transformers' names (each activation's exports_as).
ACTIVATIONS = {name: ACTIVATION_CLASSES[name].exports_as for name in ACTIVATION_CLASSES.names()
               if ACTIVATION_CLASSES[name].exports_as}  # fmt: skip
# ... and back, with transformers' other name for the tanh approximation.
FROM_HF = {**{v: k for k, v in ACTIVATIONS.items()}, "gelu_pytorch_tanh": "gelu_tanh"}

# What GPT-2 fixes: (key, the only value it has).
_FIXED = (
    ("position", "learned"),
    ("norm", "layernorm"),
    ("norm_placement", "pre"),
    ("mlp", "standard"),
    ("qk_norm", "none"),
)
# HF's Conv1D stores these as (in, out); nn.Linear wants (out, in).
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers that older transformers versions saved with the weights.
_MASK_BUFFER = re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$")
# The biases a model with bias: false lacks, per block and at the end.
_BLOCK_BIASES = ("ln_1.bias", "attn.c_attn.bias", "attn.c_proj.bias", "ln_2.bias",
                 "mlp.c_fc.bias", "mlp.c_proj.bias")  # fmt: skip


@FAMILIES.register("gpt2")
class GPT2(Family):
    name = "gpt2"
    model_types = ("gpt2",)
    architecture = "GPT2LMHeadModel"

    @classmethod
    def problem(cls, mc: ModelConfig) -> tuple[str, str] | None:
        if problem := first_difference(mc, _FIXED):
            return problem
        if mc.kv_heads != mc.n_head:
            return "model.n_kv_head", f"model.n_head ({mc.n_head}): GPT-2 has no grouped heads"
        if mc.activation not in ACTIVATIONS:
            return "model.activation", f"one of {', '.join(ACTIVATIONS)}"
        return None

    @classmethod
    def hf_config(cls, mc: ModelConfig, vocab_size: int, tokenizer: Tokenizer) -> dict[str, Any]:
        bos, eos = tokenizer.start_ids()[0], tokenizer.separator_id
        return {
            "architectures": [cls.architecture],
            "model_type": "gpt2",
            "vocab_size": vocab_size,
            "n_positions": mc.block_size,
            "n_embd": mc.n_embd,
            "n_layer": mc.n_layer,
            "n_head": mc.n_head,
            "n_inner": hidden_size(mc),
            "activation_function": ACTIVATIONS[mc.activation],
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

    @classmethod
    def table(cls, mc: ModelConfig, names: list[str]) -> dict[str, Place]:
        table = {}
        for name in names:
            if name == "lm_head.weight":
                # Tied: wte itself, which is how transformers ties it on load.
                stored = "transformer.wte.weight" if mc.tie_embeddings else name
                table[name] = Place((stored,))
            else:
                table[name] = Place(("transformer." + _hf_name(name),), name.endswith(_CONV1D))
        return table

    @classmethod
    def extra_tensors(cls, mc: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        if mc.bias:
            return {}
        zeros = {}
        for i in range(mc.n_layer):
            for name in _BLOCK_BIASES:
                weight = state[f"blocks.{i}.{name.removesuffix('.bias')}.weight"]
                # Conv1D and LayerNorm biases have the layer's output width.
                width = weight.shape[0]
                zeros[f"transformer.h.{i}.{name}"] = torch.zeros(width, dtype=weight.dtype)
        zeros["transformer.ln_f.bias"] = torch.zeros(mc.n_embd, dtype=state["wte.weight"].dtype)
        return zeros

    @classmethod
    def ignored(cls, name: str) -> bool:
        return bool(_MASK_BUFFER.match(name))

    @classmethod
    def model_config(cls, hf: dict[str, Any], where: str) -> tuple[ModelConfig, int]:
        require_int(hf, ("n_layer", "n_head", "n_embd", "n_positions", "vocab_size"), where)
        require(hf, "layer_norm_epsilon", 1e-5, 1e-5, where)
        act = require(hf, "activation_function", "gelu_new", tuple(FROM_HF), where)
        require(hf, "scale_attn_weights", True, True, where)
        require(hf, "scale_attn_by_inverse_layer_idx", False, False, where)
        require(hf, "add_cross_attention", False, False, where)
        n_embd = hf["n_embd"]
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
            "mlp_hidden": hf.get("n_inner") or 4 * n_embd,
            "activation": FROM_HF[act],
        }
        try:
            mc = config_from_dict({"model": model}, source=where).model
        except GptcliError as exc:
            raise GptcliError(f"{where} gives an invalid model: {exc}") from None
        return mc, hf["vocab_size"]


def _hf_name(name: str) -> str:
    if name.startswith("blocks."):
        return "h." + name.removeprefix("blocks.")
    if name == "positions.wpe.weight":
        return "wpe.weight"
    return name
