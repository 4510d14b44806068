"""The background service: one lock per state folder, and the watch-and-sync loop.

The loop wakes on filesystem events in a store (watchdog), on new files in
the relay (watchdog where the cloud client raises events, a cheap listing
poll where it does not), and on a periodic full rescan; a short debounce
turns a burst of saves into one cycle. SIGINT/SIGTERM set a flag that the
cycle checks between atomic steps (a file scanned, a bundle written, a record
applied), so the loop ends after the current step.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .fsutil import TEMP_PREFIX
from .lock import Lock as Lock  # re-exported: the service and its lock go together
from .schedule import Schedule

log = logging.getLogger("peersync")


@dataclasses.dataclass
class Watched:
    """What the loop keeps for one store."""

    key: str
    store_dir: Path
    relay_dir: Path
    own_dir: Path  # this peer's own folder in the relay: its own writes there are no news
    schedule: Schedule
    last_sync: float = 0.0  # wall clock of the last cycle, for scheduled stores
    dirty: bool = True
    first_event: float = 0.0
    last_event: float = 0.0
    last_full: float = -1e18
    retry_at: float | None = None
    next_poll: float = 0.0
    relay_seen: tuple[Any, ...] = ()


class _Wake(FileSystemEventHandler):
    def __init__(self, watched: Watched, event: threading.Event) -> None:
        self.watched = watched
        self.event = event
        self.own = str(watched.own_dir) + os.sep

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = str(event.src_path)
        if os.path.basename(path).startswith(TEMP_PREFIX) or event.event_type in ("opened", "closed_no_write"):
            return
        if path.startswith(self.own):
            return
        now = time.monotonic()
        w = self.watched
        if not w.dirty:
            w.first_event = now
        w.last_event = now
        w.dirty = True
        self.event.set()


def relay_fingerprint(relay_dir: Path, own_dir: Path) -> tuple[Any, ...]:
    """A cheap summary of the relay's peer folders: it changes when a bundle or heartbeat arrives."""
    out: list[Any] = []
    try:
        peers = list(os.scandir(relay_dir / "peers"))
    except OSError:
        return ()
    for peer in peers:
        if peer.path == str(own_dir):
            continue
        for folder in (peer.path, os.path.join(peer.path, "bundles")):
            try:
                for f in os.scandir(folder):
                    if f.is_file():
                        st = f.stat()
                        out.append((f.path, st.st_size, st.st_mtime_ns))
            except OSError:
                pass
    return tuple(sorted(out))


def _due(w: Watched, now: float, settings: dict[str, Any]) -> tuple[bool, bool]:
    """(cycle now?, full rescan?) for a continuously synced store."""
    debounce = float(settings["debounce_seconds"])
    full = now - w.last_full >= float(settings["rescan_seconds"])
    if full:
        return True, True
    if w.dirty and (now - w.last_event >= debounce or now - w.first_event >= 20 * debounce):
        return True, False
    if w.retry_at is not None and now >= w.retry_at:
        return True, False
    if now >= w.next_poll:
        w.next_poll = now + float(settings["poll_seconds"])
        seen = relay_fingerprint(w.relay_dir, w.own_dir)
        if seen != w.relay_seen:
            w.relay_seen = seen
            return True, False
    return False, False


def run_loop(
    watched: list[Watched],
    cycle: Callable[[Watched, bool], float | None],
    settings: dict[str, Any],
    stop: threading.Event,
) -> None:
    """Call ``cycle(store, full_rescan)`` whenever a store is due, until ``stop`` is set.

    ``cycle`` returns the seconds after which it wants to run again
    (deletions held back, files still being written) or None.
    """
    wake = threading.Event()
    observer = Observer()
    for w in watched:
        if not w.schedule.continuous:
            continue
        for folder in (w.store_dir, w.relay_dir):
            try:
                if folder.is_dir():
                    observer.schedule(_Wake(w, wake), str(folder), recursive=True)
            except OSError as exc:
                log.warning("cannot watch %s (%s); polling instead", folder, exc)
    observer.start()
    try:
        while not stop.is_set():
            for w in watched:
                if stop.is_set():
                    break
                now = time.monotonic()
                if w.schedule.continuous:
                    due, full = _due(w, now, settings)
                else:
                    nxt = w.schedule.next_due(datetime.datetime.fromtimestamp(w.last_sync))
                    due, full = nxt is not None and datetime.datetime.now() >= nxt, True
                if not due:
                    continue
                w.dirty = False
                w.retry_at = None
                again = cycle(w, full)
                w.last_sync = time.time()
                if full:
                    w.last_full = now
                if again is not None:
                    w.retry_at = time.monotonic() + again
                w.relay_seen = relay_fingerprint(w.relay_dir, w.own_dir)
            wake.wait(timeout=0.1)
            wake.clear()
    finally:
        observer.stop()
        observer.join(timeout=5)


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


def install_signal_handlers(stop: threading.Event) -> None:
    """For the life of the process: SIGINT/SIGTERM (CTRL_BREAK) set ``stop``."""
    StopOnSignals(stop).__enter__()
