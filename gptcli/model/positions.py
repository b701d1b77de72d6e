"""Position schemes, registered by name.

A scheme acts at one of three places, and the base class does nothing at all of them:
- embed: added to the token embeddings (sincos, learned);
- rotate: applied to q and k inside attention (rope);
- attn_bias: added to the attention scores (relative, alibi).
`none` is the base class itself: causal masking is then the only source of order.

Positions are python ints (`start`, the absolute position of the first token), never tensors, so
no scheme needs a device sync to know how far a sequence reaches.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gptcli.config import ModelConfig
from gptcli.registry import PART, Registry

POSITIONS: Registry[type[PositionScheme]] = Registry("position scheme", PART)


def causal_mask(t_q: int, t_k: int, device: torch.device) -> torch.Tensor:
    """(t_q, t_k) additive mask: 0 where query may see key, -inf above the causal diagonal.

    Queries are the last t_q of the t_k positions (a prompt, or new tokens after a KV cache).
    """
    q = torch.arange(t_k - t_q, t_k, device=device)[:, None]
    k = torch.arange(t_k, device=device)[None, :]
    return torch.zeros(t_q, t_k, device=device).masked_fill(k > q, float("-inf"))


def _make_room(cache: dict, size: int = 8) -> None:
    # Cached decoding asks for a new key length every token: keep only a few recent shapes.
    if len(cache) >= size:
        cache.pop(next(iter(cache)))


def query_key_distance(t_q: int, t_k: int, device: torch.device) -> torch.Tensor:
    """(t_q, t_k) distance query - key, >= 0 wherever the causal mask allows attention."""
    q = torch.arange(t_k - t_q, t_k, device=device)[:, None]
    k = torch.arange(t_k, device=device)[None, :]
    return q - k


@POSITIONS.register("none")
class PositionScheme(nn.Module):
    # The longest sequence the scheme can encode; None means any length.
    max_len: int | None = None
    # Whether attn_bias adds to the scores (beyond the causal mask).
    biases_scores = False
    config_keys: tuple[str, ...] = ()
    exports_as: str | None = None  # transformers names it by the architecture

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    @classmethod
    def check(cls, cfg: ModelConfig) -> str | None:
        """Why cfg cannot use this scheme (a message naming the key), or None."""
        return None

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return 0

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x: (B, T, C) token embeddings of positions start .. start+T-1."""
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: int):
        """q, k: (B, H, T, D) of positions start .. start+T-1; returns them position-encoded."""
        return q, k

    def attn_bias(
        self, t_q: int, t_k: int, device: torch.device, keep: bool = True
    ) -> torch.Tensor | None:
        """An additive (H, t_q, t_k) bias with the causal mask folded in, or None when plain
        causal attention is enough (the fast is_causal path). keep=False: built for one use (a
        block of a long evaluation), so not worth the memory of keeping."""
        return None


@POSITIONS.register("learned")
class LearnedPositions(PositionScheme):
    """GPT-2's wpe (and ViT's): one trainable vector per absolute position."""

    config_keys = ("block_size",)

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.max_len = cfg.block_size
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return cfg.block_size * cfg.n_embd

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        pos = torch.arange(start, start + x.shape[1], device=x.device)
        return x + self.wpe(pos)


def sincos_table(n_pos: int, dim: int) -> torch.Tensor:
    """The original Transformer's table: sin on even channels, cos on odd, frequency
    10000^(-2i/dim) for channel pair i."""
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angle = pos * freq[None, :]
    table = torch.zeros(n_pos, dim)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table


# sin and cos have an rms of 1/sqrt(2) per channel, while GPT-2's token embeddings start at std
# 0.02: added at full size the table is ~35x the token signal and swamps it early in training.
# Scaled, each channel's rms equals that init std (where a learned wpe starts). The position
# study (configs/sweeps/positions.yaml, full-split val loss, 2 seeds): 2.58 unscaled, 2.10 scaled
# so (learned: 2.11).
SINCOS_SCALE = 0.02 * math.sqrt(2)


@POSITIONS.register("sincos")
class SinCosPositions(PositionScheme):
    """Constant absolute positions, SINCOS_SCALE x the sin/cos table; no parameters. The table
    covers block_size and grows on demand, since the formula defines every position."""

    config_keys = ("block_size",)

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.register_buffer("table", sincos_table(cfg.block_size, cfg.n_embd), persistent=False)

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        end = start + x.shape[1]
        if end > len(self.table):
            self.table = sincos_table(max(end, 2 * len(self.table)), x.shape[2]).to(x.device)
        return x + (SINCOS_SCALE * self.table[start:end]).to(x.dtype)


