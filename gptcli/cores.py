"""This process's cores: the physical cores under its CPUs, and how long OpenMP's idle threads
spin on them in a training that may take turns with others.

torch's OpenMP threads (GNU libgomp) spin 300,000 times after each parallel region before they
sleep, waiting for the next: about 9 ms on the project machine's AMD EPYC. Where trainings take
turns (training/sharing.py), the one whose turn just ended spins that long beside the other's
step and takes a core from it: a step of the CPU recipe held the cores for 43-45 ms taking turns
against 28-40 ms alone; with 30,000 spins (about 1 ms, still far past the microseconds between
the ops of a step) it held them for 30-35 ms against 28-31 ms. Alone, 30,000 spins cost 1.025x
per step (median of 10 alternated runs, 0.84-1.46x: within this machine's noise). libgomp reads
GOMP_SPINCOUNT once, as torch loads it, before gptcli knows whether it will take turns, so
`gptcli train` sets it wherever auto may take turns: every training whose CPUs include
hyperthreads (lone, GPU and `threads` ones too; that cost was measured where it never fires,
on the AMD EPYC, which has none).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

SPIN_COUNT = "30000"
SYS_CPU = Path("/sys/devices/system/cpu")


def physical_cores(cpus: set[int], root: Path = SYS_CPU) -> int:
    """The physical cores under these logical CPUs (SMT siblings count once); len(cpus) where
    the kernel does not say."""
    cores = set()
    for cpu in cpus:
        try:
            cores.add((root / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text())
        except OSError:
            return len(cpus)
    return len(cores)


def my_cpus() -> set[int]:
    """The logical CPUs this process may run on (taskset and cgroups narrow them)."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def spin_less(environ: MutableMapping[str, str] = os.environ, root: Path = SYS_CPU) -> bool:
    """Set GOMP_SPINCOUNT for a training where its CPUs are hyperthreads and the user has not
    set libgomp's waiting; whether it was set. Before torch loads, or it changes nothing."""
    if "GOMP_SPINCOUNT" in environ or "OMP_WAIT_POLICY" in environ:
        return False
    cpus = my_cpus()
    if physical_cores(cpus, root) >= len(cpus):
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
