"""Masked multi-head self-attention on torch's scaled_dot_product_attention, and its KV cache."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcli.config import ModelConfig
from gptcli.model.positions import PositionScheme


class LayerKV:
    """One layer's cached keys and values, preallocated for `capacity` positions."""

    def __init__(self, shape: tuple[int, int, int, int], device, dtype):
        self.k = torch.empty(shape, device=device, dtype=dtype)  # (B, H, capacity, D)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, H, T, D) keys and values; return all keys and values so far."""
        end = self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache full: {end} positions > capacity {self.k.shape[2]}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


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
        kv: LayerKV | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C) at positions start..start+T-1, attending to everything before them that
        kv holds. attn_bias: an additive (H, T, T_keys) bias with the causal mask folded in,
        built once per forward by the model and shared by every layer; None means plain causal
        attention over as many keys as queries (the fast is_causal path)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # Keys are rotated at their absolute positions before caching, so they never change.
        q, k = positions.rotate(q, k, start)
        if kv is not None:
            k, v = kv.append(k, v)
        dropout = self.dropout if self.training else 0.0
        if attn_bias is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=T > 1)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_bias.to(q.dtype), dropout_p=dropout
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))
