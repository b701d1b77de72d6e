"""`gptcli sweep` (a grid of runs) and `gptcli compare` (a table and curves of runs)."""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path

import typer
from rich.live import Live
from rich.table import Table

from gptcli.cli.app import app, console, show, user_errors
from gptcli.errors import GptcliError


@app.command()
def sweep(
    ctx: typer.Context,
    config: Path | None = typer.Option(None, "--config", "-c", help="The base config."),
    vary: list[str] = typer.Option(
        [], "--vary", help="A key and its values: --vary model.position=learned,rope (repeatable)."
    ),
    seeds: str | None = typer.Option(None, help="Seeds, e.g. 1337,1338 \\[default: the config's]."),
    set_: list[str] = typer.Option([], "--set", help="Override a key in every run (repeatable)."),
    grid: Path | None = typer.Option(None, help="A grid file (config, set, vary, seeds, out)."),
    jobs: int | None = typer.Option(
        None, help="Trainings at once \\[default: 1; with ray, as many as the cluster fits]."
    ),
    out: Path | None = typer.Option(None, help="Sweep directory \\[default: out/sweeps/NAME]."),
    backend: str = typer.Option("local", help="local (this machine) | ray (a Ray cluster)."),
    address: str | None = typer.Option(
        None, help="ray: the cluster's head, host:port or auto \\[default: Ray on this machine]."
    ),
    cpus_per_run: int | None = typer.Option(
        None, help="ray: CPUs each run asks for \\[default: a node's, or a GPU's share]."
    ),
) -> None:
    """Train every combination of the varied keys (times the seeds), JOBS at a time.

    Each run is an ordinary run directory under OUT named by what varies; OUT/sweep.json holds
    each run's status. Re-running skips finished runs and resumes the others. Exit code 1 when a
    run failed (the others go on), 130 when stopped by Ctrl-C. With --backend ray each run is a
    Ray task; OUT, the config and the data must be on storage every node sees (checked)."""
    from gptcli.checkpoint import lock
    from gptcli.study.sweep import BUSY_ADVICE, Sweep

    with user_errors():
        if jobs is not None and jobs < 1:  # only leaving --jobs out means the default
            raise GptcliError(f"--jobs must be at least 1, got {jobs}")
        spec = _grid_spec(config, vary, seeds, set_, grid, out)
        launcher = _launcher(spec, backend, jobs, address, cpus_per_run)
        runner = Sweep(spec, jobs or 1, launcher)  # checks every run before writing anything
        # At once, before the live table: a second sweep of one directory is refused.
        with contextlib.ExitStack() as refused:  # lets go of Ray and the lock on a refusal
            refused.callback(runner.launcher.close)
            refused.enter_context(lock.hold(spec.out, BUSY_ADVICE))
            if backend == "ray":
                from gptcli.study.ray_launcher import shared_paths

                combos = list(runner.combos.values())
                runner.launcher.check_shared(spec.out, shared_paths(spec, combos))
            held = refused.pop_all()
    where = runner.launcher.describe()
    typer.echo(f"sweep of {len(runner.states)} runs, {where}, into {spec.out}")
    with held:
        code = _run_shown(runner)
    for state in runner.states:
        if state.status == "busy":
            typer.echo(f"{state.name}: {state.error}", err=True)
    if code == 130:
        again = again_command(ctx)
        typer.echo(f"stopped; each run saved its checkpoint. Continue with: {again}", err=True)
    failed = [s for s in runner.states if s.status == "failed"]
    for state in failed:
        typer.echo(f"failed: {state.name}: {state.error}", err=True)
    raise typer.Exit(code)


def _run_shown(runner) -> int:
    """The sweep under a live table on a terminal. Into a file or a pipe the table is printed
    once at the end by show(): Live would print it 80 columns wide, cut, and with no newline
    after its last line."""
    if not console.is_terminal:
        code = runner.run()
        show(_status_table(runner.states))
        return code
    with Live(console=console, refresh_per_second=2, transient=False) as live:
        return runner.run(lambda states: live.update(_status_table(states)))


