"""How much memory a forward pass without gradients takes, and the batch and query block that
keep a long evaluation inside a budget; a request that cannot fit is refused before it starts.

The estimate counts what dominates at long contexts, in fp32 (autocast only makes it smaller):
- activations per window: the residual stream and its copies, q/k/v, the MLP's hidden layer
  and the logits with their log-softmax: B x T x (12 C + 4 hidden + 3 V) values, twice over;
- attention, where scores carry a bias (ALiBi, relative): per block of c queries, building
  the bias (H x c x T, shared by the batch, with its distance and mask temporaries) and the
  scores, biased and softmaxed (B x H x c x T each): (6 + 4 B) x H x c x T values.
  Without a bias torch's fused causal kernel never holds the scores, so that term is 0.
The factors are measured, not derived: blocks of growing length leave the allocator's freed
memory in pieces too small to reuse, so the peak runs well past the sum of the live tensors.
The tests hold the measured peak below the budget (tests/test_memory.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gptcli.config import ModelConfig
from gptcli.errors import GptcliError

GiB = 1 << 30
_FLOAT = 4
MIN_CHUNK = 16  # queries per attention block at the least
GOOD_CHUNK = 256  # blocks smaller than this are slow: a smaller batch comes first
MAX_CHUNK = 2048  # more buys no speed, only memory


@dataclass(frozen=True)
class Plan:
    batch: int  # windows per forward pass
    chunk: int | None  # queries per attention block; None: all at once
    bytes: int  # the estimated peak of one forward pass


def available_bytes() -> int:
    """Memory a new allocation can take without swapping (Linux: MemAvailable)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def default_budget(device=None) -> int:
    """Half of what is free now on device (a GPU's own memory, else the machine's): room for
    the model, the data and whatever else runs."""
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0] // 2
    return available_bytes() // 2


def forward_bytes(
    mc: ModelConfig, hidden: int, vocab: int, batch: int, t: int, chunk: int, biased: bool
) -> int:
    """The estimated peak of one forward pass of `batch` windows of t tokens."""
    activations = 2 * batch * t * (12 * mc.n_embd + 4 * hidden + 3 * vocab)
    attention = 0
    if biased:
        c = min(chunk, t)
        attention = mc.n_head * c * t * (6 + 4 * batch)
    return (activations + attention) * _FLOAT


def plan(
    mc: ModelConfig, hidden: int, vocab: int, t: int, max_batch: int, budget: int, biased: bool
) -> Plan:
    """The largest batch (up to max_batch) with query blocks of at least GOOD_CHUNK, then the
    largest block; failing that, smaller blocks one window at a time (slow, but it fits)."""
    for least in (GOOD_CHUNK, MIN_CHUNK):
        for batch in _halvings(max_batch if least == GOOD_CHUNK else 1):
            chunk = min(least, t)
            if forward_bytes(mc, hidden, vocab, batch, t, chunk, biased) > budget:
                continue
            while chunk < min(t, MAX_CHUNK) and forward_bytes(
                mc, hidden, vocab, batch, t, chunk * 2, biased
            ) <= budget:
                chunk *= 2
            whole = chunk >= t or not biased
            size = forward_bytes(mc, hidden, vocab, batch, t, chunk, biased)
            return Plan(batch, None if whole else chunk, size)
    need = forward_bytes(mc, hidden, vocab, 1, t, MIN_CHUNK, biased)
    fits = _longest_context(mc, hidden, vocab, budget, biased, t)
    raise GptcliError(
        f"context {t} needs about {need / GiB:.1f} GiB even one window at a time, over the "
        f"budget of {budget / GiB:.1f} GiB (--max-memory; default half the free memory); "
        f"contexts up to about {fits} fit"
    )


def _halvings(n: int):
    while n >= 1:
        yield n
        n //= 2


def _longest_context(mc, hidden, vocab, budget, biased, above: int) -> int:
    lo, hi = 0, above
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if forward_bytes(mc, hidden, vocab, 1, mid, MIN_CHUNK, biased) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo
