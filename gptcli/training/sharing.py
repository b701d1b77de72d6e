"""Trainings that share this machine's cores each take their share of them.

Two trainings that each run torch's default thread count (every core) on the same cores do not
get half a lone run's speed each but a quarter: their threads spin waiting for each other
(measured on 2 cores: 5,100 tokens/s each against 19,500 alone). So a training on the CPU counts
the gptcli trainings on this machine every few seconds and keeps its threads at its share of
the cores, cores // trainings (never more than train.threads, never fewer than 1): a lone run
keeps torch's default, and when the others end it gets its cores back. torchrun's processes
count as trainings like any other, so this also splits a node among them.

Where the cores are hardware threads of fewer physical cores (SMT: two vCPUs of one core, as on
many cloud VMs) and the trainings outnumber the physical cores, a thread each still leaves two
trainings computing at once on one core, sharing its units and caches (perhaps why two on a
2-core Intel Xeon got 33% of a lone run each; not measured since). There they take turns
instead: each step runs under a lock shared by the trainings on these cores, with a lone run's
threads, so that one computes at a time and each gets about its fair share (train.share_cores:
auto decides; threads or turns forces one way, to measure both with bench_sharing.py). A turn
lasts to the step's log line: the other training's work beside it would slow each of its
parallel ops, and so would OpenMP threads that spin (gptcli/cores.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from gptcli.cores import my_cpus, physical_cores
from gptcli.training.signals import Interrupted, StopSignal

CHECK_EVERY = 5.0  # seconds between counts: /proc is read in well under a millisecond


def is_training(argv: list[str]) -> bool:
    """`gptcli train ...` as the kernel lists it: its console script run by the interpreter of
    its #! line (`python3 /venv/bin/gptcli train`), `python [-u -X dev ...] -m gptcli train`,
    or `gptcli train` itself; not torchrun's launcher, which names gptcli further along its own
    arguments."""
    if not argv:
        return False
    name, rest = Path(argv[0]).name, argv[1:]
    if name.startswith("python"):
        while rest and rest[0].startswith("-") and not rest[0].startswith("-m"):
            # The interpreter's own flags (-u, -O); -X and -W may take the next word as value.
            rest = rest[2:] if rest[0] in ("-X", "-W") else rest[1:]
        if rest[:2] == ["-m", "gptcli"]:
            rest = rest[2:]
        elif rest[:1] == ["-mgptcli"] or (rest and Path(rest[0]).name == "gptcli"):
            rest = rest[1:]
        else:
            return False
    elif name != "gptcli":
        return False
    return rest[:1] == ["train"]


def count_trainings(proc: Path = Path("/proc")) -> int:
    """gptcli trainings on this machine whose cores overlap this process's (a training pinned
    to other cores with taskset shares nothing), this process included."""
    found = {os.getpid()}
    mine = _cores_of(os.getpid())
    try:
        entries = list(proc.iterdir())
    except OSError:
        return 1
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # ended meanwhile, or not ours to read
        argv = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
        if is_training(argv) and _overlaps(int(entry.name), mine):
            found.add(int(entry.name))
    return len(found)


def _cores_of(pid: int) -> set[int] | None:
    """The cores a process may run on; None where that cannot be read."""
    try:
        return os.sched_getaffinity(pid)
    except (AttributeError, OSError):
        return None


def _overlaps(pid: int, mine: set[int] | None) -> bool:
    theirs = _cores_of(pid)
    return mine is None or theirs is None or bool(theirs & mine)  # unknown: assume shared


def turn_lock_path(cpus: set[int]) -> Path:
    """One lock for this user's trainings on exactly these CPUs."""
    key = zlib.crc32(",".join(map(str, sorted(cpus))).encode())
    return Path(tempfile.gettempdir()) / f"gptcli-{os.getuid()}-cores-{key:08x}.lock"


class CoreShare:
    """This training's CPU threads, re-decided every CHECK_EVERY seconds."""

    def __init__(self, requested: int | None, cores: int, every: float = CHECK_EVERY,
                 count: Callable[[], int] = count_trainings, mode: str = "auto",
                 physical: int | None = None, lock: Path | None = None):  # fmt: skip
        self.cores, self.count, self.every, self.mode = cores, count, every, mode
        cpus = my_cpus()
        self.physical = physical if physical is not None else physical_cores(cpus)
        self.lock_path = lock or turn_lock_path(cpus)
        self.lock_fd: int | None = None
        self.most = requested or torch.get_num_threads()  # what a lone run uses
        self.trainings, self.threads = 1, torch.get_num_threads()
        self.turns = False  # each step holds the lock
        self.met = False  # a step found another training's turn since the last decision
        self.in_turns = False  # and so runs with a lone run's threads
        self.checked = -float("inf")

    def share(self, trainings: int) -> int:
        return max(1, min(self.most, self.cores // trainings))

    def takes_turns(self, trainings: int) -> bool:
        """Whether trainings this many should take turns: asked, or (auto) they outnumber the
        physical cores under hyperthreads, and a lone run would use more than one thread."""
        if trainings == 1 or self.mode == "threads":
            return False
        hyperthreads = self.most > 1 and self.physical < min(trainings, self.cores)
        return (self.mode == "turns" or hyperthreads) and self._lock()

    def _lock(self) -> bool:
        """The turns' lock is open (opened now if need be); False where it cannot be, or where
        the file is not this user's own (another could hold it forever)."""
        if self.lock_fd is None:
            try:
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW  # not through a planted link
                fd = os.open(self.lock_path, flags, 0o600)
            except OSError:
                return False
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode) or found.st_uid != os.getuid():
                os.close(fd)
                return False
            self.lock_fd = fd
        return True

    def close(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    @contextlib.contextmanager
    def turn(self, stop: StopSignal | None = None) -> Iterator[None]:
        """Hold the cores for one step while trainings take turns; a no-op otherwise. A stop
        signal ends the wait: that step, the last, runs beside the other's."""
        if not self.turns or self.lock_fd is None:
            yield
            return
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.met = True  # another training is taking its turn: wait for its end
            waiting = stop.interruptible() if stop else contextlib.nullcontext()
            with contextlib.suppress(Interrupted), waiting:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX)  # the kernel drops it if its holder dies
        try:
            yield
        finally:
            # Also where the signal came just as the lock was taken; a no-op where it was not.
            fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    def update(self) -> str | None:
        """Set the threads for the trainings running now; a line when that changed them."""
        now = time.monotonic()
        joined = self.turns and self.met and not self.in_turns  # decided at once: a step faster
        if now - self.checked < self.every and not joined:
            return None
        self.checked = now
        trainings = self.count()
        turns = self.takes_turns(trainings)
        # A lone run's threads only once another training was seen taking turns too: one that
        # does not (threads, torchrun's ranks, another user's) would run beside all of them.
        in_turns, self.met = turns and self.met, False
        threads = self.most if in_turns else self.share(trainings)
        changed = (threads, in_turns) != (self.threads, self.in_turns)
        self.trainings, self.threads, self.turns = trainings, threads, turns
        self.in_turns = in_turns
        if not changed:
            return None
        torch.set_num_threads(threads)
        return self.describe()

    def describe(self) -> str:
        threads = f"{self.threads} CPU thread{'s' if self.threads > 1 else ''}"
        if self.in_turns:
            threads += ", a step at a time in turns"
        if self.trainings == 1:
            return f"{threads}: no other gptcli training shares the cores now"
        others = self.trainings - 1
        trainings = "training shares" if others == 1 else "trainings share"
        return f"{threads}: {others} other gptcli {trainings} these {self.cores} cores"
