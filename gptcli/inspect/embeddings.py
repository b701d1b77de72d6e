"""`inspect embeddings`: which tokens a model keeps close. Nearest neighbours by cosine similarity
in the token embedding, and a 2-D map (the first two principal components) of the most frequent
tokens. With untied embeddings the input matrix (wte) and the output one (lm_head) learn
different things, so both are shown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptcli import pictures
from gptcli.errors import GptcliError
from gptcli.inspect.attention_maps import token_label
from gptcli.model import GPT

# Frequencies are counted on at most this many tokens of the train split: enough to rank a
# 50k vocabulary, and a bounded read of a large dataset.
COUNT_TOKENS = 5_000_000
ESCAPES = {"n": "\n", "t": "\t", "s": " ", ",": ",", "\\": "\\"}


@dataclass
class Embedding:
    name: str  # "wte = lm_head (tied)", "wte (input)" or "lm_head (output)"
    weight: np.ndarray  # (vocab, n_embd), float64


def embeddings_of(model: GPT) -> list[Embedding]:
    wte = model.wte.weight.detach().double().numpy()
    if model.lm_head.weight is model.wte.weight:
        return [Embedding("wte = lm_head (tied)", wte)]
    head = model.lm_head.weight.detach().double().numpy()
    return [Embedding("wte (input)", wte), Embedding("lm_head (output)", head)]


def token_counts(data, vocab_size: int) -> np.ndarray:
    """How often each token occurs in (the start of) a TokenDataset's train split."""
    tokens = data.splits["train"][:COUNT_TOKENS]
    return np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size)[:vocab_size]


def parse_tokens(spec: str, encode) -> list[int]:
    """--tokens "e,t,\\n": each comma-separated text must be one token of the model's tokenizer.
    Spaces count (a GPT-2 token often starts with one); \\n \\t \\s \\, \\\\ name a newline, tab,
    space, comma and backslash."""
    ids = []
    for text in _split(spec):
        found = encode(text)
        if len(found) != 1:
            raise GptcliError(f"--tokens: {text!r} is {len(found)} tokens for this model's "
                              f"tokenizer (ids {found}), not one; name single tokens")  # fmt: skip
        ids.append(found[0])
    return ids


def _split(spec: str) -> list[str]:
    parts, current, chars = [], "", iter(spec)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            if nxt not in ESCAPES:
                raise GptcliError(f"--tokens: unknown escape \\{nxt}; use \\n \\t \\s \\, or \\\\")
            current += ESCAPES[nxt]
        elif ch == ",":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    if any(p == "" for p in parts):
        raise GptcliError(f"--tokens {spec!r} has an empty entry; write a comma itself as \\,")
    return parts


def neighbours(weight: np.ndarray, ids: list[int], k: int) -> list[list[tuple[int, float]]]:
    """For each id, the k other tokens of highest cosine similarity, best first."""
    norms = np.linalg.norm(weight, axis=1, keepdims=True)
    unit = weight / np.maximum(norms, 1e-12)
    sims = unit[ids] @ unit.T
    found = []
    for row, token in zip(sims, ids, strict=True):
        row[token] = -np.inf  # a token is not its own neighbour
        best = np.argsort(-row, kind="stable")[: min(k, len(row) - 1)]
        found.append([(int(i), float(row[i])) for i in best])
    return found


def pca_map(weight: np.ndarray, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The chosen tokens' vectors projected on their first two principal components, and the
    share of their variance each component explains."""
    x = weight[ids] - weight[ids].mean(axis=0)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    points = x @ vt[:2].T
    share = s**2 / max(float((s**2).sum()), 1e-30)
    if points.shape[1] < 2:  # a one-token map: put it at the origin of a second axis
        points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
        share = np.pad(share, (0, 2 - len(share)))
    return points, share[:2]


def draw(maps: list[tuple[str, np.ndarray, np.ndarray]], labels: list[str], out: Path,
         title: str) -> Path:  # fmt: skip
    """maps: (name, points, explained share) per matrix, one panel each; labels: token texts."""
    plt = pictures.pyplot()
    fig, axes = plt.subplots(1, len(maps), figsize=(7 * len(maps), 6.5), dpi=100, squeeze=False)
    for ax, (name, points, share) in zip(axes[0], maps, strict=True):
        ax.scatter(points[:, 0], points[:, 1], s=8, color="tab:blue", alpha=0.5)
        for (x, y), label in zip(points, labels, strict=True):
            # parse_math off: a token such as "$x$" is text, not TeX.
            ax.annotate(label, (x, y), fontsize=8, ha="center", va="bottom", parse_math=False)
        ax.set_xlabel(f"principal component 1 ({share[0]:.0%} of variance)")
        ax.set_ylabel(f"principal component 2 ({share[1]:.0%} of variance)")
        ax.set_title(name, fontsize=10)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return pictures.save(fig, out)


def label(decode, token: int) -> str:
    """A token's text for a table or a map: whitespace made visible, other control characters
    (lone bytes of a byte-level BPE) written as escapes, which every font can draw."""
    text = token_label(decode([token]))
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
