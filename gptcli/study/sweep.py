"""Run a grid of trainings, N at a time, each an ordinary `gptcli train` process with its own run
directory and train.log; record every run's status in OUT/sweep.json.

Re-running a sweep is cheap and safe: a finished run is skipped, an interrupted or failed one
resumes from its latest checkpoint (or starts again when it has none). Ctrl-C reaches the sweep
alone (children run in their own sessions) and is passed on once to every child, which saves a
checkpoint and exits; a second Ctrl-C kills them (their latest checkpoints stay whole).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gptcli import atomic, lock
from gptcli.errors import GptcliError
from gptcli.study.grid import Combo, Grid, expand, yaml_text
from gptcli.training import checkpoint
from gptcli.training.device import available_cores

SWEEP_FILE = "sweep.json"
BUSY_ADVICE = "wait for it to finish, or sweep into another --out"
LOG_FILE = "train.log"


@dataclass
class RunState:
    name: str
    dir: str
    overrides: dict[str, Any]
    max_iters: int
    status: str = "pending"  # pending, running, done, failed, interrupted, busy
    error: str | None = None
    pid: int | None = None
    seconds: float | None = None


def finished_step(run_dir: Path) -> int | None:
    """The step of a run's latest checkpoint, None when it has none."""
    pointer = checkpoint.read_pointer(run_dir)
    return int(pointer["latest"].split("-")[1]) if pointer else None


