"""A running run's progress, read from its metrics.jsonl: what the sweep's live view shows."""

from __future__ import annotations

from pathlib import Path

from gptcli.training.report import METRICS_FILE, read_metrics

# Parsed progress per metrics file, kept while the file's size stays the same: re-parsing every
# run's whole log at every redraw cost the sweep's parent a seventh of a core on 2 cores.
_SEEN: dict[Path, tuple[int, tuple]] = {}


def run_progress(state) -> list[str]:
    """step/max, last loss, best val, tokens/s and ETA of a sweep's run (dashes when unknown)."""
    path = Path(state.dir) / METRICS_FILE
    size = path.stat().st_size if path.is_file() else -1
    if _SEEN.get(path, (None,))[0] != size:
        _SEEN[path] = (size, _parse(path))
    step, loss, best, tps, seconds_per_step = _SEEN[path][1]
    eta = None
    if state.status == "running" and seconds_per_step is not None:
        eta = seconds_per_step * max(0, state.max_iters - step)

    def fmt(value, spec):
        return "-" if value is None else format(value, spec)

    return [f"{step}/{state.max_iters}", fmt(loss, ".4f"), fmt(best, ".4f"), fmt(tps, ",.0f"),
            fmt(eta, ".0f") + ("s" if eta is not None else "")]  # fmt: skip


def _parse(path: Path) -> tuple:
    step, loss, best, tps, seconds_per_step = 0, None, None, None, None
    for r in read_metrics(path):
        step = max(step, r.get("step", 0))
        loss = r.get("loss", loss)
        tps = r.get("tokens_per_sec", tps)
        if "val_loss" in r:
            best = r["val_loss"] if best is None else min(best, r["val_loss"])
        if "time" in r and r.get("step"):
            seconds_per_step = r["time"] / r["step"]
    return step, loss, best, tps, seconds_per_step
