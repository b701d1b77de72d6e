"""Sampling from a trained model: temperature, top-k, top-p, seeds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from gptcli import checkpoint
from gptcli.errors import GptcliError
from gptcli.model import GPT
from gptcli.tokenizers import Tokenizer, tokenizer_from_spec


def load_model(
    path: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[GPT, Tokenizer, checkpoint.Checkpoint]:
    ckpt = checkpoint.load(path, which)
    tokenizer = tokenizer_from_spec(ckpt.tokenizer_spec)
    model = GPT(ckpt.config.model, ckpt.vocab_size)
    try:
        model.load_state_dict(ckpt.model_state())
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise GptcliError(f"checkpoint {ckpt.dir} does not fit its own config ({first})") from None
    model.to(device).eval()
    return model, tokenizer, ckpt


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits: (B, V) -> next ids (B, 1). temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        logits = _top_p_filter(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose total probability reaches top_p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    # A token is dropped when the tokens before it already reach top_p; the first always stays.
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= top_p
    drop = torch.empty_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield (B,) next ids, one step at a time, from a (B, T) prompt.

    Every step re-runs the last block_size tokens (a sliding window): simple and correct for
    every position scheme; a KV cache makes this faster without changing the result.
    """
    block_size = model.cfg.block_size
    for _ in range(max_new_tokens):
        context = idx[:, -block_size:]
        logits, _ = model(context)
        next_id = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
        idx = torch.cat([idx, next_id], dim=1)
        yield next_id[:, 0]
