"""The GPT model and its registered parts (positions, norms, MLP activations)."""

from gptcli.model.gpt import GPT, count_params_formula

__all__ = ["GPT", "count_params_formula"]
