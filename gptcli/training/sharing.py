"""Trainings that share this machine's cores each take their share of them.

Two trainings that each run torch's default thread count (every core) on the same cores do not
get half a lone run's speed each but a quarter: their threads spin waiting for each other
(measured on 2 cores: 5,100 tokens/s each against 19,500 alone). So a training on the CPU counts
the gptcli trainings on this machine every few seconds and keeps its threads at its share of
the cores, cores // trainings (never more than train.threads, never fewer than 1): a lone run
keeps torch's default, and when the others end it gets its cores back. torchrun's processes
count as trainings like any other, so this also splits a node among them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

CHECK_EVERY = 5.0  # seconds between counts: /proc is read in well under a millisecond


def is_training(argv: list[str]) -> bool:
    """`gptcli train ...` or `python [-u] -m gptcli train ...`; not torchrun's launcher, which
    names gptcli further along its own arguments."""
    if not argv:
        return False
    rest = argv[1:]
    if Path(argv[0]).name != "gptcli":
        if "-m" not in rest[:2] or rest[rest.index("-m") + 1 :][:1] != ["gptcli"]:
            return False
        rest = rest[rest.index("-m") + 2 :]
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


class CoreShare:
    """This training's CPU threads, re-decided every CHECK_EVERY seconds."""

    def __init__(self, requested: int | None, cores: int, every: float = CHECK_EVERY,
                 count: Callable[[], int] = count_trainings):  # fmt: skip
        self.cores, self.count, self.every = cores, count, every
        self.most = requested or torch.get_num_threads()  # what a lone run uses
        self.trainings, self.threads = 1, torch.get_num_threads()
        self.checked = -float("inf")

    def share(self, trainings: int) -> int:
        return max(1, min(self.most, self.cores // trainings))

    def update(self) -> str | None:
        """Set the threads for the trainings running now; a line when that changed them."""
        now = time.monotonic()
        if now - self.checked < self.every:
            return None
        self.checked = now
        trainings = self.count()
        threads = self.share(trainings)
        changed = threads != self.threads
        self.trainings, self.threads = trainings, threads
        if not changed:
            return None
        torch.set_num_threads(threads)
        return self.describe()

    def describe(self) -> str:
        threads = f"{self.threads} CPU thread{'s' if self.threads > 1 else ''}"
        if self.trainings == 1:
            return f"{threads}: no other gptcli training shares the cores now"
        others = self.trainings - 1
        trainings = "training shares" if others == 1 else "trainings share"
        return f"{threads}: {others} other gptcli {trainings} these {self.cores} cores"
