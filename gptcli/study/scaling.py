"""`gptcli compare --fit`: compare's rows -> one scaling law per variant (study/fits.py).

A variant is what a row is without its size and budget: the rows of one variant at different
sizes and budgets are its points, one per run (seeds included), each at the training FLOPs the
run recorded (gptcli/compute.py) and the loss compare reads for it.
"""

from __future__ import annotations

from typing import Any

from gptcli.errors import GptcliError
from gptcli.study.compare import Row
from gptcli.study.fits import crossing, fit_power_law, held_out, isoflop

# What sets a run's scale rather than its variant: a grid's size and budget, and the shape keys
# where sizes are varied by hand rather than named.
SCALE_KEYS = ("size", "train.flops_budget", "train.tokens_per_param", "model.n_layer",
              "model.n_head", "model.n_embd")  # fmt: skip


def variants(rows: list[Row]) -> dict[str, list[tuple[float, float, float | None, int, str]]]:
    """variant name -> its points: (FLOPs, loss, budget, parameters, run) of every run."""
    points: dict[str, list] = {}
    for row in rows:
        name = ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row.overrides.items()
                        if k not in SCALE_KEYS) or "all runs"  # fmt: skip
        for run, value in zip(row.runs, row.values, strict=True):
            if value is None:
                raise GptcliError(f"{run.dir} has no {row.metric} to fit; score it with "
                                  f"gptcli eval, or pick another --metric")  # fmt: skip
            budget = run.flat.get("train.flops_budget")
            points.setdefault(name, []).append(
                (run.compute.flops, value, budget, run.compute.params, str(run.dir)))
    return points


def fit_rows(rows: list[Row], at: float | None = None) -> dict[str, Any]:
    """Per variant E, A and alpha with 95% intervals, the loss predicted at `at` FLOPs, the
    held-out check, IsoFLOP where budgets hold 3 sizes; for two variants where they cross."""
    points = variants(rows)
    out: dict[str, Any] = {"metric": rows[0].metric if rows else None, "variants": []}
    laws = {}
    for name, pts in points.items():
        flops, losses = [p[0] for p in pts], [p[1] for p in pts]
        try:
            law = fit_power_law(flops, losses)
        except GptcliError as exc:
            raise GptcliError(f"variant {name}: {exc}") from None
        laws[name] = law
        entry = {"name": name, **law.record()}
        if at is not None:
            entry["at"] = {"flops": at, "loss": law.predict(at).record()}
        try:
            entry["held_out"] = held_out(flops, losses)
        except GptcliError as exc:
            entry["held_out"] = {"reason": str(exc)}
        budgets = [p[2] for p in pts]
        if all(b is not None for b in budgets):
            iso = isoflop(budgets, [p[3] for p in pts], losses)
            entry["isoflop"] = iso.record() if iso else None
        out["variants"].append(entry)
    if len(laws) == 2:
        a, b = laws.values()
        cross = crossing(a, b)
        out["crossing"] = cross.record() if hasattr(cross, "record") else {"reason": cross}
    return out
