"""Run a grid of trainings, N at a time, each an ordinary `gptcli train` process with its own run
directory and train.log; record every run's status in OUT/sweep.json. Where the processes run is
the launcher's business: on this machine (launchers.py) or as tasks on a Ray cluster
(ray_launcher.py); everything else here is the same for both.

Re-running a sweep is cheap and safe: a finished run is skipped, an interrupted or failed one
resumes from its latest checkpoint (or starts again when it has none). Ctrl-C reaches the sweep
alone (children run in their own sessions) and is passed on once to every run, which saves a
checkpoint and exits; a second Ctrl-C kills them (their latest checkpoints stay whole).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gptcli import atomic
from gptcli.checkpoint import lock
from gptcli.errors import GptcliError
from gptcli.study.grid import Combo, Grid, expand, yaml_text
from gptcli.study.launchers import LOG_FILE, LocalLauncher, finished_step

SWEEP_FILE = "sweep.json"
BUSY_ADVICE = "wait for it to finish, or sweep into another --out"


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
    size: str | None = None  # the grid's named size ...
    size_keys: list[str] = field(default_factory=list)  # ... and the keys it set


class Launcher(Protocol):
    """Where the runs go (launchers.LocalLauncher, ray_launcher.RayLauncher)."""

    name: str
    slots: int  # runs at once
    threads: int  # CPU threads of each run
    running: dict[str, Any]

    def describe(self) -> str: ...
    def path_overrides(self, config: Any) -> list[str]: ...  # set after the run's own keys
    def start(self, name: str, command: list[str], env: dict[str, str], run_dir: Path
              ) -> int | None: ...  # fmt: skip
    def finished(self) -> Any: ...  # (run, exit code, error or None) of each run that ended
    def stop(self, hard: bool) -> None: ...
    def close(self) -> None: ...


class Sweep:
    def __init__(self, grid: Grid, jobs: int = 1,
                 launcher: Callable[[], Launcher] | None = None):  # fmt: skip
        """launcher: makes where the runs go, called once every run is valid (a Ray cluster is
        joined only then); by default this machine, `jobs` at once."""
        if launcher is None and jobs < 1:
            raise GptcliError(f"--jobs must be at least 1, got {jobs}")
        self.grid = grid
        self.combos: dict[str, Combo] = {c.name: c for c in expand(grid)}  # validates all first
        self.launcher = launcher() if launcher else LocalLauncher(jobs)
        self.states = [self._state(c) for c in self.combos.values()]
        self.stop_requests = 0
        self._carry_over()
        self.log_start: dict[str, int] = {}
        self.started: dict[str, float] = {}

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
        state = RunState(combo.name, str(run_dir), combo.overrides, combo.config.train.max_iters,
                         size=combo.size, size_keys=combo.size_keys)  # fmt: skip
        step = finished_step(run_dir)
        if step is not None and step >= state.max_iters:
            state.status = "done"
        return state

    @property
    def file(self) -> Path:
        return self.grid.out / SWEEP_FILE

    def save(self) -> None:
        self.grid.out.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.file, {"grid": self.grid.to_dict(), "backend": self.launcher.name,
                                      "runs": [asdict(s) for s in self.states]})  # fmt: skip

    def run(self, on_update: Callable[[list[RunState]], None] = lambda states: None) -> int:
        """Run every unfinished combination; 0 when all finished (or were skipped as busy), 1
        when any failed, 130 when stopped by Ctrl-C/SIGTERM. One sweep per directory at once."""
        with lock.hold(self.grid.out, BUSY_ADVICE):
            return self._run(on_update)

    def _run(self, on_update: Callable[[list[RunState]], None]) -> int:
        todo = [s for s in self.states if s.status != "done"]
        launcher, stops_passed_on = self.launcher, 0
        # SIGHUP too: a closed terminal must stop the runs as Ctrl-C does, not orphan them.
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self.save()
            shown = 0.0
            while todo or launcher.running:
                if self.stop_requests > stops_passed_on:  # once: save and exit; twice: kill
                    stops_passed_on = self.stop_requests
                    launcher.stop(hard=stops_passed_on > 1)
                while todo and len(launcher.running) < launcher.slots and not self.stop_requests:
                    state = todo.pop(0)
                    if not self._busy(state):
                        self._start(state)
                if self.stop_requests and not launcher.running:
                    break
                for name, code, error in launcher.finished():
                    self._finish(name, code, error)
                if time.monotonic() - shown >= 1.0:  # redraw once a second; reap more often
                    on_update(self.states)
                    shown = time.monotonic()
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            launcher.close()
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
        self.stop_requests += 1  # passed on to the runs by the loop in _run

    def _start(self, state: RunState) -> None:
        combo, run_dir = self.combos[state.name], Path(state.dir)
        threads = self.launcher.threads
        command = [sys.executable, "-m", "gptcli", "train", "--config", str(self.grid.config)]
        overrides = [*self.grid.sets, *(f"{k}={yaml_text(v)}" for k, v in combo.overrides.items())]
        overrides += [*self.launcher.path_overrides(combo.config), f"train.threads={threads}"]
        command += [arg for text in overrides for arg in ("--set", text)]
        command += ["--out", str(run_dir)]
        log = run_dir / LOG_FILE
        self.log_start[state.name] = log.stat().st_size if log.is_file() else 0  # errors from here
        self.started[state.name] = time.time()
        env = {"OMP_NUM_THREADS": str(threads)}
        state.status, state.error = "running", None
        state.pid = self.launcher.start(state.name, command, env, run_dir)
        self.save()

    def _finish(self, name: str, code: int, error: str | None) -> None:
        state = next(s for s in self.states if s.name == name)
        seconds = time.time() - self.started.pop(name)
        state.pid, state.seconds = None, (state.seconds or 0.0) + seconds
        error = error or _error_line(Path(state.dir), code, self.log_start.get(name, 0))
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


def read_sweep(out: Path) -> dict[str, Any]:
    path = Path(out) / SWEEP_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GptcliError(f"{path} cannot be read ({exc}); is {out} a sweep directory?") from None
