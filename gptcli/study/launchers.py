"""Where a sweep's trainings run. Each run is an ordinary `gptcli train` process writing into its
own run directory; a launcher starts it, says when it has ended and passes Ctrl-C on.

The local launcher runs them as children of the sweep on this machine. `ray_launcher` runs each
as a Ray task on a cluster; both start the process through `start_training` below.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from gptcli import checkpoint
from gptcli.device import available_cores

LOG_FILE = "train.log"


def finished_step(run_dir: Path) -> int | None:
    """The step of a run's latest checkpoint, None when it has none."""
    pointer = checkpoint.read_pointer(run_dir)
    return int(pointer["latest"].split("-")[1]) if pointer else None


def start_training(command: list[str], env: dict[str, str], run_dir: Path) -> subprocess.Popen:
    """Start one run's `gptcli train`, its output appended to RUN/train.log. Decided here, where
    it starts (on a Ray node too): a run with a checkpoint resumes from it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if finished_step(run_dir) is not None:
        command = [*command, "--resume"]  # interrupted or failed before: continue it
    with open(run_dir / LOG_FILE, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=_child_setup)  # fmt: skip


def _child_setup() -> None:
    """In the child before exec (Linux). SIGTERM when its parent dies however it dies, so the
    run saves and stops instead of training on unwatched. And SIGINT and SIGTERM neither
    blocked nor ignored: both survive exec, and the sweep stops its runs with them. (A Ray
    worker blocks SIGINT, and ignores it where its node was started with SIGINT ignored.)"""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


class LocalLauncher:
    """Runs on this machine, `jobs` at once, the CPU threads divided among them, and with
    several GPUs each run on the least busy one."""

    name = "local"

    def __init__(self, jobs: int):
        self.slots = jobs
        self.threads = max(1, available_cores() // jobs)
        self.gpus = _visible_gpus()
        self.gpu_of: dict[str, str] = {}  # running run -> its GPU
        self.running: dict[str, subprocess.Popen] = {}

    def describe(self) -> str:
        return f"{self.slots} at a time"

    def path_overrides(self, config) -> list[str]:
        return []  # the runs start where the sweep does: its relative paths hold

    def start(self, name: str, command: list[str], env: dict[str, str], run_dir: Path) -> int:
        env = {**os.environ, **env}
        if len(self.gpus) > 1:
            busy = list(self.gpu_of.values())
            self.gpu_of[name] = env["CUDA_VISIBLE_DEVICES"] = min(self.gpus, key=busy.count)
        proc = start_training(command, env, run_dir)
        self.running[name] = proc
        return proc.pid

    def finished(self) -> Iterator[tuple[str, int, str | None]]:
        """(run, exit code, None) for each run that has ended since the last call."""
        for name, proc in list(self.running.items()):
            code = proc.poll()
            if code is not None:
                del self.running[name]
                self.gpu_of.pop(name, None)
                yield name, code, None

    def stop(self, hard: bool) -> None:
        """First stop: each run saves a checkpoint and exits. Second: killed."""
        for proc in self.running.values():
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                os.kill(proc.pid, signal.SIGKILL if hard else signal.SIGINT)

    def close(self) -> None:
        for proc in self.running.values():
            proc.kill()


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries for the children."""
    count = _gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()][:count]
    return [str(i) for i in range(count)]


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0
