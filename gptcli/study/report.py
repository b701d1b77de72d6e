"""`gptcli report`: a study on one page. What was compared (configs, grid, seeds, data, machines),
the comparison with its intervals, the loss curves, every context evaluated, the parameters per
variant, and one seed of each variant looked inside (attention and positions): one HTML file
that needs nothing else to open."""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from gptcli import atomic, environment
from gptcli.errors import GptcliError
from gptcli.study import html
from gptcli.study.compare import METRICS, Row, cells, compare, header, notes
from gptcli.study.runs import RunRecord
from gptcli.study.sweep import SWEEP_FILE, read_sweep

PROMPT_TOKENS = 24  # the default prompt: this many tokens from the start of the val split


@dataclass
class Report:
    path: Path
    rows: int
    runs: int
    pictures: int


def build_report(paths: list[Path], out: Path, metric: str = "val_loss",
                 baseline: str | None = None, prompt: str | None = None) -> Report:  # fmt: skip
    rows = compare(paths, metric, baseline)
    with tempfile.TemporaryDirectory(prefix="gptcli-report-") as tmp:
        pictures = Pictures(Path(tmp))
        body = [
            html.heading(f"Study: {', '.join(_names(paths))}", 1),
            html.paragraph(f"{sum(len(r.runs) for r in rows)} runs in {len(rows)} variants; "
                           f"report made {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by "
                           "gptcli report", muted=True),  # fmt: skip
            *_what(paths, rows),
            *_comparison(rows, metric),
            *_curves(rows, metric, pictures),
            *_scaling(rows, pictures),
            *_contexts(rows),
            *_insides(rows, prompt, pictures),
        ]
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(out, html.page(f"gptcli study: {', '.join(_names(paths))}",
                                          body).encode("utf-8"))  # fmt: skip
        return Report(out, len(rows), sum(len(r.runs) for r in rows), pictures.count)


class Pictures:
    """PNGs drawn into a scratch directory and read back to be inlined."""

    def __init__(self, tmp: Path):
        self.tmp, self.named, self.count = tmp, 0, 0  # count: pictures on the page

    def path(self) -> Path:
        self.named += 1
        return self.tmp / f"{self.named}.png"

    def inline(self, path: Path, alt: str) -> str:
        self.count += 1
        return html.image(Path(path).read_bytes(), alt)


def _names(paths: list[Path]) -> list[str]:
    return [Path(p).resolve().name for p in paths]


def _what(paths: list[Path], rows: list[Row]) -> list[str]:
    runs = [run for row in rows for run in row.runs]
    facts = []
    for path in map(Path, paths):
        if (path / SWEEP_FILE).is_file():
            grid = read_sweep(path)["grid"]
            facts.append(["sweep", str(path)])
            facts.append(["base config", str(grid.get("config"))])
            for key in ("set", "vary"):
                if grid.get(key):
                    facts.append([key, _plain(grid[key])])
            if grid.get("ladder"):
                facts.append(["ladder", " -> ".join(_rung(r) for r in grid["ladder"])])
        else:
            facts.append(["run", str(path)])
    for key, values in _varied(rows).items():
        facts.append([f"varied: {key}", ", ".join(values)])
    facts.append(["seeds", ", ".join(str(s) for s in sorted({r.seed for r in runs}))])
    facts.append(["data and tokenizer", "; ".join(sorted({r.data_label for r in runs}))])
    facts.append(["steps", ", ".join(str(s) for s in sorted({r.step for r in runs}))])
    facts.append(["trained on", "; ".join(_machines(runs))])
    return [html.heading("What was compared"), html.table(["", ""], facts, text_columns=2)]


def _plain(value) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value)
    return str(value)


def _rung(rung: dict) -> str:
    changes = ", ".join(f"{k}={v}" for k, v in (rung.get("set") or {}).items())
    return f"{rung['name']} ({changes})" if changes else str(rung["name"])


