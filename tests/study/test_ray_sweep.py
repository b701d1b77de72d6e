"""`gptcli sweep --backend ray` against a real Ray cluster on this machine: a head started with
`ray start --head` on the loopback address (no network), 2 CPUs, reached with --address as a
user reaches a real cluster. Tiny models, a few steps each."""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gptcli.cli import app
from gptcli.study.launchers import finished_step

from ..conftest import REPO
from ..helpers import base_config, statuses

runner = CliRunner()
TIMED = {"time", "tokens_per_sec", "mfu"}  # differ between any two runs


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs; every Ray client in this process and its children
    uses the loopback address and the head's token while the module runs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        # Ray swaps 127.0.0.1 for the machine's outward address unless clusters are "off"
        # (its setting for laptops): this keeps every connection on the loopback address.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit
    ray_cli = Path(sys.executable).parent / "ray"
    log = open(Path(temp) / "head.log", "wb")  # noqa: SIM115 (closed below)
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={temp}"],
        env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # As a head started by a script's `ray start ... &` is: its workers inherit SIGINT
        # ignored, so the sweep's Ctrl-C must reach the runs without relying on it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    monkeypatch = pytest.MonkeyPatch()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        deadline = time.time() + 120
        while b"will now block" not in (Path(temp) / "head.log").read_bytes():
            assert head.poll() is None, (Path(temp) / "head.log").read_text()
            assert time.time() < deadline, "the Ray head did not start in 120 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        monkeypatch.undo()
        head.terminate()  # `ray start` alone: it drains the node and stops what it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):  # whatever outlived it
            os.killpg(head.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def losses(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMED}
            for line in run.joinpath("metrics.jsonl").open()]  # fmt: skip


