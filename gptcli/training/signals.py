"""Stopping on SIGINT/SIGTERM between steps, so that a run always ends with a whole checkpoint."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignal:
    """SIGINT and SIGTERM ask the loop to stop after the current step, save a checkpoint and
    return. In one process a second signal gets the previous handler (a second Ctrl-C aborts at
    once); under torchrun, whose agent forwards the signals it gets, repeats are ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, escalate: bool):
        self.signum = 0
        self.escalate = escalate
        self.previous: dict[int, Any] = {}

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

    def __exit__(self, *exc) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
