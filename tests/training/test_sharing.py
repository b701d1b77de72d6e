"""Trainings on the same cores take their share each (training/sharing.py): which processes
count as trainings, the physical cores under the CPUs, the threads and turns decided for 1, 2, 3
of them, the turns' lock, and two real trainings that see each other."""

import fcntl
import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from gptcli import checkpoint
from gptcli.cores import physical_cores, spin_less
from gptcli.training.loop import train
from gptcli.training.sharing import CoreShare, count_trainings, is_training
from gptcli.training.signals import StopSignal

from ..conftest import REPO, tiny_config


@pytest.mark.parametrize("argv, training", [
    (["gptcli", "train", "--config", "c.yaml"], True),
    (["/venv/bin/gptcli", "train"], True),
    # The console script as the kernel lists it: run by the interpreter of its #! line.
    (["/venv/bin/python3", "/venv/bin/gptcli", "train", "--config", "c.yaml"], True),
    (["/usr/bin/python3.11", "-u", "/venv/bin/gptcli", "train"], True),
    (["/venv/bin/python3", "/venv/bin/gptcli", "sample"], False),
    (["/venv/bin/python3", "/venv/bin/torchrun", "--nproc_per_node=2", "-m", "gptcli", "train"],
     False),
    (["/usr/bin/python3", "-m", "gptcli", "train", "--resume"], True),
    (["python", "-u", "-m", "gptcli", "train"], True),  # how torchrun starts each rank
    # The interpreter's options with a value, apart or joined: the value is not the script.
    (["python3", "-X", "dev", "-W", "ignore", "-m", "gptcli", "train"], True),
    (["python3", "-Xdev", "-Wignore", "-mgptcli", "train"], True),
    (["python3", "-X", "importtime", "/venv/bin/gptcli", "train"], True),
    (["python3", "-W", "ignore", "-m", "gptcli", "eval"], False),
    (["python3", "-c", "import gptcli", "train"], False),
    (["python", "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "gptcli", "train"],
     False),  # torchrun's launcher trains nothing itself
    (["gptcli", "sweep", "--vary", "model.position=rope"], False),
    (["python", "-m", "gptcli", "sample"], False),
    (["python", "train.py"], False),
    ([], False),
])  # fmt: skip
def test_which_processes_are_gptcli_trainings(argv, training):
    assert is_training(argv) is training


def test_trainings_are_counted_from_proc_with_this_process_among_them(tmp_path):
    # pids past any pid_max: no real process, so nothing is known of their cores
    fake = {"99999901": b"python\0-m\0gptcli\0train\0--config\0c.yaml\0",
            "99999902": b"gptcli\0sweep\0--grid\0g.yaml\0", "99999903": None,  # gone
            "self": b"gptcli\0train\0", "99999904": b"/venv/bin/gptcli\0train\0",
            "99999905": b"/venv/bin/python3\0/venv/bin/gptcli\0train\0"}  # fmt: skip
    for name, cmdline in fake.items():
        (tmp_path / name).mkdir()
        if cmdline is not None:
            (tmp_path / name / "cmdline").write_bytes(cmdline)
    assert str(os.getpid()) not in fake
    assert count_trainings(tmp_path) == 4  # ...01, ...04, ...05 and this one, not "self"
    assert count_trainings(tmp_path / "missing") == 1


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_training_pinned_to_other_cores_is_not_counted(tmp_path, monkeypatch):
    from gptcli.training import sharing

    (tmp_path / "99999901").mkdir()
    (tmp_path / "99999901" / "cmdline").write_bytes(b"gptcli\0train\0")
    pinned = {os.getpid(): {0}, 99999901: {1}}
    monkeypatch.setattr(sharing, "_cores_of", lambda pid: pinned[pid])
    assert count_trainings(tmp_path) == 1
    pinned[99999901] = {0, 1}
    assert count_trainings(tmp_path) == 2


def test_threads_follow_the_trainings_on_the_cores(threads):
    running = iter([1, 2, 3, 1])
    share = CoreShare(None, cores=2, every=0, count=lambda: next(running), physical=2)
    assert share.update() is None and torch.get_num_threads() == 2  # alone: torch's default
    assert share.update() == "1 CPU thread: 1 other gptcli training shares these 2 cores"
    assert torch.get_num_threads() == 1
    assert share.update() is None  # a third: still 1 thread, so nothing to say
    assert share.describe() == "1 CPU thread: 2 other gptcli trainings share these 2 cores"
    assert share.update() == "2 CPU threads: no other gptcli training shares the cores now"
    assert torch.get_num_threads() == 2


def test_an_asked_thread_count_is_the_most_a_training_takes(threads):
    assert CoreShare(1, cores=8, every=0, count=lambda: 1).share(1) == 1
    assert CoreShare(3, cores=8, every=0, count=lambda: 1).share(2) == 3
    assert CoreShare(3, cores=8, every=0, count=lambda: 1).share(4) == 2
    assert CoreShare(None, cores=2, every=0, count=lambda: 1).share(5) == 1  # never 0


def test_a_training_joins_the_turns_as_soon_as_it_finds_one(threads, tmp_path):
    share = CoreShare(None, cores=2, every=60, count=lambda: 2, physical=1,
                      lock=tmp_path / "cores.lock")  # fmt: skip
    share.update()
    assert share.update() is None  # within the interval: nothing re-decided
    share.met = True
    assert share.update() == (
        "2 CPU threads, a step at a time in turns: 1 other gptcli training shares these 2 cores"
    )
    share.close()


def test_counts_are_made_once_per_interval(threads):
    calls = []
    share = CoreShare(None, cores=2, every=60, count=lambda: calls.append(1) or 2, physical=2)
    share.update()
    share.update()
    assert len(calls) == 1


def test_physical_cores_count_hyperthreads_of_one_core_once(tmp_path):
    def cpu(n, siblings):
        (tmp_path / f"cpu{n}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{n}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")

    cpu(0, "0,2"), cpu(1, "1,3"), cpu(2, "0,2"), cpu(3, "1,3")
    assert physical_cores({0, 1, 2, 3}, tmp_path) == 2
    assert physical_cores({0, 2}, tmp_path) == 1
    assert physical_cores({0, 1}, tmp_path) == 2
    assert physical_cores({0, 5}, tmp_path) == 2  # cpu5 unknown: every CPU a core


@pytest.mark.parametrize("siblings, environ, spin", [
    (["0-1", "0-1"], {}, "30000"),  # two hyperthreads of one core: idle threads spin less
    (["0", "1"], {}, None),  # a core each: libgomp's default
    (["0-1", "0-1"], {"GOMP_SPINCOUNT": "5"}, "5"),  # the user's own setting wins
    (["0-1", "0-1"], {"OMP_WAIT_POLICY": "ACTIVE"}, None),
])  # fmt: skip
def test_openmp_threads_spin_less_where_trainings_may_take_turns(
    tmp_path, monkeypatch, siblings, environ, spin
):
    from gptcli import cores

    for n, listed in enumerate(siblings):
        (tmp_path / f"cpu{n}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{n}" / "topology" / "thread_siblings_list").write_text(listed + "\n")
    monkeypatch.setattr(cores, "my_cpus", lambda: {0, 1})
    before = dict(environ)
    assert spin_less(environ, tmp_path) is (spin is not None and "GOMP_SPINCOUNT" not in before)
    assert environ.get("GOMP_SPINCOUNT") == spin


def test_gptcli_train_sets_the_spin_count_before_torch_loads():
    script = """
import os, sys
from gptcli import cores
cores.physical_cores = lambda cpus, root=None: 1  # as on hyperthreads
loaded = []
spin_less = cores.spin_less
cores.spin_less = lambda: loaded.append("torch" in sys.modules) or spin_less()
sys.argv = ["gptcli", "train", "--help"]
from gptcli.cli import main
try:
    main()
except SystemExit:
    pass
print("torch loaded first:", loaded, "spin:", os.environ.get("GOMP_SPINCOUNT"))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=120).stdout  # fmt: skip
    assert "torch loaded first: [False] spin: 30000" in out, out[-2000:]


def decided(trainings, lock, **kw):
    """(a step at a time in turns, threads) once another training was seen taking turns."""
    share = CoreShare(kw.pop("requested", None), every=0, count=lambda: trainings, lock=lock, **kw)
    share.update()
    share.met = True  # as when a step found the lock held
    share.update()
    return share.in_turns, share.threads


@pytest.mark.parametrize("mode, cores, physical, trainings, requested, expected", [
    ("auto", 2, 2, 2, None, (False, 1)),  # a core each
    ("auto", 2, 2, 3, None, (False, 1)),  # more trainings than cores: the kernel time-slices
    ("auto", 2, 1, 2, None, (True, 2)),  # two hyperthreads of one core: turns
    ("auto", 2, 1, 1, None, (False, 2)),  # alone: nothing to share
    ("auto", 2, 1, 2, 1, (False, 1)),  # asked for one thread: keeps it
    ("auto", 4, 2, 2, None, (False, 2)),  # 2 cores x 2 hyperthreads, two trainings: a core each
    ("auto", 4, 2, 3, None, (True, 2)),  # three on two cores' hyperthreads: turns
    ("threads", 2, 1, 2, None, (False, 1)),
    ("turns", 2, 2, 2, None, (True, 2)),
    ("turns", 2, 2, 1, None, (False, 2)),
])  # fmt: skip
def test_trainings_take_turns_where_they_outnumber_physical_cores(
    threads, tmp_path, mode, cores, physical, trainings, requested, expected
):
    torch.set_num_threads(min(cores, 2))  # a lone run's default: every core (2 is enough here)
    lock = tmp_path / "cores.lock"
    got = decided(trainings, lock, mode=mode, cores=cores, physical=physical, requested=requested)
    assert got == (expected[0], min(expected[1], torch.get_num_threads()))


def test_a_training_takes_a_lone_runs_threads_only_once_another_takes_turns(threads, tmp_path):
    share = CoreShare(None, cores=2, every=0, count=lambda: 2, physical=1,
                      lock=tmp_path / "cores.lock")  # fmt: skip
    # Nobody else seen taking turns (the other may run with threads): a thread share each.
    assert share.update() == "1 CPU thread: 1 other gptcli training shares these 2 cores"
    assert share.turns and not share.in_turns
    with share.turn():
        pass  # the lock was free
    assert share.update() is None and torch.get_num_threads() == 1
    share.met = True
    assert share.update() == (
        "2 CPU threads, a step at a time in turns: 1 other gptcli training shares these 2 cores"
    )
    assert torch.get_num_threads() == 2
    assert share.update() == "1 CPU thread: 1 other gptcli training shares these 2 cores"
    share.close()


def test_a_lock_that_cannot_be_opened_leaves_threads(threads, tmp_path):
    (tmp_path / "cores.lock").symlink_to(tmp_path / "elsewhere")  # planted: not followed
    assert decided(2, tmp_path / "cores.lock", cores=2, physical=1) == (False, 1)
    assert not (tmp_path / "elsewhere").exists()
    (tmp_path / "dir.lock").mkdir()  # not a regular file
    assert decided(2, tmp_path / "dir.lock", cores=2, physical=1) == (False, 1)


def test_a_turn_waits_for_the_other_trainings_turn_to_end(threads, tmp_path):
    mine, theirs = (CoreShare(None, cores=2, every=0, count=lambda: 2, mode="turns",
                              lock=tmp_path / "cores.lock") for _ in range(2))  # fmt: skip
    mine.update(), theirs.update()
    holding, release, entered = threading.Event(), threading.Event(), threading.Event()

    def their_step():
        with theirs.turn():
            holding.set()
            release.wait(10)

    def my_step():
        holding.wait(10)
        with mine.turn():
            entered.set()

    workers = [threading.Thread(target=their_step), threading.Thread(target=my_step)]
    for worker in workers:
        worker.start()
    assert holding.wait(10)
    assert not entered.wait(0.3)  # their step holds the cores
    release.set()
    assert entered.wait(10)  # and mine runs once it ends
    for worker in workers:
        worker.join(10)
    assert mine.met and not theirs.met  # mine found theirs taking its turn


@pytest.fixture
def sigterm_caught():
    """SIGTERM recorded, not fatal, around a test that sends it: one that lands after the loop's
    handler is gone (the test failed early) must fail that test, not end the whole session."""
    stray = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stray.append(signum))
    yield stray
    signal.signal(signal.SIGTERM, previous)


def test_a_stop_signal_ends_the_wait_for_a_turn(threads, tmp_path, sigterm_caught):
    # Python retries a wait that a signal interrupts once the handler returns: without the
    # stop, a training would wait on a holder that never lets go (suspended with Ctrl-Z).
    lock = tmp_path / "cores.lock"
    share = CoreShare(None, cores=2, every=0, count=lambda: 2, mode="turns", lock=lock)
    share.update()
    with open(lock) as theirs:
        fcntl.flock(theirs, fcntl.LOCK_EX)  # their turn, and it does not end
        stop_it = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
        let_go = threading.Timer(10, fcntl.flock, (theirs, fcntl.LOCK_UN))  # fail, not hang
        with StopSignal(escalate=False) as stop:
            assert signal.getsignal(signal.SIGTERM) == stop._handle
            stop_it.start(), let_go.start()
            start = time.monotonic()
            try:
                with share.turn(stop):
                    waited = time.monotonic() - start
            finally:
                stop_it.cancel(), let_go.cancel()
                stop_it.join()
        assert stop.signum == signal.SIGTERM and 0.2 < waited < 5 and not sigterm_caught
        with open(lock) as again, pytest.raises(BlockingIOError):  # theirs still: the step
            fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ran beside their turn
    share.close()


def test_a_training_waiting_for_its_turn_stops_at_a_signal(tmp_path, char_data, monkeypatch,
                                                            sigterm_caught):  # fmt: skip
    from gptcli.training import loop

    lock, run = tmp_path / "cores.lock", tmp_path / "run"
    monkeypatch.setattr(loop, "CoreShare", functools.partial(CoreShare, count=lambda: 2,
                                                             lock=lock))  # fmt: skip
    times, returned = {}, threading.Event()

    def stepped() -> bool:  # a step done: the loop's handlers are in place
        metrics = run / "metrics.jsonl"
        return metrics.exists() and '"loss"' in metrics.read_text()

    def another_training():  # takes the cores between two steps and keeps them
        while not stepped():
            if returned.wait(0.05):
                return  # the training ended (failed) before a step
        with open(lock, "a") as theirs:
            fcntl.flock(theirs, fcntl.LOCK_EX)
            time.sleep(0.5)  # the run's next step finds the cores taken and waits
            os.kill(os.getpid(), signal.SIGTERM)
            returned.wait(60)
            times["released"] = time.monotonic()

    cfg = tiny_config(char_data, run, train={"max_iters": 10**6, "eval_interval": 10**6,
                                             "log_interval": 1, "final_eval": False,
                                             "share_cores": "turns"})  # fmt: skip
    helper = threading.Thread(target=another_training, daemon=True)
    helper.start()
    try:
        result = train(cfg)
        times["returned"] = time.monotonic()
    finally:
        returned.set()
        helper.join(60)
    assert times["returned"] < times["released"]  # it did not wait for the other's turn to end
    assert result.interrupted == signal.SIGTERM and result.checkpoint is not None
    assert checkpoint.load(run, "latest").step == result.step and not sigterm_caught


@pytest.mark.slow
@pytest.mark.alone  # another worker's trainings would change the counts it waits to see
@pytest.mark.parametrize("mode, said", [
    ("threads", r"1 CPU thread: \d+ other gptcli trainings? shares? these"),
    ("turns", r"\d CPU threads?, a step at a time in turns: \d+ other gptcli trainings? shares?"),
])  # fmt: skip
def test_two_trainings_started_by_hand_share_the_cores(tmp_path, char_data, mode, said):
    # The first as a user types it: the console script, which the kernel lists as run by the
    # interpreter of its #! line; the second as sweeps and torchrun start one.
    script = Path(sys.executable).with_name("gptcli")
    assert script.is_file(), "make install puts gptcli's console script beside the interpreter"
    launch = {"first": [str(script)], "second": [sys.executable, "-m", "gptcli"]}

    def start(name):
        cfg = tiny_config(char_data, tmp_path / name, train={
            "max_iters": 100000, "eval_interval": 100000, "log_interval": 50,
            "final_eval": False, "share_cores": mode})  # fmt: skip
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (the process holds it)
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # every core
        return subprocess.Popen([*launch[name], "train", "--config", str(config)], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    def wait_for(name, pattern, seconds):
        deadline = time.time() + seconds
        while True:
            text = " ".join((tmp_path / f"{name}.log").read_text().replace("│", " ").split())
            if re.search(pattern, text):
                return
            assert time.time() < deadline, text[-2000:]
            time.sleep(0.2)

    trainings = [start("first")]
    try:
        wait_for("first", "step 50/", 60)
        trainings.append(start("second"))
        wait_for("second", said, 60)  # in its summary, as it starts
        wait_for("first", "note: " + said, 20)  # the first re-counts every 5 s
        # And both go on, in turns or side by side.
        records = (tmp_path / "first" / "metrics.jsonl").read_text().count("\n")
        wait_for("second", "step 100/", 60)
        deadline = time.time() + 60
        while (tmp_path / "first" / "metrics.jsonl").read_text().count("\n") <= records:
            assert time.time() < deadline and trainings[0].poll() is None
            time.sleep(0.2)
    finally:
        for training in trainings:
            training.terminate()  # SIGTERM: CI may start the tests with SIGINT ignored
            try:
                training.wait(timeout=60)
            except subprocess.TimeoutExpired:
                training.kill()
