"""The background service: one lock per state folder, and the watch-and-sync loop.

The loop wakes on filesystem events in a store (watchdog), on new files in
the relay (watchdog where the cloud client raises events, a cheap listing
poll where it does not), and on a periodic full rescan; a short debounce
turns a burst of saves into one cycle. SIGINT/SIGTERM set a flag that is
checked between atomic steps, so the loop ends after the current cycle.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import filelock
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .errors import RefusedError
from .fsutil import TEMP_PREFIX
from .state import State

log = logging.getLogger("peersync")


class ServiceLock:
    """Exactly one running sync or service per state folder; the holder's pid is readable."""

    def __init__(self, state: State) -> None:
        state.root.mkdir(parents=True, exist_ok=True)
        self._lock = filelock.FileLock(str(state.root / "service.lock"))
        self._pid_file = state.root / "service.pid"

    def holder(self) -> int | None:
        try:
            return int(self._pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

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


class _Wake(FileSystemEventHandler):
    def __init__(self, event: threading.Event, own: list[str]) -> None:
        self.event = event
        self.own = own  # this peer's own relay folders: its writes there are no news

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = str(event.src_path)
        name = os.path.basename(path)
        if name.startswith(TEMP_PREFIX) or event.event_type in ("opened", "closed_no_write"):
            return
        if any(path.startswith(o) for o in self.own):
            return
        self.event.set()


def relay_fingerprint(relay_dirs: list[Path], own: list[str]) -> tuple[Any, ...]:
    """A cheap summary of the relay's bundle folders: changes when a bundle arrives or grows."""
    out: list[Any] = []
    for root in relay_dirs:
        peers = root / "peers"
        try:
            for peer in os.scandir(peers):
                if any(peer.path.startswith(o.rstrip(os.sep)) for o in own):
                    continue
                for sub in ("bundles", ""):
                    folder = os.path.join(peer.path, sub) if sub else peer.path
                    try:
                        for f in os.scandir(folder):
                            if f.is_file():
                                st = f.stat()
                                out.append((f.path, st.st_size, st.st_mtime_ns))
                    except OSError:
                        pass
        except OSError:
            pass
    return tuple(sorted(out))


def run_loop(
    cycle: Callable[[bool], None],
    store_dirs: list[Path],
    relay_dirs: list[Path],
    own_dirs: list[Path],
    settings: dict[str, Any],
    stop: threading.Event,
) -> None:
    """Call ``cycle(full_rescan)`` whenever something may have changed, until ``stop`` is set."""
    wake = threading.Event()
    own = [str(d) + os.sep for d in own_dirs]
    observer = Observer()
    for folder in store_dirs + relay_dirs:
        if folder.is_dir():
            try:
                observer.schedule(_Wake(wake, own), str(folder), recursive=True)
            except OSError as exc:
                log.warning("cannot watch %s (%s); polling instead", folder, exc)
    observer.start()
    poll = float(settings["poll_seconds"])
    debounce = float(settings["debounce_seconds"])
    rescan = float(settings["rescan_seconds"])
    last_full = 0.0
    seen_relay = None
    try:
        while not stop.is_set():
            now = time.monotonic()
            full = now - last_full >= rescan
            wake.clear()
            cycle(full)
            if full:
                last_full = now
            seen_relay = relay_fingerprint(relay_dirs, own)
            deadline = time.monotonic() + poll
            while not stop.is_set():
                if wake.wait(timeout=min(0.25, max(0.0, deadline - time.monotonic()))):
                    time.sleep(debounce)  # let a burst of saves finish
                    break
                if time.monotonic() >= deadline:
                    current = relay_fingerprint(relay_dirs, own)
                    if current != seen_relay or time.monotonic() - last_full >= rescan:
                        break
                    deadline = time.monotonic() + poll
    finally:
        observer.stop()
        observer.join(timeout=5)


def install_signal_handlers(stop: threading.Event) -> None:
    def handler(signum: int, frame: object) -> None:
        log.info("signal %s: stopping after the current step", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if hasattr(signal, "SIGBREAK"):  # CTRL_BREAK on Windows
        signal.signal(signal.SIGBREAK, handler)
