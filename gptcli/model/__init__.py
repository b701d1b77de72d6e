"""tokens -> logits: the GPT model and its registered parts (positions, norms, placements,
QK-norms, MLPs and their activations).

The names of the variants live here, with their registries: config.py knows the keys and their
types, and this package checks the names it can build (check_config), so the config module never
imports the model.
"""

from gptcli.config import ModelConfig, config_error, suggest
from gptcli.errors import GptcliError
from gptcli.model.attention import QK_NORMS
from gptcli.model.gpt import GPT, PLACEMENTS, count_params_formula
from gptcli.model.mlp import ACTIVATIONS, MLPS, hidden_size
from gptcli.model.norms import NORMS
from gptcli.model.positions import POSITIONS
from gptcli.registry import Registry

__all__ = ["GPT", "REGISTRIES", "check_config", "choices", "count_params_formula"]

# Each model key a registry names the choices of, and the registry (entries answer Part).
REGISTRIES: dict[str, Registry] = {
    "position": POSITIONS,
    "norm": NORMS,
    "norm_placement": PLACEMENTS,
    "activation": ACTIVATIONS,
    "qk_norm": QK_NORMS,
    "mlp": MLPS,
}


def choices() -> dict[str, list[str]]:
    """The registered names each model key accepts."""
    return {f"model.{key}": registry.names() for key, registry in REGISTRIES.items()}


def check_config(mc: ModelConfig) -> None:
    """Refuse a model section this package cannot build, in one line naming the key."""
    for key, names in choices().items():
        value = getattr(mc, key.split(".", 1)[1])
        if value not in names:
            raise config_error(key, f"{value!r} is not a choice; {suggest(str(value), names)}")
    if problem := POSITIONS[mc.position].check(mc):
        raise GptcliError(f"config error: {problem}")
    if hidden_size(mc) < 1:
        raise config_error(
            "model.mlp_ratio",
            f"{mc.mlp_ratio} x n_embd {mc.n_embd} gives a {mc.mlp} MLP a hidden width of 0; "
            "raise model.mlp_ratio or set model.mlp_hidden",
        )
