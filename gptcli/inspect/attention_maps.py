"""`inspect attention`: the attention weights a model really uses for a prompt, and their picture.

The weights are recomputed from each attention layer's own input, captured by a hook during an
ordinary forward pass: q and k from the layer's projection, position-encoded by the model's own
scheme (RoPE rotates them), scores scaled by 1/sqrt(head size), plus the scheme's additive bias
(ALiBi, relative) with the causal mask folded in, then softmax. The tests hold these weights to
the layer's real output (weights @ v, projected, equals what the layer returned).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from gptcli import pictures
from gptcli.errors import GptcliError
from gptcli.model import GPT
from gptcli.model.positions import causal_mask

# Above this many tokens the axis labels overlap and are left off.
MAX_LABELLED = 40


def attention_weights(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """idx: (1, T) token ids -> (n_layer, n_head, T, T) attention weights, rows summing to 1."""
    captured: list[tuple] = []
    hooks = [
        block.attn.register_forward_pre_hook(lambda _m, args: captured.append(args))
        for block in model.blocks
    ]
    try:
        with torch.no_grad():
            model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        return torch.stack([
            layer_weights(block.attn, *args)[0]
            for block, args in zip(model.blocks, captured, strict=True)
        ])  # fmt: skip


def layer_weights(attn, x, positions, start, bias, kv=None) -> torch.Tensor:
    """One layer's (B, H, T, T) weights from its forward arguments (no KV cache)."""
    T = x.shape[1]
    q, k, _ = attn.qkv(x, positions, start)  # normed and rotated as the layer does
    k = k.repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)  # each query head's keys
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    rows = bias.rows(0, T)
    rows = rows if rows is not None else causal_mask(T, T, x.device)
    return F.softmax(scores.float() + rows, dim=-1)


def encode_prompt(tokenizer, prompt: str, max_len: int) -> list[int]:
    if not prompt:
        raise GptcliError("--prompt is empty: give the text whose attention to draw")
    ids = tokenizer.encode(prompt)
    if len(ids) > max_len:
        raise GptcliError(
            f"the prompt is {len(ids)} tokens, longer than the model's block_size={max_len}; "
            "shorten it"
        )
    return ids


def check_index(name: str, value: int | None, count: int) -> None:
    if value is not None and not 0 <= value < count:
        raise GptcliError(f"--{name} {value} does not exist: the model has {count} ({name}s "
                          f"0..{count - 1})")  # fmt: skip


def token_label(text: str) -> str:
    """A token's text as an axis label: whitespace made visible."""
    return text.replace("\n", "\u23ce").replace(" ", "\u2423").replace("\t", "\u21e5") or "\u2205"


def kv_head_of(head: int, n_head: int, n_kv_head: int) -> int:
    """The key/value head a query head reads (grouped-query attention: groups in a row)."""
    return head // (n_head // n_kv_head)


def draw(
    weights: torch.Tensor,
    labels: list[str],
    out: Path,
    title: str,
    layer: int | None = None,
    head: int | None = None,
    n_kv_head: int | None = None,
) -> Path:
    """A grid of heatmaps, layers down and heads across, or only the layer/head asked for; with
    fewer key/value heads than heads, each title names the key/value head it shares."""
    plt = pictures.pyplot()
    layers = [layer] if layer is not None else list(range(weights.shape[0]))
    heads = [head] if head is not None else list(range(weights.shape[1]))
    T = weights.shape[-1]
    cell = 3.2 if T <= MAX_LABELLED else 2.4
    fig, axes = plt.subplots(len(layers), len(heads), squeeze=False, dpi=100,
                             figsize=(cell * len(heads) + 1, cell * len(layers) + 1))  # fmt: skip
    for r, li in enumerate(layers):
        for c, hi in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(weights[li, hi].numpy(), cmap="viridis", vmin=0, vmax=1)
            shared = ""
            if n_kv_head and n_kv_head != weights.shape[1]:
                shared = f" (kv {kv_head_of(hi, weights.shape[1], n_kv_head)})"
            ax.set_title(f"layer {li} head {hi}{shared}", fontsize=8)
            if T <= MAX_LABELLED:
                ticks = range(T)
                # parse_math off: a prompt with two "$" is text, not TeX.
                ax.set_xticks(ticks, labels, rotation=90, fontsize=6, parse_math=False)
                ax.set_yticks(ticks, labels, fontsize=6, parse_math=False)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(f"attention weights (row: query, column: key)\n{title}", fontsize=9)
    fig.tight_layout()
    return pictures.save(fig, out)
