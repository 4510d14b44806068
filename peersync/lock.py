"""Named locks in the state folder whose holder's pid is readable."""

from __future__ import annotations

import os
import time

import filelock

from .errors import RefusedError
from .state import State


class Lock:
    """A named lock in the state folder whose holder's pid is readable.

    ``service`` is held for the whole life of `peersync run`: one service per
    state folder. ``cycle`` is held during every sync cycle, by the service
    and by `peersync sync` alike, so a manual sync runs between two of the
    service's cycles ("sync now") and never inside one.
    """

    def __init__(self, state: State, name: str = "service") -> None:
        state.root.mkdir(parents=True, exist_ok=True)
        self._lock = filelock.FileLock(str(state.root / f"{name}.lock"))
        self._pid_file = state.root / f"{name}.pid"

    def holder(self) -> int | None:
        try:
            return int(self._pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def held_by_other(self) -> bool:
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            return True
        self._lock.release()
        return False

    def acquire(self, timeout: float, what: str) -> None:
        try:
            self._lock.acquire(timeout=timeout)
        except filelock.Timeout:
            pid = self.holder()
            raise RefusedError(f"peersync is already running for this state folder (pid {pid or 'unknown'})",
                               f"stop it first, or let it {what}") from None
        self._pid_file.write_text(f"{os.getpid()} {time.time()}\n")

    def release(self) -> None:
        try:
            self._pid_file.unlink(missing_ok=True)
        finally:
            self._lock.release()
