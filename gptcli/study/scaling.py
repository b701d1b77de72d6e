"""`gptcli compare --fit`: compare's rows -> one scaling law per variant (study/fits.py).

A variant is what a row is without its size and budget: the rows of one variant at different
sizes and budgets are its points, one per run (seeds included), each at the training FLOPs the
run recorded (gptcli/compute.py) and the loss compare reads for it. Where a budget ran several
sizes, the law is fitted to its compute-efficient frontier (Kaplan's envelope, Chinchilla's
first approach): at each budget only the runs of the size with the lowest mean loss; an
oversized or undersized model at a budget says how far off the optimum it was, not how loss
falls with compute. IsoFLOP reads every size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gptcli import pictures
from gptcli.errors import GptcliError
from gptcli.study.compare import Row
from gptcli.study.fits import (
    Interval,
    PowerLaw,
    crossing,
    fit_power_law,
    held_out,
    isoflop,
    valleys,
)

# What sets a run's scale rather than its variant: a grid's size and budget, and the shape keys
# where sizes are varied by hand rather than named.
SCALE_KEYS = ("size", "train.flops_budget", "train.tokens_per_param", "model.n_layer",
              "model.n_head", "model.n_embd")  # fmt: skip


def variants(rows: list[Row]) -> dict[str, list[tuple[float, float, float | None, int, str]]]:
    """variant name -> its points: (FLOPs, loss, budget, parameters, run, tokens) of every run."""
    points: dict[str, list] = {}
    for row in rows:
        if "size" in row.runs[0].flat:
            # A grid's run: its variant is what its name says beside size, budget and seed (a
            # value resolved per size, such as GPT-2's key/value heads, is not a variant).
            parts = [p for p in row.runs[0].dir.name.split(",")
                     if p.split("=")[0] not in ("size", "budget", "seed")]  # fmt: skip
        else:
            parts = [f"{k.rsplit('.', 1)[-1]}={v}" for k, v in row.overrides.items()
                     if k not in SCALE_KEYS]  # fmt: skip
        name = ",".join(parts) or "all runs"
        for run, value in zip(row.runs, row.values, strict=True):
            if value is None:
                raise GptcliError(f"{run.dir} has no {row.metric} to fit; score it with "
                                  f"gptcli eval, or pick another --metric")  # fmt: skip
            budget = run.flat.get("train.flops_budget")
            points.setdefault(name, []).append(
                (run.compute.flops, value, budget, run.compute.params, str(run.dir),
                 run.compute.tokens))  # fmt: skip
    return points


def edges(points: list[tuple], front: list[tuple]) -> list[float]:
    """The budgets whose best size was the smallest or the largest they ran (of 3 or more): the
    optimum may lie beyond, so the frontier there is only a bound."""
    found = []
    for budget in sorted({p[2] for p in front if p[2] is not None}):
        sizes = sorted({p[3] for p in points if p[2] == budget})
        best = next(p[3] for p in front if p[2] == budget)
        if len(sizes) >= 3 and best in (sizes[0], sizes[-1]):
            found.append(budget)
    return found


def frontier(points: list[tuple]) -> list[tuple]:
    """The points a law is fitted to: at each budget the runs of its best size (lowest mean
    loss over seeds); runs without a budget all count."""
    kept = [p for p in points if p[2] is None]
    for budget in sorted({p[2] for p in points if p[2] is not None}):
        at = [p for p in points if p[2] == budget]
        by_size = {n: [p for p in at if p[3] == n] for n in {p[3] for p in at}}
        kept += min(by_size.values(), key=lambda runs: float(np.mean([p[1] for p in runs])))
    return kept


@dataclass
class Fits:
    result: dict[str, Any]  # what --format json prints
    laws: dict[str, PowerLaw]  # per variant, for the plot
    points: dict[str, list]  # per variant: (FLOPs, loss, budget, parameters, run, tokens)
    # per variant: the points on its frontier, which the law is fitted to (default: all)
    fitted: dict[str, list] = field(default_factory=dict)


def fit_rows(rows: list[Row], at: float | None = None) -> Fits:
    """Per variant E, A and alpha with 95% intervals, the loss predicted at `at` FLOPs, the
    held-out check, IsoFLOP where budgets hold 3 sizes; for two variants where they cross."""
    points = variants(rows)
    out: dict[str, Any] = {"metric": rows[0].metric if rows else None, "variants": []}
    laws: dict[str, PowerLaw] = {}
    fitted = {name: frontier(pts) for name, pts in points.items()}
    for name, pts in points.items():
        flops, losses = [p[0] for p in fitted[name]], [p[1] for p in fitted[name]]
        try:
            law = fit_power_law(flops, losses)
        except GptcliError as exc:
            raise GptcliError(f"variant {name}: {exc}") from None
        laws[name] = law
        entry = {"name": name, **law.record(), "runs": len(pts), "edges": edges(pts, fitted[name])}
        if at is not None:
            entry["at"] = {"flops": at, "loss": law.predict(at).record()}
        try:
            entry["held_out"] = held_out(flops, losses)
        except GptcliError as exc:
            entry["held_out"] = {"reason": str(exc)}
        budgets = [p[2] for p in pts]
        if all(b is not None for b in budgets):
            iso = isoflop(budgets, [p[3] for p in pts], [p[1] for p in pts], [p[5] for p in pts])
            entry["isoflop"] = iso.record() if iso else None
        out["variants"].append(entry)
    if len(laws) == 2:
        a, b = laws.values()
        cross = crossing(a, b)
        out["crossing"] = cross.record() if isinstance(cross, Interval) else {"reason": cross}
    return Fits(out, laws, points, fitted)


HEAD = ["variant", "runs", "E", "A", "α", "held-out error at the largest budget"]


def interval_text(e: dict) -> str:
    return f"{e['value']:.4g} [{e['ci95'][0]:.4g}, {e['ci95'][1]:.4g}]"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """fit_rows' result as the rows of a table under HEAD."""
    rows = []
    for v in result["variants"]:
        held = v["held_out"]
        held_text = (f"{held['error']:+.4f} ({'inside' if held['inside'] else 'outside'} its "
                     "interval)") if "error" in held else held["reason"]  # fmt: skip
        rows.append([v["name"], str(v["points"]), *(interval_text(v[k]) for k in ("E", "A",
                     "alpha")), held_text])  # fmt: skip
    return rows


