"""The background service: one lock per state folder, and the watch-and-sync loop.

The loop wakes on filesystem events in a store (watchdog), on new files in
the relay (watchdog where the cloud client raises events, a cheap listing
poll where it does not), and on a periodic full rescan; a short debounce
turns a burst of saves into one cycle. While a store's watch runs, a cycle
scans only the paths it reported; the whole store is scanned at start, every
``rescan_seconds``, and whenever events may have been lost. SIGINT/SIGTERM set a flag that the
cycle checks between atomic steps (a file scanned, a bundle written, a record
applied), so the loop ends after the current step.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
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
from .stop import StopOnSignals as StopOnSignals  # re-exported: the service installs it for its life

log = logging.getLogger("peersync")

# A store whose watch is not running is watched again at most this often (seconds): setting up a
# recursive watch walks the whole folder. Meanwhile every cycle scans the whole store.
REWATCH_SECONDS = 60.0


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
    # The paths the store's watcher reported since the last cycle, store-relative with '/':
    # path -> walk it whole if it is a folder (one created, deleted or moved raises no events for
    # what it holds). ``lost``: events were lost (the queue overflowed, too many paths), so the
    # next scan is a full one.
    changed: dict[str, bool] = dataclasses.field(default_factory=dict)
    lost: bool = False
    watch: Any = None  # the store folder's watch, once scheduled
    watch_id: tuple[int, int] | None = None  # (device, inode) of the store folder the watch is on
    rewatch_at: float = 0.0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def note(self, rel: str, deep: bool, max_paths: int) -> None:
        """Remember a reported path (the caller holds ``lock``)."""
        if self.lost:
            return
        self.changed[rel] = self.changed.get(rel, False) or deep
        if len(self.changed) > max_paths:
            self.lost, self.changed = True, {}


class _Wake(FileSystemEventHandler):
    """Wakes the loop on any event; for a store folder, also notes which paths changed."""

    def __init__(self, watched: Watched, event: threading.Event, max_paths: int = 0, store: bool = False) -> None:
        self.watched = watched
        self.event = event
        self.own = str(watched.own_dir) + os.sep
        self.store = store
        self.max_paths = max_paths
        self.roots = sorted({str(watched.store_dir), os.path.realpath(watched.store_dir)})

    def _rel(self, path: str) -> str | None:
        """The store-relative path of an event's path; "" for the store folder; None if it is not in the store."""
        for root in self.roots:
            try:
                rel = os.path.relpath(path, root)
            except ValueError:  # another drive
                continue
            if rel == os.curdir:
                return ""
            if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
                return rel.replace(os.sep, "/")
        return None

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = str(event.src_path)
        kind = event.event_type
        if os.path.basename(path).startswith(TEMP_PREFIX) or kind in ("opened", "closed_no_write"):
            return  # peersync's own temporary files, renamed into place by an apply, are no news
        if path.startswith(self.own):
            return
        now = time.monotonic()
        w = self.watched
        with w.lock:
            if self.store and not (event.is_directory and kind == "modified"):  # a folder's content raises its own
                deep = event.is_directory and kind in ("created", "deleted", "moved")
                for p in (path, str(event.dest_path)) if kind == "moved" else (path,):
                    rel = self._rel(p)
                    if rel is None:
                        w.lost = True  # a path it cannot place: the next scan is a full one
                    elif rel:
                        w.note(rel, deep, self.max_paths)
            if not w.dirty:
                w.first_event = now
            w.last_event = now
            w.dirty = True
        self.event.set()


class _Lost(logging.Handler):
    """Watchdog logs a warning when the kernel dropped events: every store's next scan is then a full one."""

    def __init__(self, watched: list[Watched]) -> None:
        super().__init__(logging.WARNING)
        self.watched = watched

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            for w in self.watched:
                with w.lock:
                    w.lost = True


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


