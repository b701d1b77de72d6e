"""The sweep's Ray backend (`gptcli sweep --backend ray`): each run is a Ray task that asks the
cluster for its CPUs (and one GPU where the cluster has GPUs) and runs the same `gptcli train`
process as the local backend, on whichever node has room, into the same run directory.

So every node must see the same files: the sweep's --out, the base config and the data. That is
checked before the first run, by a task on every node (`check_shared`). Ctrl-C cancels the
tasks: Ray raises KeyboardInterrupt in each, which passes SIGINT to its training (it saves a
checkpoint and exits); a second Ctrl-C kills the trainings.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptcli.config import Config
from gptcli.errors import GptcliError
from gptcli.study.launchers import start_training

INSTALL = "--backend ray needs Ray: pip install 'gptcli[ray]'"
CHECK_DIR = ".storage-check"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise GptcliError(INSTALL) from None
    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at address, or start Ray on this machine when there is none; True when
    this process started (and so must end) the connection."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    _reachable(address)
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")  # fmt: skip
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GptcliError(
            f"cannot reach a Ray cluster at {address}: {first}; start one with "
            "`ray start --head` and give its address (host:port)"
        ) from None
    return True


def ray_launcher(address: str | None, jobs: int | None, cpus_per_run: int | None) -> RayLauncher:
    started_here = connect(address)
    try:
        return RayLauncher(jobs, cpus_per_run, started_here)
    except BaseException:
        if started_here:
            import_ray().shutdown()
        raise


def shared_paths(grid: Any, combos: list[Any]) -> list[Path]:
    """What every node must see besides --out: the base config, each run's data and start."""
    paths = {Path(grid.config).resolve()}
    for combo in combos:
        paths.add(Path(combo.config.data.dir).resolve())
        if combo.config.train.init_from:
            paths.add(Path(combo.config.train.init_from).resolve())
    return sorted(paths)


