import csv
import io
import json
import shutil
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.data.prepare import prepare
from gptcli.errors import GptcliError
from gptcli.evaluate import read_results
from gptcli.study.compare import compare, render
from gptcli.training.loop import train

from ..conftest import make_text, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """learned x 2 seeds and rope x 2 seeds, trained once for this module."""
    tmp = tmp_path_factory.mktemp("compare")
    (tmp / "corpus.txt").write_text(make_text(), encoding="utf-8")
    data = prepare(input_path=tmp / "corpus.txt", tokenizer="char", out_dir=tmp / "data").out_dir
    dirs = []
    for position, seed in (("learned", 1), ("learned", 2), ("rope", 1), ("rope", 2)):
        out = tmp / "runs" / f"{position}-{seed}"
        cfg = tiny_config(data, out, model={"position": position},
                          train={"seed": seed, "max_iters": 20, "eval_interval": 10})  # fmt: skip
        train(cfg)
        dirs.append(out)
    return dirs


@pytest.fixture
def runs(trained, tmp_path):
    """Each test's own copy of them: some change what a run left behind."""
    return [Path(shutil.copytree(run, tmp_path / run.name)) for run in trained]


def test_seeds_are_one_row_with_mean_and_std(runs):
    rows = compare(runs, baseline="position=learned")
    assert [r.name for r in sorted(rows, key=lambda r: r.name)] == [
        "position=learned", "position=rope"]  # fmt: skip
    for row in rows:
        losses = [read_results(r.dir)[0]["loss"] for r in row.runs]  # the full-split scores
        assert row.values == losses and row.sources == ["eval", "eval"]
        assert row.mean == pytest.approx(statistics.fmean(losses))
        assert row.std == pytest.approx(statistics.stdev(losses))
    assert rows[0].mean <= rows[1].mean  # sorted by the metric
    learned = next(r for r in rows if r.name == "position=learned")
    assert learned.delta == 0.0


def test_formats(runs):
    rows = compare(runs, metric="best_val_loss")
    records = json.loads(render(rows, "json"))
    for key in ("name", "overrides", "seeds", "n", "status", "params", "mean", "std", "values",
                "tokens_per_s", "wall_s"):  # fmt: skip
        assert key in records[0]
    assert records[0]["metric"] == "best_val_loss"
    assert records[0]["seeds"] == [1, 2] and records[0]["n"] == 2
    assert records[0]["status"] == "done" and records[0]["wall_s"] > 0
    table = list(csv.reader(io.StringIO(render(rows, "csv"))))
    assert table[0][:5] == ["position", "params", "mean", "std", "n"] and len(table) == 3
    # Raw numbers for a spreadsheet: no thousands separators, the mean and std apart.
    first = dict(zip(table[0], table[1], strict=True))
    assert int(first["params"]) == records[0]["params"] > 1000
    assert float(first["mean"]) == pytest.approx(records[0]["mean"])
    assert float(first["std"]) == pytest.approx(records[0]["std"])
    assert float(first["tokens/s"]) == pytest.approx(records[0]["tokens_per_s"])
    md = render(rows, "md").splitlines()
    assert md[0].startswith("| position | params |") and md[1].startswith("|---|")


