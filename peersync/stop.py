"""Stopping a sync cycle between two atomic steps: the check each layer calls, and the exception that unwinds.

An atomic step leaves the store and the index consistent on its own: one
file scanned, one bundle written, one record applied. The service and
`peersync sync` turn SIGINT/SIGTERM (CTRL_BREAK on Windows) into a stop
check that returns True; the scanner, the publisher and the applier ask it
before each step and end the cycle early. What was not done is done by the
next cycle, because nothing records it as done.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("peersync")

StopCheck = Callable[[], bool]


def never() -> bool:
    """The stop check of a cycle nobody can interrupt."""
    return False


class Stopped(Exception):
    """A stop was asked between two atomic steps; the cycle ends here."""


class StopOnSignals:
    """While active, SIGINT and SIGTERM (CTRL_BREAK on Windows) set ``stop``: the work ends after its current step.

    With ``interrupt_twice``, a second SIGINT while stopping raises KeyboardInterrupt at once, for
    a user at a terminal who will not wait. ``signum`` is the first signal received. Signal
    handlers belong to the main thread: elsewhere nothing is installed.
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name))

    def __init__(self, stop: threading.Event, interrupt_twice: bool = False) -> None:
        self.stop = stop
        self.interrupt_twice = interrupt_twice
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: object) -> None:
        if self.interrupt_twice and self.stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
        log.info("signal %s: stopping after the current step", signum)
        self.stop.set()

    def __enter__(self) -> StopOnSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
