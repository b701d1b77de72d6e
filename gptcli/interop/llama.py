"""Llama (LlamaForCausalLM) and Qwen3 (Qwen3ForCausalLM): RoPE, pre-RMSNorm, a gated MLP, any
number of key/value heads; Qwen3 adds an RMSNorm per head on q and k.

gptcli's c_attn is Llama's q_proj, k_proj and v_proj stacked, and its gated c_fc is gate_proj
and up_proj stacked: the table splits and joins them."""

from __future__ import annotations

from typing import Any

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
from gptcli.model.mlp import MLPS, hidden_size

RMS_EPS = 1e-5  # gptcli's RMSNorm
# gptcli's gated MLPs -> the activation of transformers' gated MLP (each one's exports_as).
GATED = {name: MLPS[name].exports_as for name in MLPS.names() if MLPS[name].gated}
_FROM_HF = {v: k for k, v in GATED.items()}

_FIXED = (("position", "rope"), ("norm", "rmsnorm"), ("norm_placement", "pre"))

_NAMES = {
    "wte.weight": "model.embed_tokens.weight",
    "ln_f.weight": "model.norm.weight",
    "ln_1.weight": "input_layernorm.weight",
    "ln_2.weight": "post_attention_layernorm.weight",
    "attn.c_proj": "self_attn.o_proj",
    "attn.q_norm.weight": "self_attn.q_norm.weight",
    "attn.k_norm.weight": "self_attn.k_norm.weight",
    "mlp.c_proj": "mlp.down_proj",
}


