"""`inspect positions`: a picture of how a model encodes position, one kind per scheme.

- learned, sincos: the vectors added to the token embeddings (position x channel), and the
  cosine similarity between the vectors of every two positions;
- rope: the score q.k between one fixed query and key (all ones) rotated to positions d apart,
  against d: RoPE's decay with distance (RoFormer, section 3.4.3);
- alibi, relative: the additive bias each head gives a query-key pair, against their distance,
  and as the (query x key) matrix per head;
- none: nothing to draw; causal attention alone carries the order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gptcli import pictures
from gptcli.model import GPT

NOTHING = (
    "position 'none': nothing to draw; the causal mask alone tells the model the order (each "
    "position sees a different number of tokens)"
)


@dataclass
class PositionView:
    """The arrays behind a picture, and a one-line summary of them."""

    scheme: str
    summary: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def cosine_similarity(vectors: torch.Tensor) -> np.ndarray:
    unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
    return (unit @ unit.T).numpy()


def position_view(model: GPT) -> PositionView:
    mc, scheme = model.cfg, model.positions
    T = mc.block_size
    with torch.no_grad():
        if mc.position in ("learned", "sincos"):
            vectors = scheme.embed(torch.zeros(1, T, mc.n_embd), 0)[0]
            sim = cosine_similarity(vectors)
            near = float(np.mean(np.diag(sim, 1))) if T > 1 else 1.0
            summary = (f"{T} position vectors of {mc.n_embd} channels; mean cosine similarity of "
                       f"neighbours {near:.3f}, of all pairs {float(sim.mean()):.3f}")  # fmt: skip
            return PositionView(
                mc.position, summary, {"vectors": vectors.numpy(), "similarity": sim}
            )
        if mc.position == "rope":
            return _rope_view(model, 4 * T)
        if mc.position in ("alibi", "relative"):
            bias = scheme.attn_bias(T, T, torch.device("cpu")).float()
            by_distance = _bias_by_distance(bias.numpy())
            summary = (f"{mc.n_head} heads; bias at distance {T - 1}: "
                       + ", ".join(f"{v:.2f}" for v in by_distance[:, -1]))  # fmt: skip
            return PositionView(mc.position, summary, {"bias": bias.numpy(),
                                                       "by_distance": by_distance})  # fmt: skip
    return PositionView("none", NOTHING)


def _bias_by_distance(bias: np.ndarray) -> np.ndarray:
    """(H, T, T) bias -> (H, T): the bias at query-key distance d, read off the last query row
    (every distance occurs there once)."""
    last = bias[:, -1, :]  # keys 0..T-1 seen from query T-1: distances T-1..0
    return last[:, ::-1].copy()


def _rope_view(model: GPT, n_pos: int) -> PositionView:
    head_dim = model.cfg.n_embd // model.cfg.n_head
    ones = torch.ones(1, 1, n_pos, head_dim)
    rotated, _ = model.positions.rotate(ones, ones, 0)
    rotated = rotated[0, 0]
    # Relative: the score of positions m and n depends on m - n only, so query d and key 0 do.
    scores = (rotated @ rotated[0]).numpy() / head_dim
    summary = (f"score of a rotated all-ones query and key (head size {head_dim}, base "
               f"{model.cfg.rope_base:g}), 1 at distance 0: {scores[model.cfg.block_size - 1]:.3f} "
               f"at {model.cfg.block_size - 1}, {scores[-1]:.3f} at {n_pos - 1}")  # fmt: skip
    return PositionView("rope", summary, {"score_by_distance": scores})


def draw(view: PositionView, out: Path, title: str, block_size: int) -> Path:
    plt = pictures.pyplot()
    if view.scheme in ("learned", "sincos"):
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100, layout="constrained")
        image = left.imshow(view.arrays["vectors"], aspect="auto", cmap="RdBu_r")
        left.set(title="position vectors", xlabel="channel", ylabel="position")
        fig.colorbar(image, ax=left)
        image = right.imshow(view.arrays["similarity"], cmap="viridis", vmin=-1, vmax=1)
        right.set(title="cosine similarity", xlabel="position", ylabel="position")
        fig.colorbar(image, ax=right)
    elif view.scheme == "rope":
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100, layout="constrained")
        scores = view.arrays["score_by_distance"]
        ax.plot(np.arange(len(scores)), scores, linewidth=1.2)
        ax.axvline(block_size - 1, color="grey", linestyle=":", label="training length")
        ax.set(title="q.k of fixed vectors against distance", xlabel="query - key distance",
               ylabel="score / head size")  # fmt: skip
        ax.legend()
    else:
        fig = _draw_bias(plt, view)
    fig.suptitle(f"positions: {title}", fontsize=9)
    return pictures.save(fig, out)


def _draw_bias(plt, view: PositionView):
    bias, by_distance = view.arrays["bias"], view.arrays["by_distance"]
    n_head = bias.shape[0]
    fig, axes = plt.subplots(1, n_head + 1, figsize=(2.6 * (n_head + 1) + 2, 3.4), dpi=100,
                             layout="constrained")  # fmt: skip
    finite = bias[np.isfinite(bias)]
    # One colour scale for every head, so their slopes (or learned tables) compare by eye.
    low, high = float(finite.min()), float(finite.max())
    for h in range(n_head):
        axes[0].plot(by_distance[h], label=f"head {h}", linewidth=1)
        shown = np.where(np.isfinite(bias[h]), bias[h], np.nan)  # the masked future left blank
        image = axes[h + 1].imshow(shown, cmap="magma", vmin=low, vmax=high)
        axes[h + 1].set(title=f"head {h}", xlabel="key", ylabel="query")
    fig.colorbar(image, ax=list(axes[1:]), label="bias", shrink=0.8)
    axes[0].set(title="bias against distance", xlabel="query - key distance", ylabel="bias")
    axes[0].legend(fontsize=6)
    return fig