def _folder_id(folder: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class _Watcher:
    """The watchdog observer, and whether each store's watch can be trusted to report every change."""

    def __init__(self, watched: list[Watched], wake: threading.Event, max_paths: int) -> None:
        self.observer = Observer()
        self.wake = wake
        self.max_paths = max_paths
        for w in watched:
            if not w.schedule.continuous:
                continue
            self.watch_store(w)
            w.rewatch_at = time.monotonic() + REWATCH_SECONDS
            try:
                if w.relay_dir.is_dir():
                    self.observer.schedule(_Wake(w, wake), str(w.relay_dir), recursive=True)
            except OSError as exc:
                log.warning("cannot watch %s (%s); polling instead", w.relay_dir, exc)

    def watch_store(self, w: Watched) -> None:
        """(Re)start watching a store folder: at start, and when it came back (remounted, moved back)."""
        if w.watch is not None:
            try:
                self.observer.unschedule(w.watch)
            except (KeyError, OSError):
                pass
            w.watch = None
        with w.lock:
            w.lost = True  # what happened while it was not watched is found by a full scan
        w.watch_id = _folder_id(w.store_dir)
        if w.watch_id is None:
            return
        try:
            w.watch = self.observer.schedule(_Wake(w, self.wake, self.max_paths, store=True), str(w.store_dir),
                                             recursive=True)
        except OSError as exc:
            log.warning("cannot watch %s (%s); it is scanned whole every cycle", w.store_dir, exc)
            w.watch = None

    def trusted(self, w: Watched) -> bool:
        """True while the store's watch runs on the folder it was set on."""
        if w.watch is None or not self.observer.is_alive():
            return False
        if not any(e.watch == w.watch and e.is_alive() for e in list(self.observer.emitters)):
            return False
        return _folder_id(w.store_dir) == w.watch_id


def run_loop(
    watched: list[Watched],
    cycle: Callable[[Watched, dict[str, bool] | None], float | None],
    settings: dict[str, Any],
    stop: threading.Event,
) -> None:
    """Call ``cycle(store, paths)`` whenever a store is due, until ``stop`` is set.

    ``paths`` are the store-relative paths the watcher reported since the
    last cycle (path -> walk it whole if a folder), or None when the whole
    store must be scanned: at start, every ``rescan_seconds``, after events
    were lost (``watch_max_paths`` exceeded, the kernel's queue overflowed),
    and whenever the store's watch is not running. ``cycle`` returns the
    seconds after which it wants to run again (deletions held back, files
    still being written) or None.
    """
    wake = threading.Event()
    watcher = _Watcher(watched, wake, int(settings["watch_max_paths"]))
    lost = _Lost(watched)
    logging.getLogger("watchdog").addHandler(lost)
    watcher.observer.start()
    try:
        while not stop.is_set():
            for w in watched:
                if stop.is_set():
                    break
                now = time.monotonic()
                if w.schedule.continuous:
                    if now >= w.rewatch_at and not watcher.trusted(w) and _folder_id(w.store_dir) is not None:
                        w.rewatch_at = now + REWATCH_SECONDS
                        watcher.watch_store(w)  # the folder is back (remounted, moved back), or the watch died
                    due, full = _due(w, now, settings)
                else:
                    nxt = w.schedule.next_due(datetime.datetime.fromtimestamp(w.last_sync))
                    due, full = nxt is not None and datetime.datetime.now() >= nxt, True
                if not due:
                    continue
                with w.lock:
                    changed, w.changed = w.changed, {}
                    lost_events, w.lost = w.lost, False
                    w.dirty = False
                partial = w.schedule.continuous and not full and not lost_events and watcher.trusted(w)
                w.retry_at = None
                again = cycle(w, changed if partial else None)
                w.last_sync = time.time()
                if not partial:
                    w.last_full = now
                if again is not None:
                    w.retry_at = time.monotonic() + again
                w.relay_seen = relay_fingerprint(w.relay_dir, w.own_dir)
            wake.wait(timeout=0.1)
            wake.clear()
    finally:
        logging.getLogger("watchdog").removeHandler(lost)
        watcher.observer.stop()
        watcher.observer.join(timeout=5)


def install_signal_handlers(stop: threading.Event) -> None:
    """For the life of the process: SIGINT/SIGTERM (CTRL_BREAK) set ``stop``."""
    StopOnSignals(stop).__enter__()
