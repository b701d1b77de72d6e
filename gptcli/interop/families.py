"""Hugging Face architecture families, registered by name: which gptcli models each expresses
exactly, its config.json, and where each gptcli tensor lives in its weight files.

A family is a small class (gpt2.py, llama.py) plus one registry line; architectures.py picks
one. Both directions go through one table, gptcli tensor -> Place, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gptcli.checkpoint import stored_tensor
from gptcli.config import ModelConfig
from gptcli.data.tokenizers import Tokenizer
from gptcli.errors import GptcliError
from gptcli.registry import Registry

FAMILIES: Registry[type[Family]] = Registry("Hugging Face family")


@dataclass(frozen=True)
class Place:
    """Where one gptcli tensor is stored: under one name, or split along its first dimension
    into several (sizes say how: Llama's q/k/v projections are gptcli's one c_attn), and
    whether it is stored transposed (GPT-2's Conv1D)."""

    names: tuple[str, ...]
    transposed: bool = False
    sizes: tuple[int, ...] = ()

    def record(self) -> dict[str, Any]:
        """As gptcli.json's tensors table holds it."""
        stored = self.names[0] if len(self.names) == 1 else list(self.names)
        return {"stored": stored, "transposed": self.transposed}

    def split(self, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        tensor = tensor.t() if self.transposed else tensor
        if len(self.names) == 1:
            return {self.names[0]: tensor}
        return dict(zip(self.names, tensor.split(list(self.sizes), dim=0), strict=True))

    def join(self, stored: dict[str, torch.Tensor]) -> torch.Tensor:
        return stored_tensor(stored, self.names, self.transposed)


class Family:
    name = ""
    model_types: tuple[str, ...] = ()
    architecture = ""

    @classmethod
    def problem(cls, mc: ModelConfig) -> tuple[str, str] | None:
        """Why the family cannot express mc: (the key, what it has instead), or None."""
        raise NotImplementedError

    @classmethod
    def hf_config(cls, mc: ModelConfig, vocab_size: int, tokenizer: Tokenizer) -> dict[str, Any]:
        """transformers' config.json for mc, every option that changes the computation spelled
        out (bos/eos as null where the tokenizer has none)."""
        raise NotImplementedError

    @classmethod
    def table(cls, mc: ModelConfig, names: list[str]) -> dict[str, Place]:
        """gptcli tensor name -> its Place in the family's weight files."""
        raise NotImplementedError

    @classmethod
    def extra_tensors(cls, mc: ModelConfig, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Tensors the family's files must hold that the model does not have (GPT-2's biases
        for a model without them: zeros, exactly what the model computes)."""
        return {}

    @classmethod
    def ignored(cls, name: str) -> bool:
        """Whether a stored tensor the model has no place for may be left unread (buffers
        that older transformers versions saved)."""
        return False

    @classmethod
    def model_config(cls, hf: dict[str, Any], where: str) -> tuple[ModelConfig, int]:
        """config.json -> (the gptcli model it describes, its vocab size), or a refusal naming
        the option gptcli cannot compute."""
        raise NotImplementedError


def first_difference(mc: ModelConfig, fixed: tuple[tuple[str, Any], ...]) -> tuple[str, str] | None:
    """The first (key, value) a family fixes that mc does not have, as a problem."""
    for key, value in fixed:
        if getattr(mc, key) != value:
            return f"model.{key}", repr(value)
    return None


def require_int(hf: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if not isinstance(hf.get(key), int) or isinstance(hf.get(key), bool):
            raise GptcliError(f"{where} lacks an integer {key!r}")


def require(hf: dict[str, Any], key: str, default: Any, allowed: Any, where: str) -> Any:
    """hf[key] (or transformers' default), refused unless gptcli computes it that way."""
    value = hf.get(key, default)
    ok = value in allowed if isinstance(allowed, (tuple, list, set)) else value == allowed
    if not ok:
        raise GptcliError(f"{where}: {key}={value!r} is not supported (gptcli computes {allowed})")
    return value
