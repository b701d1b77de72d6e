"""Runs -> one row per variant: the keys that differ between runs, the metric's mean ± std over
seeds, and the facts around it (parameters, final train loss, tokens/s, wall time, status)."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gptcli.errors import GptcliError
from gptcli.study.runs import RunRecord, load_runs
from gptcli.study.stats import Difference, difference

# Keys that never make two runs different variants.
IGNORED = {
    "train.seed", "train.out_dir", "train.threads", "train.device", "train.log_interval",
    "train.eval_interval", "train.eval_iters", "train.tensorboard", "train.final_eval",
    "train.compile", "train.loggers",
}  # fmt: skip
IGNORED_SECTIONS = ("sample.",)  # how a run samples never makes it another model
METRICS = {
    "val_loss": "val loss: the full-split score from eval when the run has one, else the best "
    "logged (estimated) val loss",
    "bpb": "bits per byte on the whole val split (from eval); compares across tokenizers",
    "best_val_loss": "the best val loss logged in training (an estimate from eval_iters batches)",
    "train_loss": "the last train loss logged",
}


@dataclass
class Row:
    name: str
    overrides: dict[str, Any]  # varied key -> value
    runs: list[RunRecord]
    values: list[float | None]
    sources: list[str]  # where each value came from: eval or logged
    metric: str = "val_loss"
    delta: float | None = None
    baseline: str | None = None  # the name of the row diffed against, when there is one
    diff: Difference | None = None  # against the baseline; None for the baseline itself

    @property
    def scored(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scored) if self.scored else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.scored) if len(self.scored) > 1 else None

    def to_dict(self) -> dict[str, Any]:
        runs = self.runs
        return {
            "name": self.name,
            "overrides": self.overrides,
            "seeds": [r.seed for r in runs],
            "n": len(self.scored),
            "status": _status(runs),
            "params": runs[0].params,
            "params_non_embedding": runs[0].compute.params_non_embedding,
            "train_tokens": _mean([r.compute.tokens for r in runs]),
            "train_flops": _mean([r.compute.flops for r in runs]),
            "metric": self.metric,
            "metric_source": sorted(set(self.sources)),
            "mean": self.mean,
            "std": self.std,
            "values": self.values,
            "delta": self.delta,
            "baseline": self.baseline,
            "ci95": list(self.diff.ci95) if self.diff and self.diff.ci95 else None,
            "verdict": self.diff.verdict if self.diff else None,
            "seeds_needed": self.diff.seeds_needed if self.diff else None,
            "final_train_loss": _mean([_last(r, "loss") for r in runs]),
            "tokens_per_s": _mean([_tokens_per_s(r) for r in runs]),
            "wall_s": _mean([r.seconds or _last(r, "time") for r in runs]),
            "runs": [str(r.dir) for r in runs],
        }


def compare(paths: list[Path], metric: str = "val_loss", baseline: str | None = None) -> list[Row]:
    if metric not in METRICS:
        raise GptcliError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    runs = load_runs(paths)
    if metric != "bpb":
        _check_comparable(runs)
    varied = varied_keys(runs)
    groups: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(tuple(repr(run.flat[k]) for k in varied), []).append(run)
    rows = []
    for members in groups.values():
        members.sort(key=lambda r: r.seed)
        overrides = {k: members[0].flat[k] for k in varied}
        scored = [_metric(r, metric) for r in members]
        if metric == "val_loss" and len({source for _, source in scored}) > 1:
            # Some seeds have no full-split score yet: one kind of number per row, so all use
            # the logged estimate (the json's metric_source says so).
            scored = [_metric(r, "best_val_loss") for r in members]
        rows.append(Row(_name(overrides), overrides, members, [v for v, _ in scored],
                        [s for _, s in scored], metric))  # fmt: skip
    rows.sort(key=lambda row: (row.mean is None, row.mean if row.mean is not None else 0.0))
    if baseline is not None:
        base = _find(rows, baseline)
        for row in rows:
            row.baseline = base.name
            if row is base and row.mean is not None:
                row.delta = 0.0
            elif row.scored and base.scored:
                row.diff = difference(row.scored, base.scored)
                row.delta = row.diff.delta if math.isfinite(row.diff.delta) else None
    return rows


def notes(rows: list[Row]) -> list[str]:
    """What the intervals leave open, a line per row: how many seeds would settle an undecided
    difference at the spread seen so far, or why a row has no interval."""
    lines = []
    for row in rows:
        d = row.diff
        if d is None:
            continue
        against = f"{row.name} vs {row.baseline}: {d.delta:+.4f}"
        if d.reason:
            lines.append(f"{against}, {d.reason}")
        elif d.undecided and d.seeds_needed is not None:
            lines.append(f"{against} is within noise with {len(row.scored)} and "
                         f"{_seed_count(rows, row.baseline)} seeds; about {d.seeds_needed} seeds "
                         "each would resolve it at this spread")  # fmt: skip
        elif d.undecided:
            lines.append(f"{against} is within noise, and no number of seeds would resolve a "
                         "difference this small at this spread")  # fmt: skip
    return lines + _mixed_precision([run for row in rows for run in row.runs])


def _mixed_precision(runs: list[RunRecord]) -> list[str]:
    """A line when the runs trained in different precisions (auto measures each model shape on
    its own, so variants of a study near the crossover can differ)."""
    by_precision: dict[str, list[str]] = {}
    for run in runs:
        for precision in run.precisions:
            by_precision.setdefault(precision, []).append(run.dir.name)
    if len(by_precision) < 2:
        return []
    parts = "; ".join(f"{p}: {', '.join(sorted(by_precision[p]))}" for p in sorted(by_precision))
    return [f"the runs trained in different precisions ({parts}), so a difference may be the "
            "precision's: pin train.precision (--set train.precision=bf16) to compare like "
            "with like"]  # fmt: skip


def _seed_count(rows: list[Row], name: str | None) -> int:
    return next(len(r.scored) for r in rows if r.name == name)


def varied_keys(runs: list[RunRecord]) -> list[str]:
    ignored = IGNORED | {k for r in runs for k in r.size_keys}  # a size names its keys
    if all(r.flat["train.flops_budget"] or r.flat["train.tokens_per_param"] for r in runs):
        ignored |= {"train.max_iters", "train.lr_decay_iters"}  # what the budget decided
    keys = [k for k in runs[0].flat if k not in ignored and not k.startswith(IGNORED_SECTIONS)]
    return [k for k in keys if len({repr(r.flat.get(k)) for r in runs}) > 1]


def _check_comparable(runs: list[RunRecord]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if run.tokenizer != first.tokenizer or run.flat["data.dir"] != first.flat["data.dir"]:
            raise GptcliError(
                f"{first.dir} and {run.dir} use different datasets or tokenizers "
                f"({first.flat['data.dir']}, {run.flat['data.dir']}): their losses do not compare; "
                "use --metric bpb (bits per byte, from gptcli eval)"
            )


def _metric(run: RunRecord, metric: str) -> tuple[float | None, str]:
    full = run.full_eval()
    if metric == "bpb":
        return (full["bits_per_byte"], "eval") if full else (None, "none")
    if metric == "val_loss" and full:
        return full["loss"], "eval"
    if metric == "train_loss":
        return _last(run, "loss"), "logged"
    vals = [v for _, _, v in run.curve("val_loss")]
    return (min(vals), "logged") if vals else (None, "none")


def _find(rows: list[Row], spec: str) -> Row:
    parts = [part for part in spec.split(",") if part.strip()]
    if not parts or not all("=" in part for part in parts):
        raise GptcliError(f"--baseline {spec!r}: give key=value pairs, e.g. position=learned")
    # Values read as YAML, as --set reads them: bias=true matches True, 1e-5 matches 1.0e-05.
    wanted = {k.strip(): _yaml_value(v) for k, v in (part.split("=", 1) for part in parts)}
    for row in rows:
        short = {k.rsplit(".", 1)[-1]: v for k, v in row.overrides.items()}
        if all(short.get(k, row.overrides.get(k, _MISSING)) == v for k, v in wanted.items()):
            return row
    names = ", ".join(r.name for r in rows)
    raise GptcliError(f"--baseline {spec!r} matches no row; rows: {names}")


_MISSING = object()


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _name(overrides: dict[str, Any]) -> str:
    return ",".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in overrides.items()) or "all runs"


def _last(run: RunRecord, key: str) -> float | None:
    curve = run.curve(key)
    return curve[-1][2] if curve else None


def _tokens_per_s(run: RunRecord) -> float | None:
    values = [v for _, _, v in run.curve("tokens_per_sec")]
    return statistics.median(values) if values else None


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _status(runs: list[RunRecord]) -> str:
    statuses = sorted({r.status for r in runs})
    return statuses[0] if len(statuses) == 1 else "/".join(statuses)


# --- formats ------------------------------------------------------------------------------------

COLUMNS = ("params", "mean ± std", "n", "Δ", "final train", "tokens/s", "wall s", "status")
INTERVAL_COLUMNS = ("95% CI of Δ", "verdict")  # with a baseline only
COMPUTE_COLUMNS = ("params w/o emb.", "train tokens", "train FLOPs")  # with --compute only


def cells(row: Row, with_compute: bool = False) -> list[str]:
    d = row.to_dict()
    spread = _num(row.mean, ".4f") + (f" ± {_num(row.std, '.4f')}" if row.std else "")
    interval = []
    if row.baseline is not None:
        ci = row.diff.ci95 if row.diff else None
        ci_text = f"{ci[0]:+.4f} .. {ci[1]:+.4f}" if ci else "-"
        verdict = "baseline" if row.name == row.baseline else (d["verdict"] or "no interval")
        interval = [ci_text, verdict]
    return [
        *(str(v) for v in row.overrides.values()),
        f"{d['params']:,}", spread, str(d["n"]), _num(row.delta, "+.4f"), *interval,
        _num(d["final_train_loss"], ".4f"), _num(d["tokens_per_s"], ",.0f"),
        _num(d["wall_s"], ".0f"), d["status"],
    ] + ([f"{d['params_non_embedding']:,}", _num(d["train_tokens"], ",.0f"),
          _num(d["train_flops"], ".3g")] if with_compute else [])  # fmt: skip


def _num(v, fmt: str) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def header(rows: list[Row], with_compute: bool = False) -> list[str]:
    keys = [k.rsplit(".", 1)[-1] for k in rows[0].overrides] if rows else []
    interval = INTERVAL_COLUMNS if rows and rows[0].baseline is not None else ()
    extra = COMPUTE_COLUMNS if with_compute else ()
    return [*keys, *COLUMNS[:4], *interval, *COLUMNS[4:], *extra]


# csv is read by spreadsheets and pandas: a number per cell, as it is, and no text around it.
CSV_COLUMNS = {"mean ± std": ("mean", "std"), "95% CI of Δ": ("Δ 95% CI low", "Δ 95% CI high")}


def csv_header(rows: list[Row], with_compute: bool = False) -> list[str]:
    return [part for name in header(rows, with_compute) for part in CSV_COLUMNS.get(name, (name,))]


def csv_cells(row: Row, with_compute: bool = False) -> list[object]:
    """The table's cells as raw numbers: no thousands separators, the mean and its spread (and
    the interval's ends) in cells of their own, an empty cell where there is no number."""
    d = row.to_dict()
    interval: list[object] = []
    if row.baseline is not None:
        ci = row.diff.ci95 if row.diff else None
        verdict = "baseline" if row.name == row.baseline else (d["verdict"] or "no interval")
        interval = [*(ci or (None, None)), verdict]
    values = [*row.overrides.values(), d["params"], row.mean, row.std, d["n"], row.delta,
             *interval, d["final_train_loss"], d["tokens_per_s"], d["wall_s"], d["status"]]
    if with_compute:
        values += [d["params_non_embedding"], d["train_tokens"], d["train_flops"]]
    return [_csv_number(v) for v in values]


def _csv_number(v: object) -> object:
    """"" for no number; a whole number without ".0" (counts averaged over seeds are floats)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53 else v


def render(rows: list[Row], fmt: str, with_compute: bool = False) -> str:
    if fmt == "json":
        return json.dumps([r.to_dict() for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(csv_header(rows, with_compute))
        writer.writerows(csv_cells(row, with_compute) for row in rows)
        return out.getvalue().removesuffix("\n")  # the caller ends the last line, as for md
    head, body = header(rows, with_compute), [cells(r, with_compute) for r in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    raise GptcliError(f"--format must be table, md, csv or json, got {fmt!r}")