@FAMILIES.register("llama")
class Llama(Family):
    name = "llama"
    model_types = ("llama",)
    architecture = "LlamaForCausalLM"
    qk_norm = "none"

    @classmethod
    def problem(cls, mc: ModelConfig) -> tuple[str, str] | None:
        if problem := first_difference(mc, _FIXED):
            return problem
        if mc.mlp not in GATED:
            return "model.mlp", " or ".join(repr(m) for m in GATED)
        if mc.qk_norm != cls.qk_norm:
            return "model.qk_norm", repr(cls.qk_norm)
        return None

    @classmethod
    def hf_config(cls, mc: ModelConfig, vocab_size: int, tokenizer: Tokenizer) -> dict[str, Any]:
        return {
            "architectures": [cls.architecture],
            "model_type": cls.model_types[0],
            "vocab_size": vocab_size,
            "hidden_size": mc.n_embd,
            "intermediate_size": hidden_size(mc),
            "num_hidden_layers": mc.n_layer,
            "num_attention_heads": mc.n_head,
            "num_key_value_heads": mc.kv_heads,
            "head_dim": mc.n_embd // mc.n_head,
            "hidden_act": GATED[mc.mlp],
            "max_position_embeddings": mc.block_size,
            "rms_norm_eps": RMS_EPS,
            # transformers 5 reads rope_parameters, 4.x rope_theta: both say the same.
            "rope_parameters": {"rope_type": "default", "rope_theta": mc.rope_base},
            "rope_theta": mc.rope_base,
            "attention_bias": mc.bias,
            "mlp_bias": mc.bias,
            "attention_dropout": mc.dropout,
            "tie_word_embeddings": mc.tie_embeddings,
            "initializer_range": 0.02,
            "use_cache": True,
            "bos_token_id": tokenizer.start_ids()[0],
            "eos_token_id": tokenizer.separator_id,
        }

    @classmethod
    def table(cls, mc: ModelConfig, names: list[str]) -> dict[str, Place]:
        C, head_dim = mc.n_embd, mc.n_embd // mc.n_head
        kv = mc.kv_heads * head_dim
        hidden = hidden_size(mc)
        table = {}
        for name in names:
            if name == "lm_head.weight":
                table[name] = Place(("model.embed_tokens.weight" if mc.tie_embeddings else name,))
                continue
            if name in _NAMES:
                table[name] = Place((_NAMES[name],))
                continue
            _, i, part = name.split(".", 2)  # blocks.I.part
            layer = f"model.layers.{i}."
            stem, _, kind = part.rpartition(".")  # e.g. attn.c_attn, weight
            if stem == "attn.c_attn":
                projections = ("q_proj", "k_proj", "v_proj")
                stored = tuple(f"{layer}self_attn.{p}.{kind}" for p in projections)
                table[name] = Place(stored, sizes=(C, kv, kv))
            elif stem == "mlp.c_fc":
                stored = tuple(f"{layer}mlp.{p}.{kind}" for p in ("gate_proj", "up_proj"))
                table[name] = Place(stored, sizes=(hidden, hidden))
            else:
                key = part if part in _NAMES else stem
                suffix = "" if part in _NAMES else f".{kind}"
                table[name] = Place((layer + _NAMES[key] + suffix,))
        return table

    @classmethod
    def ignored(cls, name: str) -> bool:
        return name.endswith("rotary_emb.inv_freq")  # saved by older transformers versions

    @classmethod
    def check_options(cls, hf: dict[str, Any], bias: bool, where: str) -> None:
        # gptcli's model.bias covers attention and MLP alike.
        require(hf, "mlp_bias", False, bias, where)

    @classmethod
    def model_config(cls, hf: dict[str, Any], where: str) -> tuple[ModelConfig, int]:
        keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "vocab_size", "max_position_embeddings")  # fmt: skip
        require_int(hf, keys, where)
        heads, width = hf["num_attention_heads"], hf["hidden_size"]
        require(hf, "head_dim", width // heads, width // heads, where)
        require(hf, "rms_norm_eps", 1e-6, RMS_EPS, where)
        act = require(hf, "hidden_act", "silu", tuple(_FROM_HF), where)
        require(hf, "pretraining_tp", 1, 1, where)
        bias = bool(hf.get("attention_bias", False))
        cls.check_options(hf, bias, where)
        rope = hf.get("rope_parameters") or {}
        require(rope, "rope_type", "default", "default", where + " rope_parameters")
        theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        if hf.get("rope_scaling"):
            raise GptcliError(f"{where}: rope_scaling is not supported (gptcli: plain RoPE)")
        model = {
            "n_layer": hf["num_hidden_layers"],
            "n_head": heads,
            "n_kv_head": hf.get("num_key_value_heads") or heads,
            "n_embd": width,
            "block_size": hf["max_position_embeddings"],
            "bias": bias,
            "position": "rope",
            "rope_base": float(theta),
            "norm": "rmsnorm",
            "norm_placement": "pre",
            "qk_norm": cls.qk_norm,
            "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
            "mlp": _FROM_HF[act],
            "mlp_hidden": hf["intermediate_size"],
        }
        try:
            mc = config_from_dict({"model": model}, source=where).model
        except GptcliError as exc:
            raise GptcliError(f"{where} gives an invalid model: {exc}") from None
        return mc, hf["vocab_size"]


@FAMILIES.register("qwen3")
class Qwen3(Llama):
    name = "qwen3"
    model_types = ("qwen3",)
    architecture = "Qwen3ForCausalLM"
    qk_norm = "rmsnorm"

    @classmethod
    def problem(cls, mc: ModelConfig) -> tuple[str, str] | None:
        if problem := super().problem(mc):
            return problem
        if mc.bias:
            return "model.bias", "false (Qwen3's MLP has no biases)"
        return None

    @classmethod
    def check_options(cls, hf: dict[str, Any], bias: bool, where: str) -> None:
        require(hf, "use_sliding_window", False, False, where)
        # Qwen3's MLP has no biases, and gptcli's model.bias covers attention and MLP alike.
        require(hf, "attention_bias", False, False, where)

    @classmethod
    def hf_config(cls, mc: ModelConfig, vocab_size: int, tokenizer: Tokenizer) -> dict[str, Any]:
        config = super().hf_config(mc, vocab_size, tokenizer)
        del config["mlp_bias"]
        return {**config, "use_sliding_window": False, "sliding_window": None}
