"""Stopping a sync cycle between two atomic steps: the check each layer calls, and the exception that unwinds.

An atomic step leaves the store and the index consistent on its own: one
file scanned, one bundle written, one record applied. The service and
`peersync sync` turn SIGINT/SIGTERM (CTRL_BREAK on Windows) into a stop
check that returns True; the scanner, the publisher and the applier ask it
before each step and end the cycle early. What was not done is done by the
next cycle, because nothing records it as done.
"""

from __future__ import annotations

from collections.abc import Callable

StopCheck = Callable[[], bool]


def never() -> bool:
    """The stop check of a cycle nobody can interrupt."""
    return False


class Stopped(Exception):
    """A stop was asked between two atomic steps; the cycle ends here."""
