"""A running run's progress, read from its metrics.jsonl: what the sweep's live view shows."""

from __future__ import annotations

import json
from pathlib import Path

from gptcli.training.report import METRICS_FILE


def run_progress(state) -> list[str]:
    """step/max, last loss, best val, tokens/s and ETA of a sweep's run (dashes when unknown)."""
    step, loss, best, tps, eta = 0, None, None, None, None
    path = Path(state.dir) / METRICS_FILE
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            step = max(step, r.get("step", 0))
            loss = r.get("loss", loss)
            tps = r.get("tokens_per_sec", tps)
            if "val_loss" in r:
                best = r["val_loss"] if best is None else min(best, r["val_loss"])
            if "time" in r and r.get("step"):
                eta = r["time"] / r["step"] * max(0, state.max_iters - r["step"])
    if state.status != "running":
        eta = None

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    return [f"{step}/{state.max_iters}", fmt(loss, ".4f"), fmt(best, ".4f"), fmt(tps, ",.0f"),
            fmt(eta, ".0f") + ("s" if eta is not None else "")]  # fmt: skip
