"""Masked multi-head self-attention on torch's scaled_dot_product_attention, and its KV cache."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcli.config import ModelConfig
from gptcli.model.positions import PositionScheme, causal_mask


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


class ScoreBias:
    """What a forward pass adds to its attention scores: nothing beyond the causal mask (torch's
    fast is_causal path), or an additive bias with the causal mask folded in (position schemes
    that bias scores; new queries after cached keys).

    Built once per forward and shared by every layer; past `chunk` queries, the bias is built
    per block of queries inside each layer instead, so that no (heads x T x T) matrix exists at
    long contexts (eval's length extrapolation): memory then grows with T, not T squared."""

    def __init__(self, positions: PositionScheme, t_q: int, start: int, device, chunk=None):
        self.positions, self.t_q, self.t_k, self.device = positions, t_q, start + t_q, device
        biased = positions.biases_scores or (start and t_q > 1)
        self.chunk = chunk if biased and chunk and chunk < t_q else None
        self.whole = self.rows(0, t_q) if self.chunk is None else None

    def rows(self, a: int, b: int) -> torch.Tensor | None:
        """The bias of new queries a..b-1 over the keys up to the last of them; None for plain
        causal attention over as many keys as queries."""
        n, t_k = b - a, self.t_k - self.t_q + b
        bias = self.positions.attn_bias(n, t_k, self.device, keep=self.chunk is None)
        if bias is None and n > 1 and t_k > n:
            # New queries after cached keys: is_causal would align the mask to the wrong corner.
            bias = causal_mask(n, t_k, self.device)
        return bias

    def attend(self, q, k, v, dropout: float) -> torch.Tensor:
        """softmax(q k^T / sqrt(D) + bias) v for (B, H, T, D) queries and their keys/values."""
        if self.chunk is None:
            return _sdpa(q, k, v, self.whole, dropout)
        blocks = []
        for a in range(0, self.t_q, self.chunk):
            b = min(a + self.chunk, self.t_q)
            t_k = k.shape[2] - self.t_q + b
            keys, values = k[:, :, :t_k], v[:, :, :t_k]
            blocks.append(_sdpa(q[:, :, a:b], keys, values, self.rows(a, b), dropout))
        return torch.cat(blocks, dim=2)


def _sdpa(q, k, v, bias: torch.Tensor | None, dropout: float) -> torch.Tensor:
    if bias is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=q.shape[2] > 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout)


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
        bias: ScoreBias,
        kv: LayerKV | None = None,
    ) -> torch.Tensor:
        """x: (B, T, C) at positions start..start+T-1, attending to everything before them that
        kv holds, with the forward pass's score bias."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # Keys are rotated at their absolute positions before caching, so they never change.
        q, k = positions.rotate(q, k, start)
        if kv is not None:
            k, v = kv.append(k, v)
        y = bias.attend(q, k, v, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))
