"""The checks ``peersync doctor`` runs: service, stores, relay, cloud client, leftovers, peers, machine.

Each check reads; none repairs. The only writes are two empty probe files
named ``.peersync-tmp-doctor-*`` (ignored by every peer), one in the store
and one in this peer's own relay folder, removed at once, to prove both are
writable. Anything that can hang (a relay on a network share that went
away) is asked from a helper thread with a deadline, so the doctor answers
in a few seconds even offline.

Thresholds are the module constants below; docs/doctor.md explains each.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import secrets
import sqlite3
import stat
import statistics
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..engine import Engine
from ..errors import PeersyncError
from ..fsutil import IS_WINDOWS, TEMP_PREFIX, is_disk_full
from ..lock import Lock
from ..relay import BUNDLE_RE, PEER_ID_RE, Relay
from ..state import Identity, State, StoreConfig
from ..store import check_marker, roster_key
from . import clients as cl
from .report import Check, Report
from .system import ProcInfo, System, same_user
from .winattrs import is_placeholder, placeholder_flags

log = logging.getLogger("peersync")

T = TypeVar("T")

# -- thresholds (docs/doctor.md) ------------------------------------------------------------------

#: A peer whose heartbeat is older than this is reported silent (asleep, off, or its cloud client stopped).
SILENT_PEER_SECONDS = 24 * 3600
#: A store whose last sync is older than this is reported stale (the service is not syncing it).
STALE_SYNC_SECONDS = 24 * 3600
#: A clock difference above this between two peers is reported (conflict winners go by mtime).
CLOCK_SKEW_SECONDS = 300
#: A temporary file older than this is "stuck": an interrupted upload, download or write.
STALE_TEMP_SECONDS = 3600
#: How long the relay folder may take to answer before it is reported unreachable.
RELAY_TIMEOUT_SECONDS = 5.0
#: Free space on the relay's disk: fail under FREE_FAIL_BYTES, warn under FREE_WARN_BYTES, and
#: warn under FREE_WARN_RATIO of the disk while less than FREE_RATIO_CAP_BYTES is free (so a
#: large disk with plenty of room left is not reported because of a percentage).
FREE_FAIL_BYTES = 100 * 1024**2
FREE_WARN_BYTES = 1024**3
FREE_WARN_RATIO = 0.05
FREE_RATIO_CAP_BYTES = 20 * 1024**3
#: At most this many relay entries are looked at (a bound on the time taken).
MAX_RELAY_ENTRIES = 20_000
#: Names quoted in a finding; the details carry up to DETAILS_LIMIT.
FINDING_LIMIT = 3
DETAILS_LIMIT = 50

PROBE_PREFIX = TEMP_PREFIX + "doctor-"

SERVICE_FIX = "start it with `peersync run`, or install it to start at logon (`peersync service install`)"


# -- small helpers --------------------------------------------------------------------------------


def ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def nbytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def listing(names: list[str]) -> str:
    shown = ", ".join(names[:FINDING_LIMIT])
    return shown + (f" and {len(names) - FINDING_LIMIT} more" if len(names) > FINDING_LIMIT else "")


def within(fn: Callable[[], T], timeout: float) -> tuple[bool, T | None, BaseException | None]:
    """Run ``fn`` in a helper thread: (answered in time, result, exception)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported, never raised into the doctor
            box["error"] = exc

    t = threading.Thread(target=run, name="peersync-doctor-probe", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        return False, None, None
    return True, box.get("value"), box.get("error")


def probe_write(folder: Path) -> None:
    """Create and remove an empty file in ``folder``; raises OSError when that is not possible."""
    probe = folder / f"{PROBE_PREFIX}{secrets.token_hex(4)}"
    with open(probe, "xb"):
        pass
    probe.unlink()


def arrival_time(st: os.stat_result) -> float:
    """When a file last changed *on this machine*, by this machine's clock.

    A cloud client may copy the author's modification time onto the file it
    downloads; the inode change time (POSIX) and creation time (Windows) are set
    locally, so the latest of them is the best local arrival time there is.
    """
    local = getattr(st, "st_birthtime", None) if IS_WINDOWS else st.st_ctime
    return max(st.st_mtime, float(local or 0))


def parse_standby(output: str) -> tuple[int, int] | None:
    """(AC, DC) "sleep after" seconds from ``powercfg /query ... SUB_SLEEP STANDBYIDLE``.

    The labels are translated on non-English Windows, so the values are taken
    by position: the last two hexadecimal numbers are the AC and DC indexes.
    """
    values = re.findall(r"0x([0-9a-fA-F]+)", output)
    if len(values) < 2:
        return None
    return int(values[-2], 16), int(values[-1], 16)


# -- the relay walk ---------------------------------------------------------------------------------


@dataclasses.dataclass
class RelayScan:
    conflicts: list[dict[str, str]] = dataclasses.field(default_factory=list)
    stuck: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    in_transit: int = 0
    placeholders: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    unknown: list[str] = dataclasses.field(default_factory=list)
    entries: int = 0
    truncated: bool = False


def _layout_child(kind: str, name: str, is_dir: bool) -> str | None:
    """What ``name`` is inside a relay folder of ``kind``, or None when it is not part of the layout."""
    if kind == "store":
        if name == "store.json" and not is_dir:
            return "file"
        if name == "peers" and is_dir:
            return "peers"
    elif kind == "peers":
        if is_dir and PEER_ID_RE.match(name):
            return "peer"
    elif kind == "peer":
        if name in ("peer.json", "heartbeat.json") and not is_dir:
            return "file"
        if name == "bundles" and is_dir:
            return "bundles"
        if name == "snapshots" and is_dir:
            return "free"
    elif kind == "bundles":
        if BUNDLE_RE.match(name) and not is_dir:
            return "file"
    elif kind == "free":  # snapshots/: any layout inside
        return "free" if is_dir else "file"
    return None


def _is_layout_name(kind: str, name: str) -> bool:
    return _layout_child(kind, name, True) is not None or _layout_child(kind, name, False) is not None


def _known_in(kind: str, names: set[str]) -> Callable[[str], bool]:
    """Whether a name could be the original of a copy found in a relay folder of ``kind`` holding ``names``."""
    def known(base: str) -> bool:
        return base in names or _is_layout_name(kind, base)
    return known


def scan_relay(root: Path, system: System, prefer: cl.CloudClient | None, now: float) -> RelayScan:
    """Walk ``<relay>/<store-id>/`` for what the cloud service left: copies, stuck temporaries, placeholders.

    Only directory listings and lstat are used, never a read, so an online-only
    file is not downloaded by looking at it.
    """
    scan = RelayScan()
    try:
        st = os.stat(root, follow_symlinks=False)
        attrs = system.file_attributes(str(root), st)
        if is_placeholder(attrs):
            scan.placeholders.append({"path": ".", "flags": placeholder_flags(attrs)})
    except OSError:
        return scan
    stack: list[tuple[Path, str, str]] = [(root, "", "store")]
    while stack:
        folder, rel, kind = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        names = {e.name for e in entries}
        for e in entries:
            scan.entries += 1
            if scan.entries > MAX_RELAY_ENTRIES:
                scan.truncated = True
                return scan
            path = f"{rel}/{e.name}" if rel else e.name
            try:
                est = e.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(est.st_mode)
            attrs = system.file_attributes(e.path, est)
            if is_placeholder(attrs):
                scan.placeholders.append({"path": path, "flags": placeholder_flags(attrs)})
            age = now - est.st_mtime
            if e.name.startswith(TEMP_PREFIX):
                if age > STALE_TEMP_SECONDS:
                    scan.stuck.append({"path": path, "age_seconds": round(age), "by": "peersync"})
                else:
                    scan.in_transit += 1
                continue
            child = _layout_child(kind, e.name, is_dir)
            if child is not None and kind != "free":
                if is_dir:
                    stack.append((Path(e.path), path, child))
                continue
            if e.name in cl.LITTER:
                continue
            match = cl.match_conflict(e.name, _known_in(kind, names), prefer=prefer)
            if match is not None:
                scan.conflicts.append({"path": path, "client": match.client.name, "copy_of": match.original})
                continue
            who = cl.match_temp(e.name)
            if who is not None:
                if age > STALE_TEMP_SECONDS:
                    scan.stuck.append({"path": path, "age_seconds": round(age), "by": who})
                else:
                    scan.in_transit += 1
                continue
            if child is not None:  # inside snapshots/
                if is_dir:
                    stack.append((Path(e.path), path, child))
                continue
            scan.unknown.append(path + ("/" if is_dir else ""))
    return scan


# -- the doctor -----------------------------------------------------------------------------------


class Doctor:
    """Runs every check for one state folder and collects the report."""

    def __init__(self, state: State, system: System) -> None:
        self.state = state
        self.system = system
        self.now = system.now()
        self.checks: list[Check] = []
        self._roots: tuple[list[cl.ClientRoot], list[str]] | None = None

    def add(self, check_id: str, status: str, finding: str, fix: str = "", **details: Any) -> None:
        self.checks.append(Check(check_id, status, finding, fix, details))

    def roots(self) -> list[cl.ClientRoot]:
        if self._roots is None:
            try:
                self._roots = cl.find_roots(self.system)
            except Exception as exc:  # discovery must never break the doctor
                log.debug("cloud client discovery failed", exc_info=True)
                self._roots = ([], [f"discovery failed ({exc.__class__.__name__}: {exc})"])
        return self._roots[0]

    # -- top level ------------------------------------------------------------------------------

    def run(self) -> Report:
        ident = self.check_identity()
        self.check_service()
        stores = self.check_config()
        self.check_cloud_clients()
        if ident is not None:
            for cfg in stores:
                try:
                    self.check_store(cfg, ident)
                except Exception as exc:  # one store's surprise must not hide the others' findings
                    log.exception("doctor: checking store %s failed", cfg.name)
                    self.add(f"store:{cfg.name}", "fail", f"checking store {cfg.name} failed unexpectedly "
                             f"({exc.__class__.__name__}: {exc})", "see the log file; report this as a bug")
        self.check_power()
        return Report(self.checks, time=self.now)

    def check_identity(self) -> Identity | None:
        if not self.state.exists:
            self.add("identity", "fail", f"no peersync identity in {self.state.root}",
                     "run `peersync init` or `peersync join` first, or set PEERSYNC_HOME to the right state folder")
            return None
        try:
            ident = self.state.identity()
        except PeersyncError as exc:
            self.add("identity", "fail", exc.message, exc.hint)
            return None
        self.add("identity", "ok", f"peer {ident.name} ({ident.short}), user {ident.user} on {ident.machine}",
                 peer_id=ident.peer_id, user=ident.user, machine=ident.machine)
        return ident

    def check_config(self) -> list[StoreConfig]:
        if not self.state.root.is_dir():
            return []
        try:
            stores = self.state.stores()
        except PeersyncError as exc:
            self.add("config", "fail", exc.message, exc.hint)
            return []
        if not stores:
            self.add("stores", "warn", "this peer keeps no store", "run `peersync init` or `peersync join`")
        return stores

    # -- the service ---------------------------------------------------------------------------------

    def check_service(self) -> None:
        pid = Lock(self.state, "service").holder() if self.state.root.is_dir() else None
        if pid is None:
            self.add("service", "warn", f"the peersync service is not running for user {self.system.user}",
                     SERVICE_FIX)
            return
        proc = self.system.process(pid)
        try:
            locked_at = (self.state.root / "service.pid").stat().st_mtime
        except OSError:
            locked_at = self.now
        if proc is None or (proc.create_time is not None and proc.create_time > locked_at + 5):
            self.add("service", "warn", f"the peersync service is not running (its pid file names process {pid}, "
                     "which has ended)", SERVICE_FIX, stale_pid=pid)
            return
        if proc.username and not same_user(proc.username, self.system.user, self.system.platform):
            self.add("service", "warn", f"process {pid} holding this state folder runs as {proc.username}, "
                     f"not as {self.system.user}",
                     "stop it, and run the service as the user who owns the state folder", pid=pid)
            return
        since = f" since {when(proc.create_time)}" if proc.create_time else ""
        details: dict[str, Any] = {"pid": pid, "started": proc.create_time}
        if _is_one_off(proc):
            self.add("service", "warn", f"the background service is not running; a one-off peersync command "
                     f"(pid {pid}) holds the state folder{since}", SERVICE_FIX, **details)
            return
        self.add("service", "ok", f"the service is running for {self.system.user}{since} (pid {pid})", **details)

    # -- cloud clients on this machine ---------------------------------------------------------------------

    def check_cloud_clients(self) -> None:
        roots = self.roots()
        problems = self._roots[1] if self._roots else []
        listed = [{"client": r.client.name, "label": r.label, "path": r.path, "evidence": r.evidence,
                   "weak": r.weak} for r in roots]
        if roots:
            self.add("cloud:clients", "info", f"cloud client folders of this user: {cl.describe_roots(roots)}",
                     roots=listed, unreadable=problems)
        else:
            names = ", ".join(c.name for c in cl.CLIENTS)
            self.add("cloud:clients", "info", f"no recognised cloud client is set up for this user "
                     f"(looked for {names})", roots=[], unreadable=problems)

    # -- one store -----------------------------------------------------------------------------------

    def check_store(self, cfg: StoreConfig, ident: Identity) -> None:
        s, r = f"store:{cfg.name}", f"relay:{cfg.name}"
        try:
            check_marker(cfg, ident)
            self.add(f"{s}:marker", "ok", f"{cfg.root} is present and marked as this peer's store")
            marker_ok = True
        except PeersyncError as exc:
            self.add(f"{s}:marker", "fail", exc.message, exc.hint)
            marker_ok = False
        if marker_ok:
            self._writable(f"{s}:writable", cfg.root, "the store folder")
        self._location(s, cfg)

        answered, is_dir, _err = within(lambda: self.system.is_dir(cfg.relay), RELAY_TIMEOUT_SECONDS)
        engine = self._engine(s, cfg, ident)
        try:
            summary: dict[str, Any] | None = None
            if engine is not None:
                summary = engine.summary() if answered else _offline_summary(engine)
                self._sync_state(s, summary, str(engine.settings.get("schedule", "continuous")))
            if not answered:
                self.add(f"{r}:present", "fail", f"the relay folder {cfg.relay} did not answer within "
                         f"{RELAY_TIMEOUT_SECONDS:g} s (a network drive that is unreachable?)",
                         "reconnect the drive or the network; changes wait and are sent when it is back")
                return
            if not is_dir:
                self.add(f"{r}:present", "fail", f"the relay folder {cfg.relay} is missing",
                         "start the cloud client and check that the folder exists at this path; "
                         "changes wait until it is back")
                return
            self._relay(r, cfg, ident, engine)
        finally:
            if engine is not None:
                engine.close()

    def _writable(self, check_id: str, folder: Path, what: str, ok: str = "") -> None:
        try:
            probe_write(folder)
        except OSError as exc:
            hint = "free some space on that disk" if is_disk_full(exc) else \
                "check the folder's permissions and that no program (antivirus, backup) locks it"
            self.add(check_id, "fail", f"{what} {folder} is not writable ({exc.strerror or exc})", hint)
            return
        self.add(check_id, "ok", ok or f"{what} is writable")

    def _location(self, s: str, cfg: StoreConfig) -> None:
        hit = cl.locate(cfg.path, self.roots(), self.system)
        if hit is None:
            self.add(f"{s}:location", "ok", "the store folder is outside every recognised cloud client folder")
            return
        self.add(f"{s}:location", "warn", f"the store folder is itself inside {hit.title} ({hit.path}): the cloud "
                 "client and peersync would both sync it, and the cloud would make conflicted copies",
                 "keep the store outside cloud folders (make a new store with `peersync init` elsewhere), "
                 "or exclude it from the cloud client", client=hit.client.name, root=hit.path)

    def _engine(self, s: str, cfg: StoreConfig, ident: Identity) -> Engine | None:
        index = self.state.store_dir(cfg.id) / "index.db"
        if not index.is_file():
            self.add(f"{s}:index", "fail", f"the index {index} is missing",
                     "run `peersync sync`: it rescans the folder and reads the relay again", path=str(index))
            return None
        try:
            engine = Engine(self.state, cfg, ident)
        except PeersyncError as exc:
            self.add(f"{s}:secret", "fail", exc.message, exc.hint)
            return None
        except sqlite3.DatabaseError as exc:
            self.add(f"{s}:index", "fail", f"the index {index} cannot be opened ({exc})",
                     f"stop the service, move {index.name} aside and run `peersync sync` to rebuild it",
                     path=str(index))
            return None
        try:
            ok = engine.index.integrity_ok()
        except sqlite3.DatabaseError as exc:
            ok, why = False, str(exc)
        else:
            why = "SQLite integrity check failed"
        if ok:
            self.add(f"{s}:index", "ok", "the index passes SQLite's integrity check", path=str(index))
            return engine
        self.add(f"{s}:index", "fail", f"the index {index} is damaged ({why})",
                 f"stop the service, move {index.name} aside and run `peersync sync` to rebuild it", path=str(index))
        engine.close()
        return None

    def _sync_state(self, s: str, summary: dict[str, Any], schedule: str) -> None:
        last, ok = summary.get("last_sync"), summary.get("last_sync_ok")
        stale = stale_after(schedule)
        if not last:
            self.add(f"{s}:last-sync", "warn", "this store has never been synced", "run `peersync sync`")
        elif not ok:
            self.add(f"{s}:last-sync", "warn", f"the last sync ({ago(self.now - last)} ago) did not finish cleanly",
                     "see `peersync errors`", last_sync=last)
        elif stale is None and self.now - last > STALE_SYNC_SECONDS:
            self.add(f"{s}:last-sync", "info", f"the last sync was {ago(self.now - last)} ago; this store syncs "
                     "only on demand (schedule: manual)", "run `peersync sync` when you want it synced",
                     last_sync=last)
        elif stale is not None and self.now - last > stale:
            self.add(f"{s}:last-sync", "warn", f"the last sync was {ago(self.now - last)} ago (schedule: {schedule})",
                     "start the service (`peersync run`) or run `peersync sync`", last_sync=last)
        else:
            self.add(f"{s}:last-sync", "ok", f"the last sync, {ago(self.now - last)} ago, succeeded", last_sync=last)

        errors = summary.get("errors", [])
        if errors:
            first = errors[0]
            self.add(f"{s}:errors", "warn", f"{len(errors)} unresolved error{'s' if len(errors) != 1 else ''}; "
                     f"first: {first['subject']}: {first['message']}",
                     (first.get("hint") or "it is retried every cycle") + "; `peersync errors` lists them all",
                     errors=[{k: e.get(k) for k in ("key", "subject", "message", "hint", "cycles")}
                             for e in errors[:DETAILS_LIMIT]])
        else:
            self.add(f"{s}:errors", "ok", "no unresolved errors")

        conflicts = summary.get("conflicts", [])
        if conflicts:
            self.add(f"{s}:conflicts", "warn", f"{len(conflicts)} conflict cop{'ies' if len(conflicts) != 1 else 'y'} "
                     f"to resolve: {listing(conflicts)}",
                     "open both versions, keep the right one and delete the .sync-conflict copy "
                     "(`peersync conflicts` lists them)", conflicts=conflicts[:DETAILS_LIMIT])
        else:
            self.add(f"{s}:conflicts", "ok", "no conflict copies to resolve")

        out, inc = summary.get("pending_out", 0), summary.get("pending_in", 0)
        self.add(f"{s}:pending", "ok" if not (out or inc) else "info",
                 "nothing waiting to be sent or applied" if not (out or inc)
                 else f"{out} local change{'s' if out != 1 else ''} waiting to be sent, "
                      f"{inc} remote change{'s' if inc != 1 else ''} waiting to be applied",
                 pending_out=out, pending_in=inc)

    # -- the relay ------------------------------------------------------------------------------------

    def _relay(self, r: str, cfg: StoreConfig, ident: Identity, engine: Engine | None) -> None:
        relay = Relay(Path(cfg.relay), cfg.id)
        own = relay.peer_dir(ident.peer_id)
        if own.is_dir():
            self._writable(f"{r}:present", own, "the relay folder", f"the relay {cfg.relay} is present and writable")
        elif os.access(cfg.relay, os.W_OK):
            self.add(f"{r}:present", "ok", f"the relay {cfg.relay} is present and writable")
        else:
            self.add(f"{r}:present", "fail", f"the relay folder {cfg.relay} is read-only for {self.system.user}",
                     "check the folder's permissions; each OS user needs the relay in their own cloud folder")

        if not relay.root.is_dir():
            self.add(f"{r}:layout", "warn", f"the relay holds no folder for this store ({cfg.id}) yet",
                     "if another machine set the store up, wait for the cloud client to deliver it; otherwise "
                     "check that this is the same relay folder as on the other machines")
        elif not (own / "peer.json").is_file():
            self.add(f"{r}:layout", "fail", "this peer's record (peers/<id>/peer.json) is missing from the relay, "
                     "so the other peers ignore what it sends",
                     "check that this is the same relay folder as on the other machines; if it is, re-join "
                     "the store with a new invite")
        elif relay.store_json() is None:
            self.add(f"{r}:layout", "warn", "the relay has no readable store.json for this store yet",
                     "wait for the cloud client to deliver it from the machine that created the store")
        else:
            self.add(f"{r}:layout", "ok", "the relay holds this store and this peer's record")

        self._space(r, cfg.relay)
        hit = self.check_relay_cloud(r, cfg.relay)
        self._leftovers(r, relay, hit)
        self._peers(r, cfg, ident, relay, engine)

    def _space(self, r: str, path: str) -> None:
        try:
            total, free = self.system.disk_usage(path)
        except OSError as exc:
            self.add(f"{r}:space", "warn", f"free space on the relay's disk cannot be read ({exc.strerror or exc})")
            return
        ratio = free / total if total else 1.0
        finding = f"{nbytes(free)} free of {nbytes(total)} ({ratio:.0%}) on the relay's disk"
        details: dict[str, Any] = {"free_bytes": free, "total_bytes": total}
        fix = "free some space on that disk: the cloud client needs room to download bundles"
        if free < FREE_FAIL_BYTES:
            self.add(f"{r}:space", "fail", finding, fix, **details)
        elif free < FREE_WARN_BYTES or (free < FREE_RATIO_CAP_BYTES and ratio < FREE_WARN_RATIO):
            self.add(f"{r}:space", "warn", finding, fix, **details)
        else:
            self.add(f"{r}:space", "ok", finding, **details)

    def check_relay_cloud(self, r: str, path: str) -> cl.ClientRoot | None:
        """``r:cloud``: which client's folder holds ``path``; then ``r:client``: does that client run for this user."""
        roots = self.roots()
        hit = cl.locate(path, roots, self.system)
        if hit is None:
            seen = f" (found: {cl.describe_roots(roots)})" if roots else ""
            self.add(f"{r}:cloud", "info", f"the relay is not inside the folder of a cloud client peersync "
                     f"recognises{seen}",
                     "nothing to do for a network share or another service; if a cloud client should replicate "
                     "the relay, check that client's settings", roots=[x.path for x in roots])
            return None
        weak = " — known only from its default location, the weakest evidence" if hit.weak else ""
        self.add(f"{r}:cloud", "ok", f"the relay is inside the {hit.title} folder {hit.path} "
                 f"(from {hit.evidence}){weak}", client=hit.client.name, label=hit.label, root=hit.path,
                 evidence=hit.evidence, weak=hit.weak)
        self._client_process(r, hit)
        return hit

    def _client_process(self, r: str, hit: cl.ClientRoot) -> None:
        names = hit.client.processes.get(self.system.platform, ())
        if not names:
            self.add(f"{r}:client", "info", f"peersync does not know {hit.client.name}'s process name on this "
                     "system, so it cannot tell whether it runs")
            return
        wanted = {n.casefold() for n in names}
        try:
            procs = [p for p in self.system.processes() if p.name.casefold() in wanted]
        except Exception as exc:  # psutil surprises on locked-down machines
            self.add(f"{r}:client", "info", f"the process list cannot be read ({exc.__class__.__name__})")
            return
        mine = [p for p in procs if same_user(p.username, self.system.user, self.system.platform)]
        if mine:
            self.add(f"{r}:client", "ok", f"{mine[0].name} is running in {self.system.user}'s session "
                     f"(pid {mine[0].pid})", pids=[p.pid for p in mine])
        elif procs:
            owners = sorted({p.username or "another user" for p in procs})
            self.add(f"{r}:client", "warn", f"{hit.client.name} runs only for {', '.join(owners)}, not for "
                     f"{self.system.user}: nothing uploads or downloads this user's relay",
                     f"sign in to {hit.client.name} as {self.system.user} and start it in this session",
                     owners=owners)
        else:
            self.add(f"{r}:client", "warn", f"{hit.client.name} is not running ({' or '.join(names)} not found): "
                     "the relay is neither uploaded nor downloaded",
                     f"start {hit.client.name} and sign in as {self.system.user}; make it start at logon")

    def _leftovers(self, r: str, relay: Relay, hit: cl.ClientRoot | None) -> None:
        prefer = hit.client if hit else None
        scan = scan_relay(relay.root, self.system, prefer, self.now)
        where = f"in {relay.root}"
        if scan.conflicts:
            names = [c["path"] for c in scan.conflicts]
            by = sorted({c["client"] for c in scan.conflicts})
            self.add(f"{r}:conflicted-copies", "warn",
                     f"{len(names)} conflicted cop{'ies' if len(names) != 1 else 'y'} made by the cloud service "
                     f"({' or '.join(by)} naming) {where}: {listing(names)}",
                     "delete them, peersync never reads them; if they keep coming back, two machines write as "
                     "the same peer: give each machine and user its own state folder",
                     files=scan.conflicts[:DETAILS_LIMIT])
        else:
            self.add(f"{r}:conflicted-copies", "ok", "no conflicted copies in the relay")
        if scan.stuck:
            names = [f"{t['path']} ({ago(t['age_seconds'])} old)" for t in scan.stuck]
            self.add(f"{r}:temp-files", "warn", f"{len(names)} temporary file{'s' if len(names) != 1 else ''} stuck "
                     f"for over {ago(STALE_TEMP_SECONDS)} {where}: {listing(names)}",
                     "check that the cloud client is running and not paused or out of quota; then delete them",
                     files=scan.stuck[:DETAILS_LIMIT], in_transit=scan.in_transit)
        else:
            self.add(f"{r}:temp-files", "ok", "no stuck temporary files in the relay"
                     + (f" ({scan.in_transit} in transit)" if scan.in_transit else ""), in_transit=scan.in_transit)
        if scan.placeholders:
            names = [p["path"] for p in scan.placeholders]
            fix = (hit.client.offline_fix if hit and hit.client.offline_fix else
                   'mark the relay folder "always available offline" in the cloud client '
                   '(OneDrive: attrib +p -u /s /d "{path}\\*")').format(path=relay.relay_root)
            self.add(f"{r}:placeholders", "warn", f"{len(names)} online-only placeholder"
                     f"{'s' if len(names) != 1 else ''} {where} ({listing(names)}): their content is not on this "
                     "disk and the cloud client may remove it again", f"make the relay always available offline: {fix}",
                     files=scan.placeholders[:DETAILS_LIMIT])
        else:
            self.add(f"{r}:placeholders", "ok", "every relay file is kept on this disk")
        if scan.unknown:
            n = len(scan.unknown)
            self.add(f"{r}:other-files", "info", f"{n} other file{'s' if n != 1 else ''} "
                     f"in the relay, ignored by peersync: {listing(scan.unknown)}",
                     "delete them if nobody needs them", files=scan.unknown[:DETAILS_LIMIT])
        if scan.truncated:
            self.add(f"{r}:scan", "info", f"only the first {MAX_RELAY_ENTRIES} relay entries were looked at")

    # -- peers ------------------------------------------------------------------------------------

    def _peers(self, r: str, cfg: StoreConfig, ident: Identity, relay: Relay, engine: Engine | None) -> None:
        try:
            keys = {0: roster_key(self.state.store_secret(cfg.id))}
        except PeersyncError:
            return  # reported as store:<name>:secret
        if engine is not None:
            roster, problems = engine.roster()
        else:
            roster, problems = relay.roster(keys)
        for peer, problem in sorted(problems.items()):
            status = "info" if "no peer.json yet" in problem else "warn"
            self.add(f"peer:{cfg.name}:{peer[:7]}", status, f"relay folder of peer {peer[:7]}: {problem}",
                     "" if status == "info" else "its bundles are ignored; if this peer is yours, re-join it "
                     "with an invite")
        my_seq = engine.index.meta_int("last_bundle_seq") if engine is not None else None
        lags: list[float] = []
        for peer, rec in sorted(roster.items()):
            if peer == ident.peer_id:
                continue
            pid = f"peer:{cfg.name}:{peer[:7]}"
            who = f"peer {rec.name} ({peer[:7]}, {rec.user} on {rec.machine})"
            beat = relay.read_heartbeat(peer, rec.public_key)
            if beat is None or not isinstance(beat.get("time"), (int, float)):
                self.add(pid, "warn", f"{who} has no readable heartbeat in the relay yet",
                         "it has not synced since it joined: check that machine, its peersync service and its "
                         "cloud client", peer=peer)
                continue
            t = float(beat["time"])
            try:
                arrived: float | None = arrival_time((relay.peer_dir(peer) / "heartbeat.json").stat())
            except OSError:
                arrived = None
            age = self.now - t
            raw_applied = beat.get("applied")
            applied: dict[str, Any] = raw_applied if isinstance(raw_applied, dict) else {}
            details: dict[str, Any] = {"peer": peer, "heartbeat_time": t, "age_seconds": round(age),
                                       "health": beat.get("health"), "errors": beat.get("errors")}
            behind = ""
            if my_seq:
                got = int(applied.get(ident.peer_id, 0) or 0)
                details["applied_of_ours"], details["published_by_us"] = got, my_seq
                if got < my_seq:
                    behind = f"; it has applied {got} of this peer's {my_seq} bundles"
            own_errors = ""
            if beat.get("health") == "errors":
                own_errors = f"; it reports {beat.get('errors')} errors of its own"
            if age > SILENT_PEER_SECONDS:
                self.add(pid, "warn", f"{who} has been silent for {ago(age)} (last heartbeat {when(t)}){behind}",
                         "that machine sleeps or is off, or its peersync service or cloud client stopped: "
                         "wake it and check both", **details)
            else:
                self.add(pid, "info" if own_errors else "ok",
                         f"{who} was last heard from {ago(max(age, 0))} ago{behind}{own_errors}",
                         "run `peersync doctor` on that machine" if own_errors else "", **details)
            if arrived is not None:
                lag = arrived - t
                if lag >= 0:
                    lags.append(lag)
                self._clock(pid, who, t, lag)
        self._propagation(r, lags)

    def _clock(self, pid: str, who: str, t: float, lag: float) -> None:
        """Compare a peer's clock with ours through its heartbeat.

        ``lag`` = (when the heartbeat changed here, by our clock) - (its "time", by its
        clock) = delivery delay + clock difference. The delay is never negative, so
        a lag below -CLOCK_SKEW_SECONDS proves the peer's clock is ahead by at least
        that much. A large positive lag is a slow delivery or our clock being ahead,
        which one heartbeat cannot tell apart: it is left to the propagation estimate.
        """
        ahead = max(t - self.now, -lag)
        if ahead > CLOCK_SKEW_SECONDS:
            self.add(f"{pid}:clock", "warn", f"the clock of {who} is about {ago(ahead)} ahead of this machine's "
                     "(approximate, from its heartbeat)",
                     "turn on automatic time synchronisation on both machines: conflict winners are chosen by "
                     "modification time", ahead_seconds=round(ahead))
        else:
            self.add(f"{pid}:clock", "ok", f"no clock difference above {ago(CLOCK_SKEW_SECONDS)} seen with peer "
                     f"{pid.rsplit(':', 1)[-1]} (approximate)", lag_seconds=round(lag, 1))

    def _propagation(self, r: str, lags: list[float]) -> None:
        if not lags:
            self.add(f"{r}:propagation", "info", "no heartbeat from another peer to estimate the relay's delay from")
            return
        median = statistics.median(lags)
        self.add(f"{r}:propagation", "info", f"the relay delivers in about {ago(median)} (rough estimate from "
                 f"{len(lags)} peer heartbeat{'s' if len(lags) != 1 else ''}: it includes any clock difference, "
                 "and reads 0 when the cloud client keeps the writer's file times)",
                 median_seconds=round(median, 1), samples=len(lags))

    # -- the machine ----------------------------------------------------------------------------------

    def check_power(self) -> None:
        if self.system.platform != "windows":
            self.add("machine:sleep", "info", f"power plan check not applicable on {self.system.platform}")
            return
        output = self.system.powercfg("/query", "SCHEME_CURRENT", "SUB_SLEEP", "STANDBYIDLE")
        parsed = parse_standby(output) if output else None
        if parsed is None:
            self.add("machine:sleep", "info", "the power plan could not be read (`powercfg /query` failed)")
            return
        ac, dc = parsed
        def sleeps(v: int) -> str:
            return "never" if v == 0 else f"after {ago(v)} idle"
        finding = f"on mains power this machine sleeps {sleeps(ac)}, on battery {sleeps(dc)}"
        if ac:
            self.add("machine:sleep", "info", finding + "; while asleep neither peersync nor the cloud client syncs",
                     "if other machines rely on this one (the office PC), set sleep to Never on mains power: "
                     "powercfg /change standby-timeout-ac 0", ac_seconds=ac, dc_seconds=dc)
        else:
            self.add("machine:sleep", "info", finding, ac_seconds=ac, dc_seconds=dc)


def stale_after(schedule: str) -> float | None:
    """Seconds after which a store's last sync is late for its schedule; None for ``manual``."""
    from ..schedule import parse

    try:
        sched = parse(schedule)
    except (PeersyncError, ValueError):
        return STALE_SYNC_SECONDS
    if sched.kind == "manual":
        return None
    if sched.kind == "weekly":
        return 8 * 86400.0
    if sched.kind == "daily":
        return STALE_SYNC_SECONDS + 6 * 3600
    if sched.kind == "interval":
        return max(STALE_SYNC_SECONDS, 3 * sched.minutes * 60)
    return STALE_SYNC_SECONDS


def _is_one_off(proc: ProcInfo) -> bool:
    """True when the lock holder is a `peersync sync` (or another command), not `peersync run`."""
    args = [a.casefold() for a in proc.cmdline]
    if not args:
        return False  # unreadable: give it the benefit of the doubt
    at = next((i for i, a in enumerate(args) if "peersync" in a or a.endswith("cli.py")), None)
    if at is None:
        return False
    rest = [a for a in args[at + 1:] if not a.startswith("-")]
    return bool(rest) and rest[0] != "run"


def _offline_summary(engine: Engine) -> dict[str, Any]:
    """What ``Engine.summary`` says without touching the relay (which did not answer)."""
    from ..conflict import is_conflict_copy

    idx = engine.index
    last = idx.get_meta("last_sync")
    return {
        "last_sync": float(last) if last else None,
        "last_sync_ok": bool(idx.meta_int("last_sync_ok")),
        "errors": idx.errors(),
        "conflicts": [e.path for e in idx.entries(live_only=True) if is_conflict_copy(e.path)],
        "pending_out": len(idx.outgoing()),
        "pending_in": len(idx.pending()),
    }


def run_checks(state: State, system: System) -> Report:
    """Every check for ``state``'s peer on ``system``."""
    return Doctor(state, system).run()
