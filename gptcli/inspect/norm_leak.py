"""`inspect norm-leak`: why BatchNorm breaks a causal language model, measured on a checkpoint.

In training mode BatchNorm normalises each channel with the mean and variance over every position
of every sequence in the batch, so the output at position t depends on the tokens after t: the
model can read the future it is asked to predict, and its training loss is too good to be true.
Eval mode uses running statistics, and the model is causal again. Two measurements show it:

(a) loss: the same val batches scored with batch statistics (train mode) and with running
    statistics (eval mode); dropout is off in both.
(b) probe: change the token at position p (in every sequence of a batch) and measure the largest
    change in the logits at each earlier position q < p. A causal model gives exactly zero.

Norms that work within one position (LayerNorm, RMSNorm, none) give zero in both modes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptcli import pictures
from gptcli.data.dataset import TokenDataset
from gptcli.model import GPT
from gptcli.model.norms import NORMS

BATCHES = 4
PROBED_POSITIONS = 16
# Rows per batch at most: batch statistics need a batch, but each probe holds a few copies of
# (rows x block x vocab) logits, which at GPT-2's size would run to gigabytes.
MAX_ROWS = 8


@dataclass
class LeakReport:
    norm: str
    mixes_positions: bool
    loss_train_mode: float
    loss_eval_mode: float
    probe_positions: list[int]
    leak_train_mode: np.ndarray  # (probed p, T): max |change| of logits at q when p changes
    leak_eval_mode: np.ndarray

    def worst(self, leak: np.ndarray) -> float:
        """The largest change at any position before the changed one (0 for a causal model)."""
        mask = np.arange(leak.shape[1])[None, :] < np.array(self.probe_positions)[:, None]
        return float(leak[mask].max()) if mask.any() else 0.0

    def record(self) -> dict:
        return {
            "norm": self.norm, "mixes_positions": self.mixes_positions,
            "val_loss_train_mode": self.loss_train_mode, "val_loss_eval_mode": self.loss_eval_mode,
            "probe_positions": self.probe_positions,
            "leak_train_mode": self.worst(self.leak_train_mode),
            "leak_eval_mode": self.worst(self.leak_eval_mode),
        }  # fmt: skip


def batch_statistics_copy(model: GPT) -> GPT:
    """A copy whose norms use batch statistics (train mode) and whose dropout is off: the
    original's running statistics are never touched."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        if getattr(module, "mixes_positions", False):
            module.train()
    return twin


def measure_leak(model: GPT, data: TokenDataset, batch_size: int, seed: int = 0) -> LeakReport:
    T = model.cfg.block_size
    g = torch.Generator().manual_seed(seed)
    batches = [data.batch("val", min(batch_size, MAX_ROWS), T, g) for _ in range(BATCHES)]
    modes = {"train": batch_statistics_copy(model), "eval": model.eval()}
    losses, leaks = {}, {}
    positions = sorted({int(p) for p in np.linspace(1, T - 1, min(PROBED_POSITIONS, T - 1))})
    with torch.no_grad():
        for name, m in modes.items():
            losses[name] = float(np.mean([m(x, y)[1].item() for x, y in batches]))
            leaks[name] = _probe(m, batches[0][0], positions, model.vocab_size)
    norm = model.cfg.norm
    return LeakReport(norm, NORMS[norm].mixes_positions, losses["train"], losses["eval"],
                      positions, leaks["train"], leaks["eval"])  # fmt: skip


def _probe(model: GPT, x: torch.Tensor, positions: list[int], vocab_size: int) -> np.ndarray:
    base = model(x)[0]
    leak = np.zeros((len(positions), x.shape[1]))
    for i, p in enumerate(positions):
        changed = x.clone()
        changed[:, p] = (changed[:, p] + 1) % vocab_size
        logits = model(changed)[0]
        leak[i] = logits.sub_(base).abs_().amax(dim=(0, 2)).float().numpy()  # in place: one copy
    return leak


def draw(report: LeakReport, out: Path, title: str) -> Path:
    plt = pictures.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    from matplotlib.colors import LogNorm

    top = max(report.leak_train_mode.max(), report.leak_eval_mode.max(), 1e-3)
    # A log scale, so a leak far smaller than the changed token's own effect still shows; exact
    # zeros (no influence at all) are drawn black.
    scale = LogNorm(vmin=top * 1e-6, vmax=top)
    cmap = plt.get_cmap("magma").with_extremes(bad="black", under="black")
    for ax, mode, leak, loss in (
        (axes[0], "train mode (batch statistics)", report.leak_train_mode, report.loss_train_mode),
        (axes[1], "eval mode (running statistics)", report.leak_eval_mode, report.loss_eval_mode),
    ):
        shown = np.ma.masked_equal(leak, 0.0)
        image = ax.imshow(shown, aspect="auto", cmap=cmap, norm=scale,
                          extent=(-0.5, leak.shape[1] - 0.5, len(leak) - 0.5, -0.5))  # fmt: skip
        ax.set_yticks(range(len(leak)), [str(p) for p in report.probe_positions], fontsize=6)
        # Left of the line: outputs before the changed token, which a causal model keeps fixed
        # (black); right of it, the ordinary influence of a token on what follows.
        ax.plot(report.probe_positions, range(len(leak)), "w--", linewidth=1)
        ax.set(xlabel="output position q", ylabel="changed token position p",
               title=f"{mode}\nval loss {loss:.4f}, leak {report.worst(leak):.2e}")  # fmt: skip
        fig.colorbar(image, ax=ax, label="max |change in logits|")
    fig.suptitle(f"norm leak: {title}", fontsize=9)
    fig.tight_layout()
    return pictures.save(fig, out)
