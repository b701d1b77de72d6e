"""The position-wise feed-forward network, registered by name: the standard one (expand,
activate, project back) and the gated ones (down(act(gate x) * up x), as in Llama and PaLM)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcli.config import ModelConfig
from gptcli.registry import PART, Registry

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation", PART)
MLPS: Registry[type[nn.Module]] = Registry("mlp", PART)


class Activation:
    """An activation holds no parameters and reads no config keys."""

    config_keys: tuple[str, ...] = ()
    exports_as: str | None = None

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return 0


@ACTIVATIONS.register("gelu")
class GELU(Activation, nn.GELU):
    """Exact GELU (nanoGPT's nn.GELU)."""

    exports_as = "gelu"


@ACTIVATIONS.register("relu")
class ReLU(Activation, nn.ReLU):
    exports_as = "relu"


@ACTIVATIONS.register("silu")
class SiLU(Activation, nn.SiLU):
    exports_as = "silu"

# A gated MLP's hidden width is rounded to a multiple of this (Llama rounds to 256, too coarse
# for the small models gptcli trains; 8 keeps matrix shapes friendly to vector units).
GATED_MULTIPLE = 8


@ACTIVATIONS.register("gelu_tanh")
class GELUTanh(Activation, nn.GELU):
    """GPT-2's GELU: the tanh approximation."""

    exports_as = "gelu_new"  # transformers' name for GPT-2's own

    def __init__(self):
        super().__init__(approximate="tanh")


@ACTIVATIONS.register("relu2")
class ReLUSquared(Activation, nn.Module):
    """relu(x)^2 (Primer; So et al., 2021)."""

    exports_as = "relu2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def hidden_size(cfg: ModelConfig) -> int:
    """The MLP's hidden width: model.mlp_hidden when set; else mlp_ratio x n_embd for the
    standard MLP, and for a gated one 2/3 of that (three matrices instead of two, so the same
    parameter count), rounded to the nearest multiple of GATED_MULTIPLE. May be 0, which
    check_config refuses."""
    if cfg.mlp_hidden is not None:
        return cfg.mlp_hidden
    width = cfg.mlp_ratio * cfg.n_embd
    if not MLPS[cfg.mlp].gated:
        return int(width)
    return GATED_MULTIPLE * round(2 * width / 3 / GATED_MULTIPLE)


@MLPS.register("standard")
class MLP(nn.Module):
    """Expand to the hidden width, apply model.activation, project back."""

    gated = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = hidden_size(cfg)
        self.c_fc = nn.Linear(cfg.n_embd, hidden, bias=cfg.bias)
        self.act = ACTIVATIONS[cfg.activation]()
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    config_keys = ("activation", "mlp_ratio", "mlp_hidden", "bias")
    exports_as = None  # transformers names the activation (model.activation's exports_as)

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        dim, hidden, bias = cfg.n_embd, hidden_size(cfg), int(cfg.bias)
        return 2 * dim * hidden + (hidden + dim) * bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c_proj(self.act(self.c_fc(x)))
        return self.dropout(y) if self.training else y


class GatedMLP(nn.Module):
    """c_proj(act(gate) * up), where c_fc computes gate and up together (one matrix of twice
    the hidden width: one matmul instead of two). The gate's activation is the variant's own;
    model.activation is the standard MLP's."""

    gated = True
    activation = ""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = hidden_size(cfg)
        self.c_fc = nn.Linear(cfg.n_embd, 2 * hidden, bias=cfg.bias)  # [gate; up]
        self.act = ACTIVATIONS[self.activation]()
        self.c_proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    config_keys = ("mlp_ratio", "mlp_hidden", "bias")
    exports_as: str | None = None  # each gated MLP names its gate's activation

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        dim, hidden, bias = cfg.n_embd, hidden_size(cfg), int(cfg.bias)
        return 3 * dim * hidden + (2 * hidden + dim) * bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.c_fc(x).chunk(2, dim=-1)
        y = self.c_proj(self.act(gate) * up)
        return self.dropout(y) if self.training else y


@MLPS.register("swiglu")
class SwiGLU(GatedMLP):
    """The gate through SiLU (Shazeer, 2020; Llama, Qwen)."""

    activation = "silu"
    exports_as = "silu"  # transformers' gated MLP names its gate's activation (hidden_act)


@MLPS.register("geglu")
class GeGLU(GatedMLP):
    """The gate through GELU (Shazeer, 2020)."""

    activation = "gelu"
    exports_as = "gelu"
