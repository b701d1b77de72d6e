"""`gptcli compare --against KEY`: the metric against one varied numeric key (a learning-rate
sweep, a width), one line per combination of the other varied keys, each line's best value
marked: how a learning rate's optimum moves with the width (µTransfer's picture), or where each
rung of a ladder wants its own rate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gptcli import pictures
from gptcli.errors import GptcliError
from gptcli.study.compare import Row

_SHAPE = ("model.n_layer", "model.n_head", "model.n_embd")  # named by the size, where one is


def against(rows: list[Row], key: str) -> dict[str, Any]:
    """{key, metric, lines: [{name, points: [[value, mean, std]...] by value, best, best_index,
    of}]}; refused in one line where key does not vary or is not a number."""
    if not any(key in row.overrides for row in rows):
        varied = sorted({k for row in rows for k in row.overrides})
        raise GptcliError(f"--against {key}: the runs do not vary it; they vary "
                          f"{', '.join(varied) or 'nothing'}")  # fmt: skip
    lines: dict[str, list] = {}
    for row in rows:
        value = row.overrides.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise GptcliError(f"--against {key}: {row.name} has {value!r}, not a number")
        if row.mean is None:
            continue
        others = {k: v for k, v in row.overrides.items()
                  if k != key and not ("size" in row.overrides and k in _SHAPE)}  # fmt: skip
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in others.items()) or "all runs"
        lines.setdefault(name, []).append([float(value), row.mean, row.std])
    out = []
    for name, points in lines.items():
        points.sort(key=lambda p: p[0])
        best = min(range(len(points)), key=lambda i: points[i][1])
        out.append({"name": name, "points": points, "best": points[best][0],
                    "best_index": best, "of": len(points)})  # fmt: skip
    return {"key": key, "metric": rows[0].metric, "lines": out}


def findings(result: dict[str, Any]) -> list[str]:
    """Where each line's best lies; whether it sits on the edge of what was tried."""
    lines = []
    for line in result["lines"]:
        edge = line["best_index"] in (0, line["of"] - 1) and line["of"] > 2
        lines.append(f"{line['name']}: best {result['key']} = {line['best']:g}"
                     + (" (at the edge of the values tried)" if edge else ""))  # fmt: skip
    return lines


def plot_against(result: dict[str, Any], out: Path) -> Path:
    """The metric against the key on a log x axis, a line per combination, its best starred."""
    plt = pictures.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for line in result["lines"]:
        pts = np.asarray([p[:2] for p in line["points"]], dtype=float)
        drawn = ax.plot(pts[:, 0], pts[:, 1], marker="o", markersize=4, label=line["name"])
        best = pts[line["best_index"]]
        ax.scatter([best[0]], [best[1]], marker="*", s=140, color=drawn[0].get_color(),
                   edgecolor="black", zorder=3)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel(result["key"])
    ax.set_ylabel(f"{result['metric']} (★ each line's best)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return pictures.save(fig, out)
