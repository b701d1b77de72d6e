"""The position-wise feed-forward network: expand, activate, project back."""

import torch
import torch.nn as nn

from gptcli.config import ModelConfig
from gptcli.registry import Registry

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("relu")(nn.ReLU)


@ACTIVATIONS.register("gelu_tanh")
class GELUTanh(nn.GELU):
    """GPT-2's GELU: the tanh approximation."""

    def __init__(self):
        super().__init__(approximate="tanh")


def hidden_size(cfg: ModelConfig) -> int:
    return int(cfg.mlp_ratio * cfg.n_embd)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = hidden_size(cfg)
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.activation]()
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))
