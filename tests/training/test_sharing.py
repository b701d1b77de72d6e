"""Trainings on the same cores take their share each (training/sharing.py): which processes
count as trainings, the threads decided for 1, 2, 3 of them, and two real trainings that see
each other."""

import os
import re
import subprocess
import sys
import time

import pytest
import torch
import yaml

from gptcli.training.sharing import CoreShare, count_trainings, is_training

from ..conftest import REPO, tiny_config


@pytest.mark.parametrize("argv, training", [
    (["gptcli", "train", "--config", "c.yaml"], True),
    (["/venv/bin/gptcli", "train"], True),
    (["/usr/bin/python3", "-m", "gptcli", "train", "--resume"], True),
    (["python", "-u", "-m", "gptcli", "train"], True),  # how torchrun starts each rank
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
            "self": b"gptcli\0train\0", "99999904": b"/venv/bin/gptcli\0train\0"}  # fmt: skip
    for name, cmdline in fake.items():
        (tmp_path / name).mkdir()
        if cmdline is not None:
            (tmp_path / name / "cmdline").write_bytes(cmdline)
    assert str(os.getpid()) not in fake
    assert count_trainings(tmp_path) == 3  # ...01, ...04 and this one; "self" is not a pid
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
    share = CoreShare(None, cores=2, every=0, count=lambda: next(running))
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


def test_counts_are_made_once_per_interval(threads):
    calls = []
    share = CoreShare(None, cores=2, every=60, count=lambda: calls.append(1) or 2)
    share.update()
    share.update()
    assert len(calls) == 1


@pytest.mark.slow
def test_two_trainings_started_by_hand_take_a_core_each(tmp_path, char_data):
    def start(name, iters):
        cfg = tiny_config(char_data, tmp_path / name, train={
            "max_iters": iters, "eval_interval": 100000, "log_interval": 50,
            "final_eval": False})  # fmt: skip
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 (the process holds it)
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # every core
        return subprocess.Popen([sys.executable, "-m", "gptcli", "train", "--config",
                                 str(config)], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip

    first = start("first", 100000)
    try:
        deadline = time.time() + 60
        while "step 50/" not in (tmp_path / "first.log").read_text() and time.time() < deadline:
            time.sleep(0.2)
        second = start("second", 3000)
        assert second.wait(timeout=120) == 0
        said = " ".join((tmp_path / "second.log").read_text().replace("│", " ").split())
        assert re.search(r"1 CPU thread: \d+ other gptcli trainings? shares? these", said)
        deadline = time.time() + 20  # the first re-counts every 5 s
        while not re.search(r"note: 1 CPU thread: \d+ other", (tmp_path / "first.log").read_text()):
            assert time.time() < deadline, (tmp_path / "first.log").read_text()[-2000:]
            time.sleep(0.2)
    finally:
        first.terminate()  # SIGTERM: CI may start the tests with SIGINT ignored, as children
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.kill()