class Sweep:
    def __init__(self, grid: Grid, jobs: int = 1):
        if jobs < 1:
            raise GptcliError(f"--jobs must be at least 1, got {jobs}")
        self.grid, self.jobs = grid, jobs
        self.combos: dict[str, Combo] = {c.name: c for c in expand(grid)}  # validates all first
        self.states = [self._state(c) for c in self.combos.values()]
        self.stop_requests = 0
        self._carry_over()
        self.gpus = _visible_gpus()
        self.gpu_of: dict[str, str] = {}  # running run -> its GPU
        self.log_start: dict[str, int] = {}

    def _carry_over(self) -> None:
        """Keep what an earlier invocation learnt: each run's training seconds so far, and the
        error of a run that failed (until it is retried)."""
        if not self.file.is_file():
            return
        try:
            before = {r["name"]: r for r in read_sweep(self.grid.out)["runs"]}
        except (GptcliError, KeyError, TypeError):
            return  # an unreadable sweep.json is rewritten whole
        for state in self.states:
            old = before.get(state.name) or {}
            if finished_step(Path(state.dir)) is None:
                continue  # starts afresh (its directory was emptied): nothing to carry over
            state.seconds = old.get("seconds")
            if state.status != "done" and old.get("status") == "failed":
                state.error = old.get("error")

    def _state(self, combo: Combo) -> RunState:
        run_dir = combo.run_dir(self.grid.out)
        state = RunState(combo.name, str(run_dir), combo.overrides, combo.config.train.max_iters)
        step = finished_step(run_dir)
        if step is not None and step >= state.max_iters:
            state.status = "done"
        return state

    @property
    def file(self) -> Path:
        return self.grid.out / SWEEP_FILE

    def save(self) -> None:
        self.grid.out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.file, {"grid": self.grid.to_dict(),
                                      "runs": [asdict(s) for s in self.states]})  # fmt: skip

    def run(self, on_update: Callable[[list[RunState]], None] = lambda states: None) -> int:
        """Run every unfinished combination; 0 when all finished (or were skipped as busy), 1
        when any failed, 130 when stopped by Ctrl-C/SIGTERM. One sweep per directory at once."""
        with lock.hold(self.grid.out, BUSY_ADVICE):
            return self._run(on_update)

    def _run(self, on_update: Callable[[list[RunState]], None]) -> int:
        todo = [s for s in self.states if s.status != "done"]
        running: dict[str, tuple[subprocess.Popen, float]] = {}
        threads = max(1, available_cores() // self.jobs)
        # SIGHUP too: a closed terminal must stop the children as Ctrl-C does, not orphan them.
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self.save()
            shown = 0.0
            while todo or running:
                while todo and len(running) < self.jobs and not self.stop_requests:
                    state = todo.pop(0)
                    if self._busy(state):
                        continue
                    running[state.name] = (self._start(state, threads), time.time())
                    self.save()
                if self.stop_requests and not running:
                    break
                self._reap(running)
                if time.monotonic() - shown >= 1.0:  # redraw once a second; reap more often
                    on_update(self.states)
                    shown = time.monotonic()
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for proc, _ in running.values():
                proc.kill()
            self.save()
        on_update(self.states)
        if self.stop_requests:
            return 130
        return 1 if any(s.status == "failed" for s in self.states) else 0

    def _busy(self, state: RunState) -> bool:
        """Whether another process (a training started by hand, another sweep) holds the run's
        directory: the run is then skipped, not failed."""
        holder = lock.holder_of(Path(state.dir))
        if holder is None:
            return False
        state.status, state.error = "busy", f"skipped: in use by {holder}"
        self.save()
        return True

    def _on_signal(self, signum, frame) -> None:
        self.stop_requests += 1
        for state in self.states:
            if state.status == "running" and state.pid:
                # Once: the child saves and exits. Twice: kill it.
                sig = signal.SIGINT if self.stop_requests == 1 else signal.SIGKILL
                with contextlib.suppress(ProcessLookupError):  # it has just exited
                    os.kill(state.pid, sig)

    def _start(self, state: RunState, threads: int) -> subprocess.Popen:
        combo, run_dir = self.combos[state.name], Path(state.dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "gptcli", "train", "--config", str(self.grid.config)]
        overrides = [*self.grid.sets, *(f"{k}={yaml_text(v)}" for k, v in combo.overrides.items())]
        overrides.append(f"train.threads={threads}")
        command += [arg for text in overrides for arg in ("--set", text)]
        command += ["--out", str(run_dir)]
        if finished_step(run_dir) is not None:
            command.append("--resume")  # interrupted or failed before: continue it
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if len(self.gpus) > 1:  # several GPUs: each job on the least busy one
            busy = list(self.gpu_of.values())
            gpu = min(self.gpus, key=busy.count)
            self.gpu_of[state.name] = env["CUDA_VISIBLE_DEVICES"] = gpu
        with open(run_dir / LOG_FILE, "ab") as log:
            self.log_start[state.name] = log.tell()  # errors are read from here on
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_stop_with_parent)  # fmt: skip
        state.status, state.pid, state.error = "running", proc.pid, None
        return proc

    def _reap(self, running: dict[str, tuple[subprocess.Popen, float]]) -> None:
        for name, (proc, started) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            self.gpu_of.pop(name, None)
            state = next(s for s in self.states if s.name == name)
            state.pid, state.seconds = None, (state.seconds or 0.0) + time.time() - started
            error = _error_line(Path(state.dir), code, self.log_start.get(name, 0))
            if code == 0:
                state.status = "done"
            elif self.stop_requests and code in _STOPPED:
                state.status = "interrupted"
            elif code == 2 and " is in use by " in error:  # taken between the check and start
                state.status, state.error = "busy", f"skipped: {error}"
            else:
                state.status, state.error = "failed", error
            self.save()


# How a child stopped by the sweep's Ctrl-C ends: its own handler's codes (130 SIGINT, 143
# SIGTERM), or the signal itself when it came before the handler was installed, or SIGKILL.
_STOPPED = {130, 143, -signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL}


def _stop_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the sweep dies however it dies, so the
    run saves and stops instead of training on unwatched."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries for the children."""
    count = _gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()][:count]
    return [str(i) for i in range(count)]


def _error_line(run_dir: Path, code: int, start: int = 0) -> str:
    """The child's own one-line error, else its last line, else how it ended; read from where
    this attempt's output starts (train.log keeps earlier attempts')."""
    try:
        with open(run_dir / LOG_FILE, "rb") as f:
            f.seek(start)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1].removeprefix("error:").strip()
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    last = [line.strip() for line in lines if line.strip()]
    return f"exit code {code}" + (f": {last[-1][:200]}" if last else "")


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def read_sweep(out: Path) -> dict[str, Any]:
    path = Path(out) / SWEEP_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GptcliError(f"{path} cannot be read ({exc}); is {out} a sweep directory?") from None