def _varied(rows: list[Row]) -> dict[str, list[str]]:
    varied: dict[str, list[str]] = {}
    for row in rows:
        for key, value in row.overrides.items():
            if str(value) not in varied.setdefault(key, []):
                varied[key].append(str(value))
    return varied


def _machines(runs: list[RunRecord]) -> list[str]:
    """Each distinct environment the runs were trained in, with how many runs (a resumed run
    may name more than one); runs that predate environment.json are counted as such rather than
    guessed."""
    seen: dict[str, int] = {}
    for run in runs:
        texts = {_machine(e) for e in environment.read(run.dir)} or {
            "not recorded (trained before gptcli kept environment.json)"}
        for text in texts:
            seen[text] = seen.get(text, 0) + 1
    return [f"{text}: {n} run{'s' * (n > 1)}" for text, n in seen.items()]


def _machine(e: dict) -> str:
    commit = f" at {e['commit']}" if e.get("commit") else ""
    return (f"gptcli {e.get('gptcli')}{commit}, torch {e.get('torch')}, Python {e.get('python')}, "
            f"{e.get('cpu')} ({e.get('cores')} cores), device {e.get('device')}, "
            f"{e.get('precision')}, {e.get('processes')} process(es)")  # fmt: skip


def _comparison(rows: list[Row], metric: str) -> list[str]:
    parts = [html.heading("Comparison"), html.paragraph(f"{metric}: {METRICS[metric]}. Sorted "
             "best first; mean ± std over the seeds.", muted=True)]  # fmt: skip
    if rows[0].baseline is None:
        parts.append(html.paragraph("No --baseline was given, so no differences or intervals.",
                                    muted=True))  # fmt: skip
    else:
        parts.append(html.paragraph(f"Δ against {rows[0].baseline}, with the 95% confidence "
                                    "interval of it (Welch's t over the seeds) and a verdict.",
                                    muted=True))  # fmt: skip
    keys = len(rows[0].overrides)
    parts.append(html.table(header(rows), [cells(r) for r in rows], keys, best_first=True))
    if undecided := notes(rows):
        parts.append(html.bullets(undecided))
    return parts


def _curves(rows: list[Row], metric: str, pictures: Pictures) -> list[str]:
    from gptcli.study.plots import plot_curves

    try:
        path = plot_curves(rows, pictures.path(), "step", metric)
    except GptcliError as exc:
        return [html.heading("Loss curves"), html.paragraph(str(exc), muted=True)]
    return [html.heading("Loss curves"), pictures.inline(path, "loss curves of every variant")]


def _scaling(rows: list[Row], pictures: Pictures) -> list[str]:
    """Where the runs span 3 or more FLOP budgets: compare --fit's laws, the held-out check of
    each (fit all budgets but the largest, predict the largest) and the plot."""
    from gptcli.study.scaling import HEAD, findings, fit_rows, plot_fits, plot_isoflop, table_rows

    budgets = {r.flat.get("train.flops_budget") for row in rows for r in row.runs} - {None}
    if len(budgets) < 3:
        return []
    parts = [html.heading("Scaling: L = E + A C^-α per variant")]
    try:
        fits = fit_rows(rows)
    except GptcliError as exc:
        return [*parts, html.paragraph(str(exc), muted=True)]
    parts += [html.paragraph("Fitted by Huber least squares on log-loss; 95% bootstrap "
                             "intervals over the runs.", muted=True),
              html.table(HEAD, table_rows(fits.result), 1),
              pictures.inline(plot_fits(fits, pictures.path()), "loss against FLOPs, fitted")]
    if valleys := plot_isoflop(fits, pictures.path()):
        parts.append(pictures.inline(valleys, "IsoFLOP valleys and their optima"))
    if lines := findings(fits.result):
        parts.append(html.bullets(lines))
    return parts


