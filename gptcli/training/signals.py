"""Stopping on SIGINT/SIGTERM between steps, so that a run always ends with a whole checkpoint."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


class Interrupted(Exception):
    """A stop signal ended a wait that Python would otherwise have gone back to."""


class StopSignal:
    """SIGINT and SIGTERM ask the loop to stop after the current step, save a checkpoint and
    return. In one process a second signal gets the previous handler (a second Ctrl-C aborts at
    once); under torchrun, whose agent forwards the signals it gets, repeats are ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, escalate: bool):
        self.signum = 0
        self.escalate = escalate
        self.previous: dict[int, Any] = {}
        self.waiting = False

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers; a caller's thread keeps its own
        for sig in self.SIGNALS:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # e.g. a background job without job control: stay deaf to it
            self.previous[sig] = signal.SIG_DFL if previous is None else previous
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = self.signum or signum
        if self.escalate:
            signal.signal(signum, self.previous[signum])
        if self.waiting:
            self.waiting = False
            raise Interrupted(signum)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A blocking call in this block ends with Interrupted at the first stop signal: Python
        retries a system call that a signal interrupted whenever the handler returns (PEP 475),
        so a wait for another process (a lock it holds while suspended) could last forever."""
        self.waiting = True  # before the check: a signal between the two still raises
        try:
            if self.signum:
                raise Interrupted(self.signum)
            yield
        finally:
            self.waiting = False

    def __exit__(self, *exc) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