def again_command(ctx: typer.Context) -> str:
    """`gptcli COMMAND` and the options this one was given, to run it again: the command a user
    types, however it was started (`python -m gptcli` has __main__.py as its argv[0])."""
    words = ["gptcli", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        many = isinstance(value, list | tuple)
        if value is None or value == param.default or (many and not value):
            continue
        if param.param_type_name != "option":
            words += [str(v) for v in (value if many else [value])]
            continue
        name = max(param.opts, key=len)  # the long spelling: --set, not -s
        if isinstance(value, bool):  # a flag: False here means --no-x, as its default is True
            words.append(name if value else param.secondary_opts[0])
        elif many:
            words += [w for v in value for w in (name, str(v))]
        else:
            words += [name, str(value)]
    return shlex.join(words)


def _grid_spec(config, vary, seeds, sets, grid, out):
    from gptcli.study.grid import Grid, load_grid, parse_seeds, parse_vary

    if grid is not None:
        if config or vary or seeds or sets:
            raise GptcliError("--grid holds config, vary, seeds and set; give it alone")
        spec = load_grid(grid)
    else:
        if config is None or not vary:
            raise GptcliError("give --config and at least one --vary (or a --grid file)")
        name = "-".join(parse_vary(v)[0].rsplit(".", 1)[-1] for v in vary)
        varied = dict(parse_vary(v) for v in vary)
        spec = Grid(config, Path("out/sweeps") / name, list(sets), varied,
                    parse_seeds(seeds) if seeds else None)  # fmt: skip
    if out is not None:
        spec.out = out
    return spec


def _launcher(spec, backend: str, jobs: int | None, address: str | None, cpus: int | None):
    """None for this machine; for ray, what makes the launcher once the runs are valid."""
    if backend == "local":
        if address is not None or cpus is not None:
            raise GptcliError("--address and --cpus-per-run are for --backend ray")
        return None
    if backend != "ray":
        raise GptcliError(f"--backend must be local or ray, got {backend!r}")
    from gptcli.study.ray_launcher import import_ray, ray_launcher

    import_ray()  # before anything starts: one line saying what to install
    spec.config, spec.out = Path(spec.config).resolve(), Path(spec.out).resolve()
    return lambda: ray_launcher(address, jobs, cpus)


def _status_table(states) -> Table:
    from gptcli.study.progress import run_progress

    table = Table(show_header=True, header_style="bold")
    for name in ("run", "status", "step", "loss", "best val", "tok/s", "ETA"):
        table.add_column(name, justify="left" if name in ("run", "status") else "right")
    for state in states:
        p = run_progress(state)
        table.add_row(state.name, state.status, *p)
    return table


@app.command()
def compare(
    paths: list[Path] = typer.Argument(..., help="Run directories and sweep directories."),
    metric: str = typer.Option("val_loss", help="val_loss | bpb | best_val_loss | train_loss"),
    baseline: str | None = typer.Option(None, help="The row to diff against: position=learned"),
    output: str = typer.Option("table", "--format", help="table | md | csv | json"),
    plot: Path | None = typer.Option(None, help="Draw the loss curves (with --fit: loss "
                                     "against FLOPs and the fits) into this .png file."),
    by: str | None = typer.Option(None, help="The x axis of --plot's loss curves: step | time "
                                  "| tokens \\[default: step]."),
    with_compute: bool = typer.Option(
        False, "--compute", help="Columns of what each row spent: parameters without "
        "embeddings, training tokens and FLOPs (the json always has them)."),
    fit: bool = typer.Option(False, "--fit", help="Fit L = E + A C^-alpha per variant over its "
                             "sizes and budgets, with bootstrap 95% intervals."),
    at: float | None = typer.Option(None, "--at", help="With --fit: the loss predicted at "
                                    "this many training FLOPs."),
    against: str | None = typer.Option(None, "--against", help="The metric against this varied "
                                       "key (e.g. train.lr), a line per combination of the "
                                       "others, each line's best marked; with --plot, drawn."),
) -> None:
    """One row per variant (runs differing only by seed are one row: mean ± std), sorted by the
    metric. val_loss is the full-split score from eval when a run has one, else the best val
    loss logged in training; the json says which. With --baseline each row gets its difference,
    the 95% confidence interval of it (Welch's t over the seeds) and a verdict: better, worse or
    within noise; lines under the table say how many seeds would settle each undecided one."""
    from gptcli.study.compare import METRICS, cells, header, notes, render
    from gptcli.study.compare import compare as run_compare
    from gptcli.study.plots import plot_curves

    with user_errors():
        if output not in ("table", "md", "csv", "json"):
            raise GptcliError(f"--format must be table, md, csv or json, got {output!r}")
        by = _plot_axis(plot, by, fit or against is not None)
        if (fit or against is not None) and output in ("md", "csv"):
            raise GptcliError(f"--format {output} is for the runs' rows; --fit and --against "
                              "print a table or json")  # fmt: skip
        rows = run_compare(paths, metric, baseline)
        if fit or against is not None:
            fit_or_against(rows, fit, at, against, output, plot)
            return
        if plot is not None:
            plot_curves(rows, plot, by, metric)
    if output != "table":
        typer.echo(render(rows, output, with_compute))
    else:
        table = Table(title=f"{metric}: {METRICS[metric]}", title_justify="left")
        for name in header(rows, with_compute):
            table.add_column(name)
        for i, row in enumerate(rows):
            table.add_row(*cells(row, with_compute), style="bold green" if i == 0 else None)
        show(table)
    if output in ("table", "md"):
        for line in notes(rows):
            typer.echo(("" if output == "table" else "- ") + line)
    if plot is not None:  # stderr: stdout holds only the format asked for (json, csv, md)
        typer.echo(f"curves drawn in {plot}", err=True)


def _plot_axis(plot: Path | None, by: str | None, other_plot: bool) -> str:
    """--by checked against --plot: what is asked for is drawn, or one line says why not."""
    if plot is not None and (plot.suffix.lower() != ".png" or plot.is_dir()):
        # pictures.save writes PNG whatever the name says.
        raise GptcliError(f"--plot {plot}: give a file name ending in .png (the pictures are PNG)")
    if by is None:
        return "step"
    if plot is None:
        raise GptcliError(f"--by {by} picks the x axis of the loss curves; give --plot FILE.png")
    if other_plot:
        raise GptcliError("--by is for the loss curves: --fit draws against training FLOPs and "
                          "--against against its key")  # fmt: skip
    return by


def fit_or_against(rows, fit: bool, at: float | None, against: str | None, output: str,
                   plot: Path | None) -> None:  # fmt: skip
    """compare --fit (with --at), else --against: computed, shown and, with --plot, drawn."""
    if not fit:
        show_against(rows, against, output, plot)
        return
    from gptcli.study.scaling import fit_rows, plot_fits, plot_isoflop

    fits = fit_rows(rows, at)
    drawn = [plot_fits(fits, plot)] if plot is not None else []
    if plot is not None:
        valleys = plot_isoflop(fits, plot.with_name(f"{plot.stem}-isoflop.png"))
        drawn += [valleys] if valleys else []
    show_fit(fits.result, output)
    if drawn:
        typer.echo(f"fits drawn in {', '.join(map(str, drawn))}", err=True)


def show_against(rows, key: str, output: str, plot: Path | None) -> None:
    """compare --against: the json as it is, else a table of each line's values and best."""
    from gptcli.study.sensitivity import against, findings, plot_against

    result = against(rows, key)
    drawn = plot_against(result, plot) if plot is not None else None
    if output == "json":
        typer.echo(json.dumps(result, indent=2))
    else:
        values = sorted({p[0] for line in result["lines"] for p in line["points"]})
        table = Table(title=f"{result['metric']} against {key}", title_justify="left")
        for name in ["line", *(f"{v:g}" for v in values)]:
            table.add_column(name)
        for line in result["lines"]:
            by_value = {p[0]: p[1] for p in line["points"]}
            table.add_row(line["name"], *(("*" if v == line["best"] else "") + f"{by_value[v]:.4f}"
                                          if v in by_value else "-" for v in values))  # fmt: skip
        show(table)
        for text in findings(result):
            typer.echo(text)
    if drawn:
        typer.echo(f"drawn in {drawn}", err=True)


def show_fit(result: dict, output: str) -> None:
    """compare --fit's result: the json as it is, else a table and a line per finding."""
    from gptcli.study.scaling import HEAD, findings, table_rows

    if output == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"L = E + A C^-alpha ({result['metric']}; 95% bootstrap intervals)",
                  title_justify="left")  # fmt: skip
    for name in HEAD:
        table.add_column(name)
    for row in table_rows(result):
        table.add_row(*row)
    show(table)
    for line in findings(result):
        typer.echo(line)


@app.command()
def report(
    paths: list[Path] = typer.Argument(..., help="Run directories and sweep directories."),
    out: Path | None = typer.Option(None, help="The HTML file \\[default: DIR/report.html]."),
    metric: str = typer.Option("val_loss", help="val_loss | bpb | best_val_loss | train_loss"),
    baseline: str | None = typer.Option(None, help="The row to diff against: position=learned"),
    prompt: str | None = typer.Option(
        None, help="The text whose attention is drawn \\[default: the start of the val split]."
    ),
) -> None:
    """One self-contained HTML page of a study: what was compared (configs, grid, seeds, data,
    machines), the comparison with 95% intervals and verdicts, the loss curves, every context
    evaluated, parameters per variant, and the attention and positions of one seed of each
    variant. Pictures and styles are inline: the file opens anywhere, with no network."""
    from gptcli.study.report import build_report

    with user_errors():
        target = out or Path(paths[0]) / "report.html"
        if target.suffix.lower() not in (".html", ".htm") or target.is_dir():
            raise GptcliError(f"--out {target}: give a file name ending in .html")
        done = build_report(paths, target, metric, baseline, prompt)
    typer.echo(f"{done.rows} variants, {done.runs} runs, {done.pictures} pictures: {done.path}")
