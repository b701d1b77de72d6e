"""Masked multi-head self-attention on torch's scaled_dot_product_attention."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcli.config import ModelConfig
from gptcli.model.positions import PositionScheme


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        positions: PositionScheme,
        start: int,
        attn_bias: torch.Tensor | None,
    ) -> torch.Tensor:
        """x: (B, T, C) at positions start..start+T-1. attn_bias: None for plain causal
        attention, else an additive (H, T, T) bias with the causal mask folded in, built once
        per forward by the model and shared by every layer."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        q, k = positions.rotate(q, k, start)
        dropout = self.dropout if self.training else 0.0
        if attn_bias is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=dropout
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))