def test_plot_is_a_png_and_the_command_prints_a_table(runs, tmp_path):
    plot = tmp_path / "curves.png"
    done = CliRunner().invoke(app, ["compare", *map(str, runs), "--plot", str(plot), "--by",
                                    "time", "--baseline", "position=learned"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert "position=" not in done.output.splitlines()[0] and "rope" in done.output


def test_with_a_plot_stdout_holds_only_the_format_asked_for(runs, tmp_path):
    plot = tmp_path / "curves.png"
    args = ["compare", *map(str, runs), "--plot", str(plot), "--baseline", "position=learned"]
    done = CliRunner().invoke(app, [*args, "--format", "json"])
    assert done.exit_code == 0, done.output
    assert len(json.loads(done.stdout)) == 2 and done.stderr == f"curves drawn in {plot}\n"
    text = CliRunner().invoke(app, [*args, "--format", "csv"]).stdout
    # As pandas and spreadsheets read it: \n line ends, a header and a line per row, no blank.
    assert "\r" not in text and text.endswith("\n") and not text.endswith("\n\n")
    assert len(list(csv.reader(io.StringIO(text)))) == 3 and "drawn" not in text
    md = CliRunner().invoke(app, [*args, "--format", "md"]).stdout
    assert md.startswith("| position |") and "drawn" not in md


def test_an_axis_without_the_curves_or_a_plot_that_is_no_png_is_one_line(runs, tmp_path):
    text = tmp_path / "x.txt"
    cases = {
        ("--by", "tokens"): "--by tokens picks the x axis of the loss curves; give --plot FILE.png",
        ("--plot", str(text)):
            f"--plot {text}: give a file name ending in .png (the pictures are PNG)",
        ("--fit", "--plot", str(tmp_path / "f.png"), "--by", "tokens"):
            "--by is for the loss curves: --fit draws against training FLOPs and --against "
            "against its key",
        ("--fit", "--format", "csv"):
            "--format csv is for the runs' rows; --fit and --against print a table or json",
        ("--against", "model.n_embd", "--format", "md"):
            "--format md is for the runs' rows; --fit and --against print a table or json",
    }  # fmt: skip
    for extra, message in cases.items():
        done = CliRunner().invoke(app, ["compare", *map(str, runs), *extra])
        assert (done.exit_code, done.output) == (2, f"error: {message}\n")
    assert not text.exists() and not (tmp_path / "f.png").exists()


def test_runs_on_different_data_are_refused_unless_by_bits_per_byte(runs, tmp_path):
    (tmp_path / "other.txt").write_text(make_text(400, seed=5), encoding="utf-8")
    other = prepare(input_path=tmp_path / "other.txt", tokenizer="char", out_dir=tmp_path / "od")
    train(tiny_config(other.out_dir, tmp_path / "other-run", train={"max_iters": 20}))
    with pytest.raises(GptcliError, match="use different datasets or tokenizers"):
        compare([runs[0], tmp_path / "other-run"])
    rows = compare([runs[0], tmp_path / "other-run"], metric="bpb")
    assert all(r.mean > 0 for r in rows)
    with pytest.raises(GptcliError, match="--baseline 'position=alibi' matches no row"):
        compare(runs, baseline="position=alibi")


def test_an_eval_of_another_dataset_does_not_stand_for_the_run(runs, tmp_path):
    from gptcli.evaluate import evaluate_checkpoint

    before = compare(runs[:1])[0].values
    (tmp_path / "other.txt").write_text(make_text(400, seed=9), encoding="utf-8")
    other = prepare(input_path=tmp_path / "other.txt", tokenizer="char", out_dir=tmp_path / "od")
    evaluate_checkpoint(runs[0], which="latest", data_dir=other.out_dir)  # --data elsewhere
    assert compare(runs[:1])[0].values == before


def test_a_resumed_run_counts_each_step_once_and_rows_ignore_logging_keys(tmp_path, char_data):
    from gptcli.study.plots import _band

    runs = []
    for seed, every in ((1, 5), (2, 10)):  # log_interval differs: still one row of two seeds
        out = tmp_path / f"s{seed}"
        keys = {"seed": seed, "max_iters": 20, "eval_interval": 10, "log_interval": every}
        train(tiny_config(char_data, out, train=keys, sample={"temperature": 0.5 * seed}))
        runs.append(out)
    with open(runs[0] / "metrics.jsonl", "a") as f:  # what a crash and a resume leave behind
        f.write(json.dumps({"step": 10, "loss": 99.0, "time": 1.0}) + "\n")
    [row] = compare(runs)
    assert row.to_dict()["n"] == 2
    assert [s for s, _, _ in row.runs[0].curve("loss")] == [5, 10, 15, 20]
    xs, mean, _, _ = _band(row, "loss", "step")
    assert list(xs) == [10, 20]  # the steps both seeds logged
    assert mean[0] == pytest.approx((99.0 + row.runs[1].curve("loss")[0][2]) / 2)


def test_baseline_values_read_as_yaml_and_a_bare_name_is_refused(runs):
    rows = compare(runs, baseline="position=rope")
    assert next(r for r in rows if r.name == "position=rope").delta == 0.0
    with pytest.raises(GptcliError, match="give key=value pairs"):
        compare(runs, baseline="learned")


def test_a_row_never_mixes_full_split_scores_with_logged_estimates(runs):
    (runs[3] / "eval.json").unlink()  # one rope seed without its full-split score
    rows = {r.name: r for r in compare(runs)}
    assert set(rows["position=rope"].sources) == {"logged"}
    assert set(rows["position=learned"].sources) == {"eval"}


def test_key_value_heads_are_named_by_their_number(tmp_path, char_data):
    # null n_kv_head (one per head) and n_kv_head = n_head are one model: one row, shown as 2.
    dirs = []
    for name, kv in (("default", None), ("explicit", 2), ("mqa", 1)):
        cfg = tiny_config(char_data, tmp_path / name, model={"n_kv_head": kv},
                          train={"max_iters": 4, "eval_interval": 4})  # fmt: skip
        train(cfg)
        dirs.append(tmp_path / name)
    rows = compare(dirs)
    assert sorted(r.name for r in rows) == ["n_kv_head=1", "n_kv_head=2"]
    assert len(next(r for r in rows if r.name == "n_kv_head=2").runs) == 2


def test_rows_against_a_baseline_carry_welch_intervals_and_verdicts(runs):
    from gptcli.study.compare import notes
    from gptcli.study.stats import difference

    rows = compare(runs, baseline="position=learned")
    records = {r["name"]: r for r in json.loads(render(rows, "json"))}
    base, rope = records["position=learned"], records["position=rope"]
    assert base["ci95"] is None and base["verdict"] is None and base["delta"] == 0.0
    expected = difference(rope["values"], base["values"])
    assert rope["ci95"] == pytest.approx(list(expected.ci95))
    assert rope["verdict"] == expected.verdict in ("better", "worse", "within noise")
    low, high = rope["ci95"]
    assert low <= rope["delta"] <= high
    assert rope["verdict"] == ("better" if high < 0 else "worse" if low > 0 else "within noise")
    table = list(csv.reader(io.StringIO(render(rows, "csv"))))
    assert table[0][:9] == ["position", "params", "mean", "std", "n", "Δ", "Δ 95% CI low",
                            "Δ 95% CI high", "verdict"]  # fmt: skip
    assert all(len(line) == len(table[0]) for line in table)  # cells and header built apart
    by_name = {line[0]: line for line in table[1:]}
    assert by_name["learned"][6:9] == ["", "", "baseline"] and float(by_name["learned"][5]) == 0
    assert [float(v) for v in by_name["rope"][6:8]] == pytest.approx(rope["ci95"])
    assert by_name["rope"][8] == rope["verdict"]
    assert "| 95% CI of Δ | verdict |" in render(rows, "md").splitlines()[0]
    undecided = [line for line in notes(rows) if "within noise" in line]
    assert bool(undecided) == (rope["verdict"] == "within noise")
    if undecided:
        assert f"about {rope['seeds_needed']} seeds each" in undecided[0]


def test_one_seed_a_side_says_no_interval_can_be_given(runs):
    from gptcli.study.compare import notes

    rows = compare([runs[0], runs[2]], baseline="position=learned")
    rope = next(r for r in rows if r.name == "position=rope")
    assert rope.to_dict()["ci95"] is None and rope.to_dict()["verdict"] is None
    assert rope.delta is not None
    assert notes(rows) == [f"position=rope vs position=learned: {rope.delta:+.4f}, one seed on "
                           "a side: no interval can be given"]  # fmt: skip
    done = CliRunner().invoke(app, ["compare", str(runs[0]), str(runs[2]), "--baseline",
                                    "position=learned"])  # fmt: skip
    assert done.exit_code == 0 and "no interval can be given" in done.output
    rope_line = next(line for line in done.output.splitlines() if line.startswith("│ rope"))
    assert "no interval" in rope_line  # the verdict cell


def test_a_table_into_a_pipe_or_file_is_never_cut(tmp_path, char_data):
    """Many varied keys make the table far wider than 80 columns: written to a non-terminal it
    keeps every number whole."""
    dirs = []
    for i, (position, norm, act) in enumerate((("learned", "layernorm", "gelu"),
                                               ("rope", "rmsnorm", "relu"))):  # fmt: skip
        out = tmp_path / f"r{i}"
        train(tiny_config(char_data, out, model={"position": position, "norm": norm,
                                                 "activation": act, "bias": True},
                          train={"max_iters": 10, "lr": 2e-3 + i * 1e-3}))  # fmt: skip
        dirs.append(str(out))
    done = CliRunner().invoke(app, ["compare", *dirs, "--baseline", "position=learned"])
    assert done.exit_code == 0, done.output
    assert "…" not in done.output
    lines = done.output.splitlines()
    header = next(line for line in lines if "position" in line and "params" in line)
    assert max(len(line) for line in lines) > 100 and "verdict" in header and "status" in header
    rows = compare([Path(d) for d in dirs], baseline="position=learned")
    for row in rows:
        assert f"{row.mean:.4f}" in done.output and f"{row.runs[0].params:,}" in done.output


def test_the_plot_draws_the_metric_asked_for_and_names_every_dataset(runs, tmp_path, monkeypatch):
    from gptcli import pictures
    from gptcli.study import plots

    drawn = []
    monkeypatch.setattr(pictures, "save", lambda fig, out: drawn.append(fig) or Path(out))
    rows = compare(runs, metric="bpb")
    plots.plot_curves(rows, tmp_path / "p.png", "step", "bpb")
    ax = drawn[-1].axes[0]
    assert ax.get_ylabel().startswith("bits per byte")
    assert "data (char tokenizer" in ax.get_title() and "4 runs" in ax.get_title()
    row = next(r for r in rows if r.name == ax.get_lines()[0].get_label())
    full = row.runs[0].full_eval()
    factor = statistics.fmean(r.full_eval()["bits_per_byte"] / r.full_eval()["loss"]
                              for r in row.runs)  # fmt: skip
    logged = statistics.fmean(r.curve("val_loss")[-1][2] for r in row.runs)
    assert ax.get_lines()[0].get_ydata()[-1] == pytest.approx(logged * factor)
    assert full["bits_per_byte"] / full["loss"] == pytest.approx(factor)
    plots.plot_curves(compare(runs), tmp_path / "q.png", "step", "val_loss")
    assert drawn[-1].axes[0].get_ylabel().startswith("loss (nats/token)")


def test_runs_trained_in_different_precisions_are_said_to_be(runs):
    from gptcli import environment
    from gptcli.study.compare import notes

    rows = compare(runs, baseline="position=learned")
    assert not [line for line in notes(rows) if "precisions" in line]  # all fp32
    # One run (as auto may choose on another model shape) trained in bf16.
    entries = environment.read(runs[2])
    entries[-1]["precision"] = "bf16"
    (runs[2] / environment.FILE).write_text(json.dumps(entries))
    mixed = [line for line in notes(compare(runs, baseline="position=learned"))
             if "precisions" in line]  # fmt: skip
    assert mixed == [
        f"the runs trained in different precisions (bf16: {runs[2].name}; fp32: "
        f"{runs[0].name}, {runs[1].name}, {runs[3].name}), so a difference may be the "
        "precision's: pin train.precision (--set train.precision=bf16) to compare like with like"
    ]