def gptcli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A whole process, as a user runs it: Ray reads some of its settings once, at import."""
    return subprocess.run([sys.executable, "-m", "gptcli", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout)  # fmt: skip


def started_sweep(config, out, cluster, *extra) -> subprocess.Popen:
    """A ray sweep left running, to be stopped or harmed while it trains."""
    args = sweep_args(config, out, "--backend", "ray", "--address", cluster, *extra)
    command = [sys.executable, "-m", "gptcli", *args]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def sweep_args(config, out, *extra):
    return [str(a) for a in ["sweep", "--config", config, "--out", out, *extra]]


def test_without_ray_it_says_what_to_install_before_anything_starts(tmp_path, char_data,
                                                                     monkeypatch):  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "s"
    done = runner.invoke(app, sweep_args(base_config(tmp_path, char_data), out, "--backend",
                                         "ray", "--vary", "model.position=rope"))  # fmt: skip
    assert done.exit_code == 2
    assert done.output.strip() == "error: --backend ray needs Ray: pip install 'gptcli[ray]'"
    assert not out.exists()


def test_options_of_one_backend_are_refused_on_the_other(tmp_path, char_data):
    config = base_config(tmp_path, char_data)
    for extra in (["--address", "auto"], ["--cpus-per-run", "1"], ["--backend", "slurm"]):
        done = runner.invoke(app, sweep_args(config, tmp_path / "s", *extra, "--vary",
                                             "model.position=rope"))  # fmt: skip
        assert done.exit_code == 2 and done.output.count("\n") == 1, done.output
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_an_address_where_no_cluster_listens_is_one_line_at_once(tmp_path, char_data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens on it once closed
    started = time.time()
    done = runner.invoke(app, sweep_args(base_config(tmp_path, char_data), tmp_path / "s",
                                         "--backend", "ray", "--address", f"127.0.0.1:{port}",
                                         "--vary", "model.position=rope"))  # fmt: skip
    assert done.exit_code == 2 and time.time() - started < 30
    assert done.output.startswith(f"error: cannot reach a Ray cluster at 127.0.0.1:{port}")
    assert done.output.count("\n") == 1 and not (tmp_path / "s").exists()


@pytest.mark.slow
def test_more_cpus_per_run_than_any_node_has_is_refused(tmp_path, char_data, cluster):
    done = gptcli(*sweep_args(base_config(tmp_path, char_data), tmp_path / "s", "--backend",
                              "ray", "--address", cluster, "--cpus-per-run", "3", "--vary",
                              "model.position=rope"))  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: --cpus-per-run 3: no Ray node has that many CPUs "
                                  "(the largest has 2)")  # fmt: skip
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_a_grid_on_ray_trains_as_the_local_backend_and_a_finished_grid_is_skipped(
    tmp_path, char_data, cluster
):
    config = base_config(tmp_path, char_data)
    grid = ["--vary", "model.position=learned,rope", "--seeds", "1,2"]
    local = runner.invoke(app, sweep_args(config, tmp_path / "local", "--jobs", "2", *grid))
    assert local.exit_code == 0, local.output
    ray_args = sweep_args(config, tmp_path / "ray", "--backend", "ray", "--address", cluster,
                          "--cpus-per-run", "1", *grid)  # fmt: skip
    done = gptcli(*ray_args)
    assert done.returncode == 0, done.stderr
    assert "Ray tasks of 1 CPU, 2 at a time" in done.stdout  # the head's 2 CPUs, 1 a run
    sweep = json.loads((tmp_path / "ray" / "sweep.json").read_text())
    assert sweep["backend"] == "ray" and set(statuses(tmp_path / "ray").values()) == {"done"}
    names = sorted(statuses(tmp_path / "local"))
    assert sorted(statuses(tmp_path / "ray")) == names and len(names) == 4
    for name in names:  # same threads (1 a run), same seeds: the same numbers at every step
        assert losses(tmp_path / "ray" / name) == losses(tmp_path / "local" / name), name
    logs = {name: (tmp_path / "ray" / name / "train.log").read_bytes() for name in names}
    again = gptcli(*ray_args)
    assert again.returncode == 0, again.stderr
    assert {n: (tmp_path / "ray" / n / "train.log").read_bytes() for n in names} == logs


@pytest.mark.slow
def test_a_failing_run_is_isolated_and_retried_by_the_next_sweep(tmp_path, char_data, cluster):
    config = base_config(tmp_path, char_data)
    out = tmp_path / "s"
    args = sweep_args(config, out, "--backend", "ray", "--address", cluster, "--cpus-per-run",
                      "1", "--vary", "train.lr=0.001,1.0e9")  # fmt: skip
    done = gptcli(*args)
    assert done.returncode == 1, done.stderr
    assert statuses(out) == {"lr=0.001": "done", "lr=1.0e9": "failed"}
    assert "failed: lr=1.0e9:" in done.stderr and "became nan" in done.stderr
    finished = (out / "lr=0.001" / "train.log").read_text()
    again = gptcli(*args)
    assert again.returncode == 1 and "became nan" in again.stderr
    assert len(_starts(out / "lr=1.0e9")) == 2  # the failed run was tried again
    assert (out / "lr=0.001" / "train.log").read_text() == finished  # the finished one was not


@pytest.mark.slow
def test_a_run_whose_ray_worker_dies_is_run_again_and_resumes(tmp_path, char_data, cluster):
    out = tmp_path / "s"
    sweep = started_sweep(base_config(tmp_path, char_data), out, cluster, "--vary",
                          "model.position=rope", "--set", "train.max_iters=300", "--set",
                          "train.eval_interval=20")  # fmt: skip
    run = out / "position=rope"
    deadline = time.time() + 90
    while finished_step(run) is None and time.time() < deadline:
        time.sleep(0.1)
    training = _training_pid(run)
    worker = int(Path(f"/proc/{training}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(worker, signal.SIGKILL)  # as when a node goes: Ray runs the task again
    _, err = sweep.communicate(timeout=180)
    assert sweep.returncode == 0, err
    assert statuses(out) == {"position=rope": "done"} and finished_step(run) == 300
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
    assert steps.count(0) == 1 and steps[-1] == 300  # resumed, not restarted
    assert len(_starts(run)) == 2  # its first process, killed with the worker, and the retry


@pytest.mark.slow
def test_ctrl_c_lets_every_ray_task_save_its_checkpoint(tmp_path, char_data, cluster):
    out = tmp_path / "s"
    sweep = started_sweep(base_config(tmp_path, char_data), out, cluster, "--cpus-per-run", "1",
                          "--vary", "model.position=rope,alibi", "--set", "train.max_iters=100000",
                          "--set", "train.eval_interval=100000")  # fmt: skip
    logs = [out / name / "metrics.jsonl" for name in ("position=rope", "position=alibi")]
    deadline = time.time() + 120
    while not all(p.is_file() and p.stat().st_size for p in logs) and time.time() < deadline:
        time.sleep(0.1)
    assert all(p.is_file() for p in logs), _ended(sweep, out, "both runs did not start in 120 s")
    sweep.send_signal(signal.SIGINT)
    try:
        _, err = sweep.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(_ended(sweep, out, "the sweep did not stop within 120 s of Ctrl-C"))
    assert sweep.returncode == 130, err
    assert "Continue with:" in err
    assert set(statuses(out).values()) == {"interrupted"}
    for name in ("position=rope", "position=alibi"):
        step = finished_step(out / name)  # each training saved where it stopped
        assert step is not None and 0 < step < 100000
    assert not _training_pids(out)  # and none trains on unwatched


@pytest.mark.slow
@pytest.mark.parametrize("hidden", ["out", "data"])
def test_a_sweep_whose_files_the_nodes_cannot_see_is_refused(tmp_path, char_data, cluster,
                                                             hidden):  # fmt: skip
    """The sweep runs in its own mount namespace with a private filesystem over one directory:
    files there are what a driver's local disk is to a real cluster's nodes."""
    if not shutil.which("unshare") or subprocess.run(
        ["unshare", "-m", "true"], capture_output=True
    ).returncode:
        pytest.skip("needs unshare -m (root, util-linux) to hide a directory from the nodes")
    private = tmp_path / "private"
    private.mkdir()
    config = base_config(tmp_path, private / "data" if hidden == "data" else char_data)
    out = private / "s" if hidden == "out" else tmp_path / "s"
    sweep = [sys.executable, "-m", "gptcli", *sweep_args(
        config, out, "--backend", "ray", "--address", cluster, "--vary", "model.position=rope")]
    script = f"mount -t tmpfs none {private} && cp -r {char_data} {private}/data && exec \"$@\""
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *sweep], cwd=REPO,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("error: a Ray task on "), line
    if hidden == "out":
        assert f"does not see the file this sweep wrote in {out}" in line
    else:
        assert f"does not see {private / 'data'}" in line
        assert not (out / "sweep.json").exists() and not (out / ".storage-check").exists()
    assert "storage every node mounts" in line


def _ended(sweep: subprocess.Popen, out: Path, why: str) -> str:
    """Kill a sweep that went wrong and say what it and its runs had written."""
    sweep.kill()
    _, err = sweep.communicate()
    for pid in _training_pids(out):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    tails = {p.parent.name: p.read_text()[-1500:] for p in sorted(out.glob("*/train.log"))}
    state = (out / "sweep.json").read_text() if (out / "sweep.json").is_file() else None
    return f"{why}\nsweep stderr: {err[-2000:]}\nsweep.json: {state}\ntrain.logs: {tails}"


def _starts(run: Path) -> list[str]:
    """Each start of a training in a run's train.log: its summary table's title."""
    return re.findall(r"^training\s*$", (run / "train.log").read_text(), re.MULTILINE)


def _training_pids(under: Path) -> list[int]:
    """The `gptcli train` processes writing under a directory, found through /proc."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in args and any(a.startswith(str(under).encode()) for a in args):
            pids.append(int(proc.name))
    return pids


def _training_pid(run: Path) -> int:
    pids = _training_pids(run)
    assert len(pids) == 1, pids
    return pids[0]
