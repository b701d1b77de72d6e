"""One process per run directory: train, resume, eval and sweep hold it; a second process is
refused at once, naming the holder; a holder killed with SIGKILL never blocks the next run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from gptcli.checkpoint import lock
from gptcli.cli import app
from gptcli.errors import GptcliError
from gptcli.study.grid import Grid
from gptcli.study.sweep import Sweep
from gptcli.training.loop import train

from ..conftest import REPO, tiny_config
from ..helpers import base_config

runner = CliRunner()

HOLDER = (
    "import sys, time; from gptcli.checkpoint import lock\n"
    "with lock.hold(sys.argv[1]):\n"
    "    print('held', flush=True); time.sleep(120)\n"
)


def start_holder(directory):
    """Another process (as a training would) holding directory; returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(directory)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lock_is_reentrant_in_its_process_and_released_after(tmp_path):
    with lock.hold(tmp_path / "d"):
        with lock.hold(tmp_path / "d"):  # train's own final evaluation writes eval.json here
            pass
        assert lock.holder_of(tmp_path / "d") is None  # a process never blocks itself
    assert lock.holder_of(tmp_path / "d") is None


@pytest.mark.slow
def test_a_second_process_is_refused_and_a_killed_holder_never_blocks(tmp_path, char_data):
    run = tmp_path / "run"
    cfg = tiny_config(char_data, run, train={"max_iters": 2, "eval_interval": 2})
    holder = start_holder(run)
    try:
        assert lock.holder_of(run) == f"process {holder.pid} (-c {run})"
        with pytest.raises(GptcliError, match=rf"is in use by process {holder.pid}"):
            train(cfg)
        assert not (run / "metrics.jsonl").exists()  # nothing written
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.holder_of(run) is None  # the kernel dropped the dead process's lock
    assert train(cfg).steps == 2


@pytest.mark.slow
def test_train_resume_and_eval_are_refused_while_a_training_runs(tmp_path, char_data):
    run = tmp_path / "run"
    cfg = tiny_config(char_data, run, train={"max_iters": 4, "eval_interval": 2})
    train(cfg)
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(cfg.to_dict()))  # JSON is YAML
    first = subprocess.Popen(
        [sys.executable, "-m", "gptcli", "train", "--config", str(config), "--resume",
         "--set", "train.max_iters=100000", "--set", "train.eval_interval=1000"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while lock.holder_of(run) is None and time.time() < deadline:
            time.sleep(0.1)
        assert lock.holder_of(run) is not None
        for args in (
            ["train", "--config", str(config), "--force"],
            ["train", "--config", str(config), "--resume"],
            ["eval", "--checkpoint", str(run)],
        ):
            started = time.time()
            done = subprocess.run([sys.executable, "-m", "gptcli", *args], cwd=REPO,
                                  capture_output=True, text=True, timeout=60)  # fmt: skip
            assert done.returncode == 2, (args, done.stderr)
            assert done.stderr.count("\n") == 1, done.stderr
            assert f"is in use by process {first.pid} (gptcli train" in done.stderr
            assert time.time() - started < 20  # refused at once, not after training
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # One writer at a time: the log's steps only ever grow (the killed run's last records end
    # it, and the refused processes added none).
    steps = [r["step"] for r in map(json.loads, (run / "metrics.jsonl").open()) if "loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    done = runner.invoke(app, ["train", "--config", str(config), "--resume",
                               "--set", "train.max_iters=6"])  # fmt: skip
    assert done.exit_code == 0, done.output


@pytest.mark.slow
def test_a_sweep_skips_a_run_another_process_holds(tmp_path, char_data):
    grid = Grid(base_config(tmp_path, char_data), tmp_path / "s", [],
                {"model.position": ["learned", "rope"]})  # fmt: skip
    sweep = Sweep(grid, jobs=1)
    busy = next(s for s in sweep.states if s.name == "position=rope")
    holder = start_holder(busy.dir)
    try:
        assert sweep.run() == 0  # a busy run is skipped, not failed
        by_name = {s.name: s for s in sweep.states}
        assert by_name["position=learned"].status == "done"
        assert by_name["position=rope"].status == "busy"
        assert f"in use by process {holder.pid}" in by_name["position=rope"].error
        # A second sweep of the same directory while one runs: refused at once.
        other = start_holder(grid.out)
        try:
            args = ["sweep", "--config", str(grid.config), "--out", str(grid.out),
                    "--vary", "model.position=learned,rope"]  # fmt: skip
            done = runner.invoke(app, args)
            assert done.exit_code == 2 and "is in use by process" in done.output
        finally:
            other.send_signal(signal.SIGKILL)
            other.wait()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert Sweep(grid, jobs=1).run() == 0  # once free, the next sweep trains it
    assert os.path.exists(os.path.join(busy.dir, "checkpoints.json"))


def test_a_directory_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(GptcliError, match="cannot write in .*; pick a directory"), lock.hold(
        blocker / "run"
    ):
        pass


def test_a_run_refused_before_it_wrote_anything_leaves_no_directory(tmp_path, char_data):
    # What hold made (the run directory and missing parents) goes when the block fails with
    # nothing but the lock inside; what was there before, or holds anything else, stays.
    base = tmp_path / "t"
    kept = base / "kept"
    kept.mkdir(parents=True)
    for made, inside in [(base / "new" / "deeper" / "run", None), (kept, None),
                         (base / "written", "metrics.jsonl")]:  # fmt: skip
        with pytest.raises(GptcliError, match="refused"), lock.hold(made):
            if inside:
                (made / inside).write_text("{}\n")
            raise GptcliError("refused")
    assert sorted(p.name for p in base.iterdir()) == ["kept", "written"]
    assert [p.name for p in kept.iterdir()] == [".lock"]
    with lock.hold(base / "fine"):
        pass
    assert (base / "fine" / ".lock").is_file()  # a block that ends well keeps its directory
    # As a user meets it: a resume with nothing to resume, a dataset that is not there.
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(tiny_config(char_data, tmp_path / "x").to_dict()))
    for args in (["--out", tmp_path / "out" / "none", "--resume"],
                 ["--out", tmp_path / "out" / "nodata", "--set", f"data.dir={tmp_path}/no"]):
        done = runner.invoke(app, ["train", "--config", str(config), *map(str, args)])
        assert done.exit_code == 2, done.output
    assert not (tmp_path / "out").exists()


def test_a_parent_that_cannot_be_looked_at_is_never_unmade(tmp_path, monkeypatch):
    # stat raising EACCES (not root, a 0700 parent) means "cannot tell": taken as there.
    real = os.stat

    def stat(path, *args, **kwargs):
        if str(path) == str(tmp_path / "secret"):
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(lock.os, "stat", stat)
    assert lock._first_missing(tmp_path / "secret" / "run") == tmp_path / "secret" / "run"
    assert lock._first_missing(tmp_path / "secret") is None


def test_a_lock_on_a_file_removed_meanwhile_is_not_held(tmp_path):
    # A refused run may remove its lock file between another's open and flock: that flock is
    # on a file nobody else opens, so _acquire starts again.
    path = tmp_path / lock.LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        assert lock._same_file(fd, path)
        path.unlink()
        assert not lock._same_file(fd, path)
        path.touch()
        assert not lock._same_file(fd, path)
    finally:
        os.close(fd)