def findings(result: dict[str, Any]) -> list[str]:
    """The lines under the table: predictions, IsoFLOP exponents, where two variants cross."""
    lines = []
    for v in result["variants"]:
        if "at" in v:
            lines.append(f"{v['name']}: loss {interval_text(v['at']['loss'])} at "
                         f"{v['at']['flops']:.3g} FLOPs")  # fmt: skip
        if (iso := v.get("isoflop")) and iso["a"]:
            lines.append(f"{v['name']}: N_opt ~ C^a, a = {interval_text(iso['a'])}")
        if v.get("edges"):
            lines.append(f"{v['name']}: the best size was the smallest or largest run at "
                         f"{', '.join(f'{b:.2g}' for b in v['edges'])} FLOPs: the optimum may "
                         "lie beyond, and the frontier there is a bound")  # fmt: skip
    if cross := result.get("crossing"):
        lines.append(cross.get("reason") or f"the curves cross at {interval_text(cross)} FLOPs")
    return lines


def plot_fits(fits: Fits, out: Path) -> Path:
    """Loss against training FLOPs on log axes: each variant's runs as points (filled on the
    frontier the law is fitted to, hollow off it), its fitted curve and the band of its
    bootstrap refits (2.5th to 97.5th percentile), over and past its range."""
    plt = pictures.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, law) in enumerate(fits.laws.items()):
        colour = colours[i % len(colours)]
        on = fits.fitted.get(name, fits.points[name])
        off = np.asarray([(p[0], p[1]) for p in fits.points[name] if p not in on]).reshape(-1, 2)
        pts = np.asarray([(p[0], p[1]) for p in on])
        ax.scatter(pts[:, 0], pts[:, 1], color=colour, s=18, zorder=3)
        # Sizes off the frontier: hollow, to show how far from the optimum they were.
        ax.scatter(off[:, 0], off[:, 1], facecolors="none", edgecolors=colour, s=18, zorder=3)
        grid = np.geomspace(law.flops[0], law.flops[1] * 10, 200)
        boot = law.boot[:, :1] + law.boot[:, 1:2] * grid[None, :] ** -law.boot[:, 2:3]
        low, high = np.percentile(boot, [2.5, 97.5], axis=0)
        ax.fill_between(grid, low, high, color=colour, alpha=0.2, linewidth=0)
        label = f"{name}: α = {law.alpha.value:.3f}, E = {law.E.value:.3f}"
        ax.plot(grid, law.loss(grid), color=colour, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter, ScalarFormatter  # loaded by pyplot() above

    ax.yaxis.set_major_formatter(ScalarFormatter())  # 1.8, not 1.8 x 10^0
    # Within one decade a log axis has no major tick: label the minor ones, unless there are
    # major ones to read.
    low, high = ax.get_ylim()
    one_decade = np.floor(np.log10(low)) == np.floor(np.log10(high))
    ax.yaxis.set_minor_formatter(ScalarFormatter() if one_decade else NullFormatter())
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel(f"{fits.result['metric']} (fit L = E + A C^-α, 95% band)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return pictures.save(fig, out)


def plot_isoflop(fits: Fits, out: Path) -> Path | None:
    """IsoFLOP valleys: loss against parameters at each budget, the parabola in log N and its
    minimum; one colour per budget, one marker per variant. None where no budget has a valley."""
    plt = pictures.pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn = 0
    for marker, (name, pts) in zip("os^Dv<>", fits.points.items(), strict=False):
        if any(p[2] is None for p in pts):
            continue
        found = valleys([p[2] for p in pts], [p[3] for p in pts], [p[1] for p in pts])
        for i, (budget, coeffs, sizes, losses) in enumerate(found):
            colour = colours[i % len(colours)]
            grid = np.geomspace(sizes.min(), sizes.max(), 100)
            ax.scatter(sizes, losses, color=colour, marker=marker, s=20)
            best = -coeffs[1] / (2 * coeffs[0])
            inside = sizes.min() <= np.exp(best) <= sizes.max()
            ax.plot(grid, np.polyval(coeffs, np.log(grid)), color=colour,
                    label=f"{name}, {budget:.2g} FLOPs" + ("" if inside else
                                                           " (optimum outside the sizes)"))
            if inside:  # a vertex beyond the sizes run is an extrapolation: not starred
                ax.scatter([np.exp(best)], [np.polyval(coeffs, best)], color=colour,
                           marker="*", s=120, edgecolor="black", zorder=3)  # fmt: skip
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"{fits.result['metric']} (IsoFLOP: ★ the optimum of each budget)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return pictures.save(fig, out)