def _reachable(address: str | None) -> None:
    """Ray retries an address where nothing listens for minutes: a plain connection says so
    at once."""
    host, sep, port = (address or "").removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or None (a Ray on this machine): Ray finds it
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise GptcliError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head` on the head node and give the address it prints (host:port)"
        ) from None


class RayLauncher:
    name = "ray"

    def __init__(self, jobs: int | None = None, cpus_per_run: int | None = None,
                 started_here: bool = False):  # fmt: skip
        self.ray = import_ray()
        nodes = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        gpu_nodes = [n for n in nodes if n.get("GPU", 0) >= 1]
        if gpu_nodes:  # a GPU each, and the CPUs that go with a GPU on the leanest node
            cpus = cpus_per_run or max(1, min(int(n.get("CPU", 0) // n["GPU"]) for n in gpu_nodes))
            fits = sum(int(min(n["GPU"], n.get("CPU", 0) // cpus)) for n in gpu_nodes)
        else:  # a whole node each by default: a training uses every core it is given
            cpus = cpus_per_run or max(1, min(int(n.get("CPU", 0)) for n in nodes))
            fits = sum(int(n.get("CPU", 0) // cpus) for n in nodes)
        if cpus < 1 or fits < 1:
            largest = max((int(n.get("CPU", 0)) for n in nodes), default=0)
            raise GptcliError(f"--cpus-per-run {cpus}: no Ray node has that many CPUs "
                              f"(the largest has {largest}); ask for fewer")  # fmt: skip
        if jobs is not None and jobs < 1:
            raise GptcliError(f"--jobs must be at least 1, got {jobs}")
        self.threads, self.gpus = cpus, 1 if gpu_nodes else 0
        self.slots = jobs or fits
        self.started_here = started_here
        # max_retries: a run whose node died starts again elsewhere, resuming its checkpoint
        self.task = self.ray.remote(max_retries=2)(run_task)
        self.running: dict[str, Any] = {}  # run -> its task's ObjectRef

    def describe(self) -> str:
        cpus = f"{self.threads} CPU" + ("s" if self.threads > 1 else "")
        gpus = " and a GPU" if self.gpus else ""
        return f"Ray tasks of {cpus}{gpus}, {self.slots} at a time"

    def path_overrides(self, config: Config) -> list[str]:
        """A node's working directory is not ours: relative paths in the config are made whole."""
        keys = {"data.dir": config.data.dir, "train.init_from": config.train.init_from}
        return [f"{key}={Path(value).resolve()}" for key, value in keys.items()
                if value and not Path(value).is_absolute()]  # fmt: skip

    def start(self, name: str, command: list[str], env: dict[str, str], run_dir: Path) -> None:
        task = self.task.options(num_cpus=self.threads, num_gpus=self.gpus)
        self.running[name] = task.remote(command, env, str(run_dir))

    def finished(self) -> Iterator[tuple[str, int, str | None]]:
        refs = list(self.running.values())
        if not refs:
            return
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        for name, ref in list(self.running.items()):
            if ref not in ready:
                continue
            del self.running[name]
            try:
                yield name, self.ray.get(ref), None
            except self.ray.exceptions.TaskCancelledError:
                yield name, -signal.SIGINT, None  # cancelled before it started
            except self.ray.exceptions.RayError as exc:  # its worker or node died
                yield name, 1, f"the Ray task failed: {_first_line(exc)}"

    def stop(self, hard: bool) -> None:
        for ref in self.running.values():
            self.ray.cancel(ref)  # the task passes a first on as SIGINT, a second as SIGKILL

    def close(self) -> None:
        for ref in self.running.values():
            self.ray.cancel(ref, force=True)
        self.running.clear()
        if self.started_here:
            self.ray.shutdown()
            self.started_here = False

    def check_shared(self, out: Path, needed: list[Path]) -> None:
        """Refuse (one line) unless a task on every node sees what this process writes in out
        and every path in needed, and this process sees what the task writes in out."""
        check = out / CHECK_DIR
        check.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        (check / "driver").write_text(token)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as strategy

        probe = self.ray.remote(probe_storage)
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        try:
            refs = [probe.options(num_cpus=0, scheduling_strategy=strategy(n["NodeID"], soft=False))
                    .remote(str(check), [str(p) for p in needed]) for n in nodes]  # fmt: skip
            try:
                answers = self.ray.get(refs, timeout=300)
            except self.ray.exceptions.RayError as exc:
                raise GptcliError(f"the Ray nodes did not answer the storage check: "
                                  f"{_first_line(exc)}") from None  # fmt: skip
            for node, answer in zip(nodes, answers, strict=True):
                where = f"a Ray task on {answer['host']} ({node.get('NodeManagerAddress')})"
                problem = _storage_problem(answer, token, check, needed)
                if problem:
                    raise GptcliError(
                        f"{where} {problem}; put --out, the config and the data on storage "
                        "every node mounts (NFS or a cluster filesystem) and give those paths"
                    )
        finally:
            for path in check.glob("*"):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                check.rmdir()


def _storage_problem(answer: dict, token: str, check: Path, needed: list[Path]) -> str | None:
    if answer["token"] != token:
        return f"does not see the file this sweep wrote in {check.parent}"
    if answer["missing"]:
        return f"does not see {answer['missing'][0]}"
    if answer["wrote"] is not True:
        return f"cannot write in {check.parent}: {answer['wrote']}"
    reply = check / answer["reply"]
    if not reply.is_file() or reply.read_text() != token:
        return f"writes files in {check.parent} that this machine does not see"
    return None


def probe_storage(check: str, needed: list[str]) -> dict:
    """On a node: what it sees of the driver's file and the needed paths, and a file written
    back for the driver to find."""
    seen = Path(check) / "driver"
    token = seen.read_text() if seen.is_file() else None
    reply = f"node-{socket.gethostname()}-{os.getpid()}"
    wrote: Any = True
    try:
        (Path(check) / reply).write_text(token or "")
    except OSError as exc:
        wrote = str(exc)
    missing = [p for p in needed if not Path(p).exists()]
    return {"host": socket.gethostname(), "token": token, "missing": missing, "wrote": wrote,
            "reply": reply}  # fmt: skip


def run_task(command: list[str], env: dict[str, str], run_dir: str) -> int:
    """One run, inside a Ray task: its training's exit code. ray.cancel arrives here as
    KeyboardInterrupt: the first is passed on as SIGINT (save and exit), a second kills."""
    _hear_cancel()
    proc, stops = None, 0
    while True:
        try:
            if proc is None:
                proc = start_training(command, {**os.environ, **env}, Path(run_dir))
            while proc.poll() is None:
                time.sleep(0.2)  # Ray's KeyboardInterrupt lands between steps, not in a wait
            return proc.returncode
        except KeyboardInterrupt:
            if proc is None:
                return -signal.SIGINT  # cancelled before its training started
            stops += 1
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT if stops == 1 else signal.SIGKILL)


def _hear_cancel() -> None:
    """Ray's cancel is a SIGINT to the worker, raised as KeyboardInterrupt by Python's handler;
    a worker whose node was started with SIGINT ignored (`ray start ... &` in a script) would
    never hear it, and its run would train on after Ctrl-C."""
    with contextlib.suppress(ValueError):  # not the main thread: Ray handles it there
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
