"""Loss curves of compared rows: val solid, train dashed, one colour per row, the seeds' spread
shaded; in the metric compare was asked for (bits per byte puts every tokenizer on one scale);
written as a PNG with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gptcli import pictures
from gptcli.errors import GptcliError
from gptcli.study.compare import Row

AXES = {"step": "step", "time": "training time (s)", "tokens": "tokens seen"}
Y_LABELS = {
    "nats": "loss (nats/token): val solid, train dashed",
    "bpb": "bits per byte: val solid, train dashed",
}


def plot_curves(rows: list[Row], out: Path, by: str = "step", metric: str = "val_loss") -> Path:
    if by not in AXES:
        raise GptcliError(f"--by must be one of {', '.join(AXES)}, got {by!r}")
    scale = "bpb" if metric == "bpb" else "nats"
    left_out = [row.name for row in rows if scale == "bpb" and _factor(row) is None]
    if left_out:
        rows = [row for row in rows if row.name not in left_out]
        if not rows:
            raise GptcliError("no run has a full-split eval to convert its curves to bits per "
                              "byte; run gptcli eval --checkpoint RUN first")  # fmt: skip
    plt = pictures.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(rows):
        colour = colours[i % len(colours)]
        for key, style, label in (("val_loss", "-", row.name), ("loss", "--", None)):
            xs, mean, low, high = _band(row, key, by)
            if xs is None:
                continue
            if scale == "bpb":  # nats/token x the run's val split's (bits/byte)/(nats/token)
                factor = _factor(row)
                mean, low, high = mean * factor, low * factor, high * factor
            ax.plot(xs, mean, style, color=colour, label=label, linewidth=1.5)
            if len(row.runs) > 1:
                ax.fill_between(xs, low, high, color=colour, alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter

    for axis in (ax.yaxis,):  # plain numbers on the log axis, not powers of ten
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel(AXES[by])
    ax.set_ylabel(Y_LABELS[scale])
    note = f"\nnot drawn (no full-split eval): {', '.join(left_out)}" if left_out else ""
    ax.set_title(title(rows) + note, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return pictures.save(fig, out)


def title(rows: list[Row]) -> str:
    """Every row's data and tokenizer, with how many runs each, in words."""
    counts: dict[str, int] = {}
    for row in rows:
        for run in row.runs:
            counts[run.data_label] = counts.get(run.data_label, 0) + 1
    return "\n".join(f"{label}: {n} run{'s' * (n > 1)}" for label, n in counts.items())


def _factor(row: Row) -> float | None:
    factors = [f for f in (run.bits_per_byte_factor() for run in row.runs) if f is not None]
    return sum(factors) / len(factors) if factors else None


def _band(row: Row, key: str, by: str):
    """x, and the mean, min and max over the row's seeds at the steps every seed logged (a run
    still in progress is drawn up to where it is)."""
    curves = [{s: (t, v) for s, t, v in r.curve(key)} for r in row.runs]
    curves = [c for c in curves if c]
    if not curves:
        return None, None, None, None
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if not steps:
        return None, None, None, None
    values = np.array([[c[s][1] for s in steps] for c in curves])
    if by == "step":
        xs = np.array(steps)
    elif by == "tokens":
        xs = np.array(steps) * row.runs[0].tokens_per_step
    else:
        xs = np.array([[c[s][0] for s in steps] for c in curves]).mean(axis=0)
    return xs, values.mean(axis=0), values.min(axis=0), values.max(axis=0)
