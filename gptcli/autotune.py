"""`auto`, decided by measuring: time each option of a choice on this machine, keep the fastest,
and remember it so that the next run of the same shape on the same machine chooses the same
without measuring again.

Why measure rather than follow a rule: on a CPU the faster of fp32 and bf16 for a small model
depends on the chip. On an AMD EPYC with AVX512-BF16 each packed bf16 call costs a fixed
15-40 us, so a 128-wide model samples faster in fp32; an Intel Xeon with AMX moves that line,
and no rule measured on one predicts the other. A measurement of the model itself does.

The choices are kept in autotune.json under $GPTCLI_CACHE_DIR, else $XDG_CACHE_HOME/gptcli, else
~/.cache/gptcli: one entry per machine (CPU model, kernel level, torch, threads) and workload,
with the times that decided it. Delete the file to measure again. Where it cannot be written
the choice is still made, just not remembered. Two processes that measure at once take turns
(a lock beside the file), so neither measures while the other loads the cores.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from gptcli import atomic, cpu

BUDGET = 0.6  # seconds of timing a decision may cost, warm-ups included (copies and packing aside)
FILE = "autotune.json"


def cache_dir() -> Path:
    if explicit := os.environ.get("GPTCLI_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gptcli"


def machine() -> dict[str, Any]:
    """What a measurement holds for: another CPU, kernel level, torch or thread count measures
    again."""
    return {"cpu": cpu.model_name(), "level": cpu.level(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}  # fmt: skip


def fastest(
    workload: dict[str, Any],
    choices: tuple[str, ...],
    prepare: Callable[[], dict[str, Callable[[], None]]],
    default: str,
    budget: float = BUDGET,
) -> str:
    """The fastest of choices for workload on this machine: remembered, or measured now.
    prepare() builds each choice's unit of work (copies, packing), only when measuring, so a
    remembered answer costs nothing. default: the choice when one warm-up round alone spends
    half the budget, where the work is too big to time twice; for matmul-bound work that is
    the option the hardware favours."""
    key = dict(workload, **machine())
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    with _locked():
        entries = _read()
        known = entries.get(digest, {}).get("choice")
        if known in choices:
            return known
        choice, times = _measure(prepare(), default, budget)
        entries[digest] = {"choice": choice, "seconds": times, "for": key,
                           "measured": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
        with contextlib.suppress(OSError):
            atomic.write_json(cache_dir() / FILE, entries)
    return choice


def _measure(
    options: dict[str, Callable[[], None]], default: str, budget: float
) -> tuple[str, dict[str, float]]:
    """Each option's best time over rounds alternated between them (a noisy machine slows
    them alike); as many rounds as the budget allows, at most 5."""
    start = time.perf_counter()
    warm = {name: _seconds(run) for name, run in options.items()}  # builds kernels, packs
    spent = time.perf_counter() - start
    if spent > budget / 2:
        return default, warm
    rounds = max(1, min(5, int((budget - spent) / spent)))
    best = dict.fromkeys(options, float("inf"))
    for _ in range(rounds):
        for name, run in options.items():
            best[name] = min(best[name], _seconds(run))
    return min(best, key=lambda name: best[name]), best


def _seconds(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _read() -> dict[str, Any]:
    try:
        entries = json.loads((cache_dir() / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        handle = open(cache_dir() / f".{FILE}.lock", "a")  # noqa: SIM115
    except OSError:
        yield  # nowhere to keep it: measure alone
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
