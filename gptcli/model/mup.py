"""µP, the maximal-update parametrisation (Yang et al. 2022, "Tensor Programs V"), in the form
of the authors' `mup` library (MuReadout, MuAdam): with width multiplier m = n_embd /
model.mup_base_width,

- the blocks' matrices start at std 0.02 / sqrt(m) (variance 1 / fan_in relative to the base)
  and, under Adam, learn at lr / m; embeddings, biases, norm gains and tables keep lr;
- the logits are multiplied by 1 / m (the readout), the embedding's output is not;
- attention scores are q.k / d, not / sqrt(d) (the scale applied to q, so every attention path
  and the KV cache see it).

Under Muon the blocks' matrices keep lr: Muon's orthogonalised update, scaled by sqrt(max(1,
rows / columns)), already has the spectral size µP asks of a hidden layer's update (Yang,
Simon and Bernstein 2023, "A Spectral Condition for Feature Learning"). At m = 1 a µP model
differs from the standard one only in its attention scale.
"""

from __future__ import annotations

import math

from gptcli.config import ModelConfig


def enabled(cfg: ModelConfig) -> bool:
    return cfg.parametrization == "mup"


def width_mult(cfg: ModelConfig) -> float:
    return cfg.n_embd / cfg.mup_base_width if enabled(cfg) and cfg.mup_base_width else 1.0


def query_scale(cfg: ModelConfig) -> float:
    """What q is multiplied by before attention's own 1/sqrt(d): 1/sqrt(d) under µP."""
    return (cfg.n_embd // cfg.n_head) ** -0.5 if enabled(cfg) else 1.0


def output_mult(cfg: ModelConfig) -> float:
    return 1.0 / width_mult(cfg)


def hidden_std(cfg: ModelConfig) -> float:
    """The init std of the blocks' matrices (before GPT-2's residual-projection scaling)."""
    return 0.02 / math.sqrt(width_mult(cfg))


def lr_scale(cfg: ModelConfig, optimizer: str, hidden: bool) -> float:
    """A parameter's learning rate over train.lr (or train.muon_lr, for Muon's matrices)."""
    return 1.0 / width_mult(cfg) if hidden and optimizer == "adamw" else 1.0
