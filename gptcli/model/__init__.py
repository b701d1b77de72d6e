"""tokens -> logits: the GPT model and its registered parts (positions, norms, placements,
MLP activations).

The names of the variants live here, with their registries: config.py knows the keys and their
types, and this package checks the names it can build (check_config), so the config module never
imports the model.
"""

from gptcli.config import ModelConfig, config_error, suggest
from gptcli.errors import GptcliError
from gptcli.model.gpt import GPT, PLACEMENTS, count_params_formula
from gptcli.model.mlp import ACTIVATIONS
from gptcli.model.norms import NORMS
from gptcli.model.positions import POSITIONS

__all__ = ["GPT", "check_config", "choices", "count_params_formula"]


def choices() -> dict[str, list[str]]:
    """The registered names each model key accepts."""
    return {
        "model.position": POSITIONS.names(),
        "model.norm": NORMS.names(),
        "model.norm_placement": PLACEMENTS.names(),
        "model.activation": ACTIVATIONS.names(),
    }


def check_config(mc: ModelConfig) -> None:
    """Refuse a model section this package cannot build, in one line naming the key."""
    for key, names in choices().items():
        value = getattr(mc, key.split(".", 1)[1])
        if value not in names:
            raise config_error(key, f"{value!r} is not a choice; {suggest(str(value), names)}")
    if problem := POSITIONS[mc.position].check(mc):
        raise GptcliError(f"config error: {problem}")
