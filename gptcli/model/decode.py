"""GPT.forward for sampling, flat: the logits of the tokens after a KV cache, in eval mode,
without nn.Module's call machinery (its hooks, which sampling never sets) and a training
forward's dropout.

At one new token a step, a small model's step is much Python around small ops, and in a fresh
process each of those costs more than it would alone: every step streams all the weights
through the caches, evicting what the interpreter had there. On the sampling benchmark's model
(6 x 384, CPU, bf16) it is within noise of GPT.forward in one process (benchmarks/
bench_decode.py); in fresh processes the whole sample was 1.03x sooner than before it (README,
"gptcli and nanoGPT", "Sampling"). Each part still runs its own forward (norms, MLPs, QK norms,
linears, the position scheme's embed, rotate and score bias), and each block's placement its
own wiring (Block.step), so every variant is served; what is written out again is attention
around its cache. The tests hold this equal to GPT.forward, bit for bit, for every variant. A
model in training mode runs through GPT.forward.
"""

from functools import partial

import torch

from gptcli.model.attention import CausalSelfAttention, LayerKV, ScoreBias, merge_heads
from gptcli.model.gpt import GPT
from gptcli.model.positions import PositionScheme


def forward_cached(model: GPT, idx: torch.Tensor, cache: list[LayerKV]) -> torch.Tensor:
    """GPT.forward(idx, cache=cache)[0]: the logits (B, T, vocab) of the tokens idx (B, T)
    after those the cache holds, which the call extends."""
    if model.training:
        return model(idx, cache=cache)[0]
    start, T = cache[0].length, idx.shape[1]
    model.check_length(start + T)
    positions = model.positions
    x = positions.embed(model.wte.forward(idx), start)
    bias = ScoreBias(positions, T, start, idx.device, model.query_chunk)
    for block, kv in zip(model.blocks, cache, strict=True):
        x = block.step(x, partial(_attention, block.attn, positions, start, bias, kv))
    logits = model.lm_head.forward(model.ln_f.forward(x))
    return logits * model.output_mult if model.output_mult != 1.0 else logits


def _attention(
    attn: CausalSelfAttention,
    positions: PositionScheme,
    start: int,
    bias: ScoreBias,
    kv: LayerKV,
    x: torch.Tensor,
) -> torch.Tensor:
    q, k, v = attn.heads(attn.c_attn.forward(x), positions, start)
    k, v = kv.append(k, v)
    return attn.c_proj.forward(merge_heads(bias.attend(q, k, v, 0.0)))
