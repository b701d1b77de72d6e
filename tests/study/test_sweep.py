
"""The sweep end to end through real child processes (tiny models, a few steps each)."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.study.grid import Grid
from gptcli.study.sweep import Sweep, finished_step

from ..conftest import REPO
from ..helpers import base_config, statuses

runner = CliRunner()


@pytest.mark.slow
def test_sweep_runs_every_combination_and_a_rerun_skips_them(tmp_path, char_data):
    out = tmp_path / "sweep"
    args = ["sweep", "--config", base_config(tmp_path, char_data), "--out", out, "--jobs", "2",
            "--vary", "model.position=learned,alibi", "--seeds", "1,2"]  # fmt: skip
    done = runner.invoke(app, [str(a) for a in args])
    assert done.exit_code == 0, done.output
    assert set(statuses(out).values()) == {"done"} and len(statuses(out)) == 4
    run = out / "position=alibi,seed=2"
    assert finished_step(run) == 6 and (run / "train.log").is_file()
    before = (run / "metrics.jsonl").read_text()
    again = runner.invoke(app, [str(a) for a in args])
    assert again.exit_code == 0 and (run / "metrics.jsonl").read_text() == before


@pytest.mark.slow
def test_a_failing_run_is_marked_with_its_error_and_the_others_finish(tmp_path, char_data):
    grid = Grid(base_config(tmp_path, char_data), tmp_path / "s", [],
                {"train.lr": [0.001, 1.0e9]})  # fmt: skip
    sweep = Sweep(grid, jobs=2)
    assert sweep.run() == 1
    by_name = {s.name: s for s in sweep.states}
    assert by_name["lr=0.001"].status == "done"
    bad = by_name["lr=1000000000.0"]
    assert bad.status == "failed" and "became nan" in bad.error


@pytest.mark.slow
def test_a_killed_child_is_failed_then_resumed_by_the_next_sweep(tmp_path, char_data):
    config = base_config(tmp_path, char_data)
    out = tmp_path / "s"
    command = [sys.executable, "-m", "gptcli", "sweep", "--config", str(config), "--vary",
               "model.position=rope", "--set", "train.max_iters=400", "--set",
               "train.eval_interval=20", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    run = out / "position=rope"
    deadline = time.time() + 60
    while finished_step(run) is None and time.time() < deadline:
        time.sleep(0.1)
    pid = json.loads((out / "sweep.json").read_text())["runs"][0]["pid"]
    os.kill(pid, signal.SIGKILL)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 1, err
    assert statuses(out) == {"position=rope": "failed"} and "killed by SIGKILL" in err
    killed_at = finished_step(run)
    assert killed_at < 400
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert statuses(out) == {"position=rope": "done"} and finished_step(run) == 400
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
    assert steps[0] == 0 and killed_at in steps and steps.count(0) == 1  # resumed, not restarted


@pytest.mark.slow
def test_ctrl_c_stops_every_child_with_a_checkpoint_and_says_how_to_continue(tmp_path, char_data):
    config = base_config(tmp_path, char_data)
    out = tmp_path / "s"
    command = [sys.executable, "-m", "gptcli", "sweep", "--config", str(config), "--vary",
               "model.position=rope,alibi", "--jobs", "2", "--set", "train.max_iters=100000",
               "--set", "train.eval_interval=100000", "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    logs = [out / name / "metrics.jsonl" for name in ("position=rope", "position=alibi")]
    deadline = time.time() + 60
    while not all(p.is_file() and p.stat().st_size for p in logs) and time.time() < deadline:
        time.sleep(0.1)
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, err
    # `python -m gptcli` started it; the user types gptcli, and --jobs 2 again.
    assert f"Continue with: gptcli sweep --config {config} " in err and "--jobs 2" in err
    assert set(statuses(out).values()) == {"interrupted"}
    for name in ("position=rope", "position=alibi"):
        step = finished_step(out / name)  # each child saved where it stopped
        assert step is not None and 0 < step < 100000


@pytest.mark.slow
def test_jobs_go_to_the_least_busy_gpu_and_a_rerun_keeps_the_seconds(tmp_path, char_data,
                                                                       monkeypatch):  # fmt: skip
    from gptcli.study import launchers
    from gptcli.study import sweep as sweep_module

    monkeypatch.setattr(launchers, "_gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    grid = Grid(base_config(tmp_path, char_data), tmp_path / "s", [],
                {"model.position": ["learned", "rope", "alibi"]})  # fmt: skip
    sweep = Sweep(grid, jobs=2)
    started = []

    class FakeProcess:
        def __init__(self, command, env, **kwargs):
            started.append(env["CUDA_VISIBLE_DEVICES"])
            self.pid, self.polls = 1, 0

        def poll(self):
            self.polls += 1
            return 0 if self.polls > 1 else None

    monkeypatch.setattr(launchers.subprocess, "Popen", FakeProcess)
    assert sweep.run() == 0
    assert started[:2] == ["4", "6"] and started[2] in ("4", "6")  # never a third, busy one
    seconds = {s.name: s.seconds for s in sweep.states}
    for name in seconds:  # what the fake children would have left: a checkpoint each
        (tmp_path / "s" / name).mkdir(parents=True, exist_ok=True)
    monkeypatch.setattr(sweep_module, "finished_step", lambda run_dir: 1)
    again = Sweep(grid, jobs=2)
    assert {s.name: s.seconds for s in again.states} == seconds
    monkeypatch.setattr(sweep_module, "finished_step", lambda run_dir: None)  # emptied dirs
    assert all(s.seconds is None for s in Sweep(grid, jobs=2).states)


def test_a_failure_reports_this_attempt_s_error_not_an_older_one(tmp_path):
    from gptcli.study.sweep import _error_line

    log = tmp_path / "train.log"
    log.write_text("error: an old failure\n")
    start = log.stat().st_size
    with open(log, "a") as f:
        f.write("Traceback...\nRuntimeError: out of memory\n")
    assert _error_line(tmp_path, 1, start) == "exit code 1: RuntimeError: out of memory"
    assert _error_line(tmp_path, 1) == "an old failure"


@pytest.mark.slow
def test_sizes_and_budgets_run_to_their_budgets_and_compare_names_them(tmp_path, char_data):
    import yaml

    out = tmp_path / "sweep"
    grid = {"config": str(base_config(tmp_path, char_data)), "out": str(out),
            "sizes": {"s": {"model.n_layer": 1, "model.n_embd": 16},
                      "m": {"model.n_layer": 2, "model.n_embd": 32}},
            "budgets": [1.0e7, 2.0e7], "seeds": [1]}  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    done = runner.invoke(app, ["sweep", "--grid", str(path), "--jobs", "2"])
    assert done.exit_code == 0, done.output
    assert set(statuses(out).values()) == {"done"} and len(statuses(out)) == 4
    rows = json.loads(runner.invoke(app, ["compare", str(out), "--format", "json"]).output)
    # Rows are named by the size and the budget, not by the keys the size moved or the
    # lengths the budgets decided; each spent its budget (to within one step).
    assert sorted(r["name"] for r in rows) == [
        "size=m,flops_budget=10000000.0", "size=m,flops_budget=20000000.0",
        "size=s,flops_budget=10000000.0", "size=s,flops_budget=20000000.0"]  # fmt: skip
    for row in rows:
        budget = row["overrides"]["train.flops_budget"]
        assert budget <= row["train_flops"] < 1.5 * budget


@pytest.mark.slow
def test_compare_fits_a_scaling_law_over_sizes_and_budgets(tmp_path, char_data):
    import yaml

    out = tmp_path / "sweep"
    grid = {"config": str(base_config(tmp_path, char_data)), "out": str(out),
            "set": {"train.eval_interval": 1000},
            "sizes": {"s": {"model.n_layer": 1, "model.n_head": 2, "model.n_embd": 16},
                      "m": {"model.n_layer": 1, "model.n_head": 4, "model.n_embd": 32}},
            "ladder": [{"name": "mha"}, {"name": "mqa", "set": {"model.n_kv_head": 1}}],
            # Both sizes at one budget only (a frontier to choose), one elsewhere: 10 runs, not 16.
            "budgets": [{"flops": 1.0e7, "sizes": ["s"]}, {"flops": 2.0e7, "sizes": ["s", "m"]},
                        {"flops": 4.0e7, "sizes": ["m"]}, {"flops": 8.0e7, "sizes": ["m"]}],
            "seeds": [1]}  # fmt: skip
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    assert runner.invoke(app, ["sweep", "--grid", str(path), "--jobs", "2"]).exit_code == 0
    done = runner.invoke(app, ["compare", str(out), "--fit", "--at", "1e9", "--format", "json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.output)
    # Sizes and budgets are points of each rung's one variant, though MHA's key/value heads
    # (one per head) differ between its sizes.
    variants = {v["name"]: v for v in result["variants"]}
    assert set(variants) == {"rung=0-mha", "rung=1-mqa"}
    variant = variants["rung=0-mha"]
    # Fitted to the frontier: each budget's better size, 4 of the 5 runs.
    assert (variant["points"], variant["runs"]) == (4, 5) and variant["flops_range"][0] >= 1.0e7
    # The intervals' coverage is tested on planted laws (test_fits.py); 4 points of a real
    # study can put an estimate on a bound, where a percentile interval may miss it by a hair.
    for key in ("E", "A", "alpha"):
        low, high = variant[key]["ci95"]
        assert 0 <= low <= high and math.isfinite(variant[key]["value"])
    assert variant["at"]["flops"] == 1e9 and "held_out" in variant
    table = runner.invoke(app, ["compare", str(out), "--fit", "--plot", str(tmp_path / "f.png")])
    assert table.exit_code == 0 and "alpha" in table.output and "at 1e+09" not in table.output
    assert "fits drawn in" in table.output and (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    # The report holds the fit, its held-out check and its picture.
    from gptcli.study.report import build_report

    page = build_report([out], tmp_path / "report.html").path.read_text()
    assert "Scaling: L = E + A C^-α per variant" in page and "held-out error" in page
    assert page.count("data:image/png;base64") >= 2  # the loss curves and the fit
    # Too few runs for three parameters: one line, exit 2.
    runs = [str(out / f"size={s},budget=2e+07,rung=0-mha,seed=1") for s in ("s", "m")]
    few = runner.invoke(app, ["compare", *runs, "--fit"])
    assert few.exit_code == 2 and "at least 4 runs at 3 or more compute budgets" in few.output
    assert len(few.output.strip().splitlines()) == 1


def _no_training(monkeypatch, code: int = 0) -> list[str]:
    """Sweep.run stands in for the trainings and says it was called; the sweeps below test what
    the command prints around them."""
    called: list[str] = []

    def run(self, on_update=lambda states: None):
        called.append("run")
        return code

    monkeypatch.setattr(Sweep, "run", run)
    return called


def test_jobs_0_is_refused_as_a_negative_count_is(tmp_path, char_data, monkeypatch):
    called = _no_training(monkeypatch)
    args = ["sweep", "--config", str(base_config(tmp_path, char_data)), "--vary",
            "model.position=rope", "--out", str(tmp_path / "s")]  # fmt: skip
    for jobs in ("0", "-1"):
        done = runner.invoke(app, [*args, "--jobs", jobs])
        assert done.exit_code == 2 and not called
        assert done.output == f"error: --jobs must be at least 1, got {jobs}\n"
    assert runner.invoke(app, args).exit_code == 0 and called  # left out: the default, 1


def test_the_table_into_a_pipe_ends_its_line_and_ctrl_c_says_the_gptcli_command(
        tmp_path, char_data, monkeypatch):  # fmt: skip
    _no_training(monkeypatch, code=130)
    config, out = base_config(tmp_path, char_data), tmp_path / "s"
    args = ["sweep", "--config", str(config), "--vary", "model.position=rope,alibi", "--set",
            "train.max_iters=7", "--jobs", "2", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["/somewhere/gptcli/__main__.py", *args])  # python -m
    done = runner.invoke(app, args)
    assert done.exit_code == 130
    last = done.stdout.splitlines()[-1]
    assert done.stdout.endswith("\n") and last.startswith("└") and last.endswith("┘")
    assert "position=alibi" in done.stdout and "pending" in done.stdout
    again = done.stderr.split("Continue with: ")[1].strip()
    assert again == (f"gptcli sweep --config {config} --vary model.position=rope,alibi --set "
                     f"train.max_iters=7 --jobs 2 --out {out}")  # fmt: skip
