"""Masked multi-head self-attention on torch's scaled_dot_product_attention: key/value heads
(GQA/MQA), QK-norm, the score bias of a forward pass, and the KV cache."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from gptcli.config import ModelConfig
from gptcli.model import mup
from gptcli.model.norms import RMSNorm
from gptcli.model.positions import PositionScheme, causal_mask
from gptcli.registry import PART, Registry


class LayerKV:
    """One layer's cached keys and values, preallocated for `capacity` positions on the first
    append, in the dtype attention computes in (attention_dtype): bf16 on a GPU under bf16
    autocast, half the bytes that every new token reads back; fp32 on a CPU, where attention
    runs in fp32 and a bf16 cache would be cast whole at every token (18 MB written and read
    back per token at 1000 positions of the sampling benchmark's model)."""

    def __init__(self, shape: tuple[int, int, int, int], device):
        self.shape, self.device = shape, device  # (B, H, capacity, D)
        self.k = self.v = None
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, H, T, D) keys and values; return all keys and values so far."""
        end = self.length + k.shape[2]
        if end > self.shape[2]:
            raise ValueError(f"KV cache full: {end} positions > capacity {self.shape[2]}")
        if self.k is None:
            dtype = attention_dtype(k)
            self.k = torch.empty(self.shape, device=self.device, dtype=dtype)
            self.v = torch.empty(self.shape, device=self.device, dtype=dtype)
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


def attention_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype attention computes in for queries, keys and values like x. torch's CPU
    attention kernels are about 3x slower in bf16 than in fp32 at training sizes
    (benchmarks/bench_attention.py), which cost a bf16 step more than its matmuls save, and
    slower again for one query over a long cache: on CPU, fp32."""
    return torch.float32 if x.device.type == "cpu" else x.dtype


def _sdpa(q, k, v, bias: torch.Tensor | None, dropout: float) -> torch.Tensor:
    dtype = attention_dtype(q)
    if q.dtype == k.dtype == dtype:
        return _attend(q, k, v, bias, dropout)
    # Out of autocast, which would cast back to bf16; the caller gets q's dtype back.
    with torch.autocast(q.device.type, enabled=False):
        return _attend(q.to(dtype), k.to(dtype), v.to(dtype), bias, dropout).to(q.dtype)


def _attend(q, k, v, bias: torch.Tensor | None, dropout: float) -> torch.Tensor:
    # Fewer key/value heads than query heads: each serves n_head / n_kv_head query heads in a
    # row (head h reads key/value head h // group), torch's enable_gqa as Llama's repeat_kv.
    gqa = k.shape[1] != q.shape[1]
    if bias is None:
        causal = q.shape[2] > 1
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=causal, enable_gqa=gqa
        )
    if bias.requires_grad and q.device.type == "cpu":
        return _written_out(q, k, v, bias, dropout)
    if bias.dim() == 3:
        # (1, H, T, T) rather than (H, T, T): torch's CPU flash kernel takes only masks of two
        # or four dimensions and leaves the others to its slower math path.
        bias = bias[None]
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout, enable_gqa=gqa
    )


def _written_out(q, k, v, bias: torch.Tensor, dropout: float) -> torch.Tensor:
    """Attention with a learned bias (relative positions), which needs the bias's gradient: no
    fused CPU kernel gives it, and torch's own math path, which does, also checks every row for
    being fully masked (none is: each query sees itself). Written out, a relative-position step
    went from 1.11x to 0.96x a learned-position one (benchmarks/bench_variants.py --precision
    bf16 --threads 1)."""
    if k.shape[1] != q.shape[1]:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5 + bias.to(q.dtype)
    return F.dropout(scores.softmax(dim=-1), dropout) @ v


QK_NORMS: Registry[type[nn.Module]] = Registry("qk norm", PART)


@QK_NORMS.register("none")
class NoQKNorm(nn.Identity):
    exports_as: str | None = None

    def __init__(self, head_dim: int):
        super().__init__()

    config_keys = ()

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return 0


@QK_NORMS.register("rmsnorm")
class QKRMSNorm(RMSNorm):
    """RMSNorm over each head's channels of q or k, one weight shared by the heads (Qwen3):
    bounds the scores' size whatever the projections grow to."""

    def __init__(self, head_dim: int):
        super().__init__(head_dim, bias=False)

    config_keys = ()

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return cfg.n_embd // cfg.n_head  # one weight per head channel, shared by the heads


class CausalSelfAttention(nn.Module):
    """n_head query heads over n_kv_head key/value heads: each group of n_head / n_kv_head
    query heads shares one key/value head (grouped-query attention; 1 is multi-query), and the
    KV cache holds only the key/value heads. c_attn computes [q; k; v] in one matmul."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.n_kv_head = cfg.kv_heads
        self.head_dim = cfg.n_embd // cfg.n_head
        kv = self.n_kv_head * self.head_dim
        self.split = (cfg.n_embd, kv, kv)
        self.c_attn = nn.Linear(cfg.n_embd, sum(self.split), bias=cfg.bias)
        self.q_norm = QK_NORMS[cfg.qk_norm](self.head_dim)
        self.k_norm = QK_NORMS[cfg.qk_norm](self.head_dim)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.q_scale = mup.query_scale(cfg)  # µP's 1/d scores: 1 otherwise
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        C, b = cfg.n_embd, int(cfg.bias)
        head_dim = C // cfg.n_head
        qkv = C + 2 * cfg.kv_heads * head_dim
        norms = 2 * QK_NORMS[cfg.qk_norm].num_params(cfg)
        return C * qkv + qkv * b + C * C + C * b + norms

    def qkv(self, x: torch.Tensor, positions: PositionScheme, start: int):
        """x: (B, T, C) -> q (B, H, T, D) and k, v (B, H_kv, T, D), q and k normed per head
        and position-encoded (rotated at their absolute positions, so cached keys never
        change)."""
        return self.heads(self.c_attn(x), positions, start)

    def heads(self, qkv: torch.Tensor, positions: PositionScheme, start: int):
        """c_attn's output (B, T, C + 2 * H_kv * D) -> q, k, v as qkv() returns them."""
        B, T, _ = qkv.shape
        q, k, v = qkv.split_with_sizes(self.split, dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = positions.rotate(self.q_norm(q), self.k_norm(k), start)
        return (q * self.q_scale if self.q_scale != 1.0 else q), k, v

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
        q, k, v = self.qkv(x, positions, start)
        if kv is not None:
            k, v = kv.append(k, v)
        y = self.c_proj(merge_heads(bias.attend(q, k, v, self.dropout if self.training else 0.0)))
        return self.resid_dropout(y) if self.training else y


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, H * D)."""
    B, H, T, D = y.shape
    return y.transpose(1, 2).contiguous().view(B, T, H * D)
