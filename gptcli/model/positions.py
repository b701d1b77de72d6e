"""Position schemes, registered by name.

A scheme acts at one of three places, and the base class does nothing at all of them:
- embed: added to the token embeddings (sincos, learned);
- rotate: applied to q and k inside attention (rope);
- score_bias: added to the attention scores (relative, alibi).
`none` is the base class itself: causal masking is then the only source of order.
"""

import torch
import torch.nn as nn

from gptcli.config import ModelConfig
from gptcli.registry import Registry

POSITIONS: Registry[type["PositionScheme"]] = Registry("position scheme")


@POSITIONS.register("none")
class PositionScheme(nn.Module):
    # The longest sequence the scheme can encode; None means any length.
    max_len: int | None = None

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) token embeddings; pos: (T,) absolute positions."""
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor):
        """q, k: (B, H, T, D); returns them position-encoded."""
        return q, k

    def score_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor | None:
        """An additive (H, Tq, Tk) bias on attention scores, or None."""
        return None


@POSITIONS.register("learned")
class LearnedPositions(PositionScheme):
    """GPT-2's wpe (and ViT's): one trainable vector per absolute position."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.max_len = cfg.block_size
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if int(pos[-1]) >= self.max_len:
            raise ValueError(
                f"position {int(pos[-1])} is beyond block_size={self.max_len}: learned positions "
                f"have no embedding past the training length; crop the input to block_size tokens"
            )
        return x + self.wpe(pos)
