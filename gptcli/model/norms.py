"""Normalization layers, each registered by name."""

import torch
import torch.nn as nn

from gptcli.registry import Registry

NORMS: Registry[type[nn.Module]] = Registry("norm")


@NORMS.register("layernorm")
class LayerNorm(nn.Module):
    """LayerNorm written out: each position is normalised over its own features.

    Statistics are taken in fp32 so the result does not depend on the autocast dtype.
    """

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        mean = xf.mean(dim=-1, keepdim=True)
        var = (xf - mean).pow(2).mean(dim=-1, keepdim=True)  # biased, as torch's layer_norm
        y = (xf - mean) * torch.rsqrt(var + self.eps) * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)
