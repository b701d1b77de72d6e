"""Which Hugging Face architecture: export takes the first family that expresses a model
exactly (GPT-2, then Llama, then Qwen3: the order they register in); import takes the one that
config.json's model_type names."""

from __future__ import annotations

from gptcli.config import ModelConfig
from gptcli.errors import GptcliError
from gptcli.interop import gpt2, llama  # noqa: F401  (they register, in this order)
from gptcli.interop.families import FAMILIES, Family


def family_for(mc: ModelConfig) -> type[Family]:
    """The first family that expresses mc exactly, or a one-line refusal naming each family's
    first objection: the key, its value and what the family needs instead."""
    objections = []
    for name in FAMILIES.names():
        family = FAMILIES[name]
        problem = family.problem(mc)
        if problem is None:
            return family
        key, needs = problem
        value = getattr(mc, key.removeprefix("model."))
        shown = str(value).lower() if isinstance(value, bool) else repr(value)
        objections.append(f"{family.architecture} needs {key} {needs} (it is {shown})")
    raise GptcliError(
        "cannot export as hf: no Hugging Face architecture computes this model exactly: "
        + "; ".join(objections)
        + "; change that key, or use --format safetensors (any variant, for gptcli)"
    )


def by_model_type(model_type: str, where: str) -> type[Family]:
    for name in FAMILIES.names():
        if model_type in FAMILIES[name].model_types:
            return FAMILIES[name]
    known = ", ".join(t for n in FAMILIES.names() for t in FAMILIES[n].model_types)
    raise GptcliError(f"{where}: model_type {model_type!r} cannot be read; gptcli reads {known}")