def _contexts(rows: list[Row]) -> list[str]:
    """Every context the runs' eval.json scored the whole val split at (their latest checkpoint,
    non-overlapping windows), mean ± std over the seeds per variant."""
    table: dict[str, dict[int, list[float]]] = {}
    contexts: set[int] = set()
    for row in rows:
        for run in row.runs:
            for context, loss in _scores_by_context(run).items():
                contexts.add(context)
                table.setdefault(row.name, {}).setdefault(context, []).append(loss)
    parts = [html.heading("Every context evaluated")]
    if not contexts:
        return [*parts, html.paragraph("No run has an eval.json score yet (gptcli eval).")]
    order = sorted(contexts)
    block = {row.name: row.runs[0].flat["model.block_size"] for row in rows}
    body = [[row.name, *(_spread(table.get(row.name, {}).get(c)) for c in order)] for row in rows]
    head = ["variant", *(f"{c} (trained)" if c in block.values() else str(c) for c in order)]
    parts.append(html.table(head, body))
    parts.append(html.paragraph(
        f"Val loss (nats/token) of the whole val split at each context; trained at block_size "
        f"{', '.join(sorted({str(b) for b in block.values()}))}. '-': not evaluated at that "
        "context (eval refuses a context a model cannot reach, such as learned positions past "
        "their block_size).", muted=True))  # fmt: skip
    return parts


def _scores_by_context(run: RunRecord) -> dict[int, float]:
    """context -> whole-val-split loss (non-overlapping windows) from the run's eval.json, at its
    latest checkpoint, or else at the latest step eval scored (eval takes the best by default)."""
    by_step: dict[int, dict[int, float]] = {}
    for e in run.evals:
        whole = e.get("split") == "val" and e.get("max_tokens") is None
        if whole and e.get("stride") == e.get("context") and run.own_data(e.get("data")):
            by_step.setdefault(e["step"], {})[e["context"]] = e["loss"]
    if not by_step:
        return {}
    return by_step.get(run.step) or by_step[max(by_step)]


def _spread(values: list[float] | None) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"


def _insides(rows: list[Row], prompt: str | None, pictures: Pictures) -> list[str]:
    """Parameters per variant, then one seed of each looked inside."""
    from gptcli.inspect import inspection
    from gptcli.inspect.params import PARTS, param_report

    subjects = [(row, inspection.load_subject(row.runs[0].dir, "latest")) for row in rows]
    head = ["variant", *PARTS, "total"]
    body = []
    for row, subject in subjects:
        report = param_report(subject.model)
        body.append([row.name, *(f"{report.parts.get(p, 0):,}" for p in PARTS),
                     f"{report.total:,}"])  # fmt: skip
    parts = [html.heading("Parameters per variant"), html.table(head, body)]
    parts.append(html.heading("Inside one seed of each variant"))
    for row, subject in subjects:
        text = prompt if prompt is not None else _default_prompt(subject)
        seen = inspection.attention(subject, text, pictures.path(), None, None)
        where = inspection.positions(subject, pictures.path())
        right = (pictures.inline(where.picture, f"positions of {row.name}") if where.picture
                 else html.paragraph(where.summary, muted=True))  # fmt: skip
        parts += [
            html.heading(f"{row.name} (seed {row.runs[0].seed})", 3),
            html.paragraph(f"{seen.summary} ({text!r}); positions: {where.summary}", muted=True),
            html.pair(pictures.inline(seen.picture, f"attention of {row.name}"), right),
        ]
    return parts


def _default_prompt(subject) -> str:
    """The start of the run's val split, so the attention is over text the model knows."""
    from gptcli.data.dataset import TokenDataset

    n = min(PROMPT_TOKENS, subject.model.cfg.block_size)
    try:
        tokens = TokenDataset(subject.ckpt.config.data.dir).splits["val"][:n]
    except GptcliError:
        return subject.tokenizer.decode(subject.tokenizer.start_ids())
    text = subject.tokenizer.decode([int(t) for t in tokens])
    while len(subject.tokenizer.encode(text)) > subject.model.cfg.block_size:
        text = text[:-1]  # re-encoding may split differently; keep within block_size
    return text