@POSITIONS.register("rope")
class RotaryPositions(PositionScheme):
    """RoPE: rotate each (x_i, x_{i+D/2}) channel pair of q and k by angle pos * base^(-2i/D).

    The dot product of a rotated query and key then depends only on their distance. The
    half-split pairing (as GPT-NeoX and LLaMA) keeps the halves contiguous.
    """

    config_keys = ("rope_base", "block_size")

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        head_dim = cfg.n_embd // cfg.n_head
        inv_freq = cfg.rope_base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._build(cfg.block_size)

    @classmethod
    def check(cls, cfg: ModelConfig) -> str | None:
        head_dim = cfg.n_embd // cfg.n_head
        if head_dim % 2:
            return f"model.n_embd / model.n_head = {head_dim}: rope needs an even head size"
        return None

    def _build(self, n_pos: int) -> None:
        angle = torch.arange(n_pos, dtype=torch.float32, device=self.inv_freq.device)[:, None]
        angle = angle * self.inv_freq[None, :]
        cos, sin = torch.cos(angle), torch.sin(angle)
        # Over the whole head, so that a rotation is two products and a sum: x * cos +
        # swap(x) * sin, where swap(x) = (x2, x1). The same numbers as the pairwise form
        # (x1 cos - x2 sin, x2 cos + x1 sin): negating is exact and a sum's order is not.
        self.register_buffer("cos", torch.cat([cos, cos], dim=-1), persistent=False)
        self.register_buffer("sin", torch.cat([-sin, sin], dim=-1), persistent=False)

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: int):
        end = start + q.shape[-2]
        if end > len(self.cos):
            self._build(max(end, 2 * len(self.cos)))
        cos = self.cos[start:end].to(q.dtype)
        sin = self.sin[start:end].to(q.dtype)
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([x2, x1], dim=-1) * sin


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's geometric head slopes 2^(-8/n), 2^(-16/n), ... For a head count that is not a
    power of two: the slopes of the nearest lower power of two, then every other slope of the
    next power of two (the ALiBi paper's rule)."""

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    lower = 2 ** int(math.floor(math.log2(n_head)))
    slopes = power_of_two(lower)
    if lower < n_head:
        slopes += power_of_two(2 * lower)[0::2][: n_head - lower]
    return torch.tensor(slopes)


@POSITIONS.register("alibi")
class ALiBiPositions(PositionScheme):
    """Fixed linear distance penalties: head h adds -slope_h * (query - key) to its scores."""

    biases_scores = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.register_buffer("slopes", alibi_slopes(cfg.n_head), persistent=False)
        self._cache: dict[tuple, torch.Tensor] = {}

    def attn_bias(self, t_q: int, t_k: int, device: torch.device, keep: bool = True):
        # Constant, so built once per shape and reused by every layer and every step.
        key = (t_q, t_k, device)
        if key in self._cache:
            return self._cache[key]
        dist = query_key_distance(t_q, t_k, device).clamp(min=0).float()
        bias = -self.slopes.to(device)[:, None, None] * dist + causal_mask(t_q, t_k, device)
        if keep:
            _make_room(self._cache)
            self._cache[key] = bias
        return bias


@POSITIONS.register("relative")
class RelativePositionBias(PositionScheme):
    """A learned per-head bias indexed by the bucketed query-key distance (T5's scheme; the 1-D
    analogue of Swin's relative position bias). Causal, so only distances >= 0 have buckets:
    half the buckets hold exact distances 0, 1, 2, ..., the rest are log-spaced up to
    relative_max_distance, beyond which all distances share the last bucket. One table is
    shared by all layers, as in T5."""

    config_keys = ("relative_buckets", "relative_max_distance")

    biases_scores = True

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.n_buckets = cfg.relative_buckets
        self.max_distance = cfg.relative_max_distance
        self.bias = nn.Embedding(cfg.relative_buckets, cfg.n_head)
        self._buckets: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def check(cls, cfg: ModelConfig) -> str | None:
        if cfg.relative_max_distance <= cfg.relative_buckets // 2:
            return (
                f"model.relative_max_distance={cfg.relative_max_distance} must exceed half of "
                f"model.relative_buckets={cfg.relative_buckets} (the exactly-bucketed distances)"
            )
        return None

    @classmethod
    def num_params(cls, cfg: ModelConfig) -> int:
        return cfg.relative_buckets * cfg.n_head

    def bucket(self, dist: torch.Tensor) -> torch.Tensor:
        exact = self.n_buckets // 2
        dist = dist.clamp(min=0)
        # max(dist, 1) keeps log() finite; those entries take the exact branch anyway.
        log_ratio = torch.log(dist.clamp(min=1).float() / exact) / math.log(
            self.max_distance / exact
        )
        far = exact + (log_ratio * (self.n_buckets - exact)).long()
        return torch.where(dist < exact, dist, far.clamp(max=self.n_buckets - 1))

    def attn_bias(self, t_q: int, t_k: int, device: torch.device, keep: bool = True):
        key = (t_q, t_k, device)
        if key in self._buckets:
            buckets, mask = self._buckets[key]
        else:
            dist = query_key_distance(t_q, t_k, device)
            buckets, mask = self.bucket(dist), causal_mask(t_q, t_k, device)
            if keep:
                _make_room(self._buckets)
                self._buckets[key] = (buckets, mask)
        # The lookup depends on trainable weights, so it is redone once per forward (not per
        # layer); the bucket indices and the mask are cached.
        return self.bias(buckets).permute(2, 0, 1) + mask
