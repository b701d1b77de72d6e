"""Normalization layers, each registered by name and built as Norm(dim, bias)."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcli.config import ModelConfig
from gptcli.registry import PART, Registry

NORMS: Registry[type[nn.Module]] = Registry("norm", PART)


class CausalLeakWarning(UserWarning):
    """Training a model whose norm mixes positions: a causal model then sees the future."""


def causal_leak(norm: str) -> str | None:
    """What training with this norm lets a causal model see, or None when nothing leaks.
    Said where a model is built for training, not on every load: an eval-mode model uses
    running statistics and is causal."""
    if not NORMS[norm].mixes_positions:
        return None
    return (
        f"norm '{norm}' mixes statistics across positions: in training mode a causal model "
        "sees future tokens through them (eval mode uses running statistics; see gptcli "
        "inspect norm-leak)"
    )


class ReferenceLayerNorm(nn.Module):
    """LayerNorm written out: each position is normalised over its own features (mean, biased
    variance, eps inside the square root, then scale and shift).

    The documented reference: the model runs LayerNorm below, the fused kernel with the same
    parameters, and the tests hold the two equal (forward and gradients). Statistics are taken
    in fp32 so the result does not depend on the autocast dtype.
    """

    # True where the statistics mix positions (and so can leak the future in a causal model).
    mixes_positions = False
    exports_as: str | None = None  # transformers names a norm by the architecture

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    config_keys = ("bias",)

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return cfg.n_embd * (1 + int(cfg.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        mean = xf.mean(dim=-1, keepdim=True)
        var = (xf - mean).pow(2).mean(dim=-1, keepdim=True)  # biased, as torch's layer_norm
        y = (xf - mean) * torch.rsqrt(var + self.eps) * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


@NORMS.register("layernorm")
class LayerNorm(ReferenceLayerNorm):
    """ReferenceLayerNorm on torch's fused kernel: one pass instead of six elementwise ops, and
    the larger part of a small model's step time on CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), self.weight.shape, self.weight, self.bias, self.eps)
        return y.to(x.dtype)


class ReferenceRMSNorm(nn.Module):
    """RMSNorm written out: scale each position by its root mean square; no centring and no
    shift (so no bias, whatever model.bias says). The reference for RMSNorm below."""

    mixes_positions = False
    exports_as: str | None = None

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    config_keys = ()

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return cfg.n_embd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight
        return y.to(x.dtype)


@NORMS.register("rmsnorm")
class RMSNorm(ReferenceRMSNorm):
    """ReferenceRMSNorm on torch's fused kernel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.weight.shape, self.weight, self.eps).to(x.dtype)


@NORMS.register("batchnorm")
class BatchNorm(nn.Module):
    """Normalise each channel over the batch and time positions together.

    In training mode the statistics of a batch include every position of every sequence, so the
    output at position t depends on tokens after t: a causal model can see the future through
    them. Eval mode uses running statistics and is causal again.
    """

    mixes_positions = True
    exports_as: str | None = None

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    config_keys = ("bias",)

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return cfg.n_embd * (1 + int(cfg.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).float()
        y = F.batch_norm(
            flat,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )
        return y.view(x.shape).to(x.dtype)


@NORMS.register("none")
class NoNorm(nn.Module):
    mixes_positions = False
    exports_as: str | None = None

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()

    config_keys = ()

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
