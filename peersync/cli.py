"""The ``peersync`` command line: parse arguments, run one command, print one sentence on error.

Exit statuses follow DESIGN.md's contract: 0 done or in sync, 1 errors remain,
2 refused or bad input. Errors go to stderr as a plain sentence; a traceback
goes to the log file only.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import logging
import logging.handlers
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

from . import __version__, fsutil, paths
from .engine import CycleReport, Engine
from .errors import PeersyncError, RefusedError, UsageError
from .index import Index
from .lock import Lock
from .progress import reporter_for
from .schedule import parse as parse_schedule
from .state import DEFAULTS, State
from .store import init_store, join_store, make_invite, resolve_path

log = logging.getLogger("peersync")


# -- helpers ------------------------------------------------------------------------


def _out(text: str = "") -> None:
    print(text, flush=True)


def _when(ts: float | None) -> str:
    if not ts:
        return "never"
    age = time.time() - ts
    if age < 90:
        return f"{int(age)}s ago"
    if age < 5400:
        return f"{int(age // 60)} min ago"
    if age < 48 * 3600:
        return f"{age / 3600:.1f} h ago"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _setup_logging(state: State, verbose: bool, quiet: bool) -> None:
    logging.raiseExceptions = False  # a log file that cannot be written (full disk) never prints a traceback
    root = logging.getLogger("peersync")
    root.setLevel(logging.DEBUG)
    for old in list(root.handlers):
        old.close()
        root.removeHandler(old)
    root.propagate = False
    try:
        state.log_dir().mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            state.log_dir() / "peersync.log", maxBytes=2_000_000, backupCount=5, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        root.addHandler(handler)
    except OSError:
        pass
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.DEBUG if verbose else (logging.ERROR if quiet else logging.WARNING))
    console.setFormatter(logging.Formatter("%(message)s"))
    console.addFilter(lambda record: not record.exc_info)  # tracebacks go to the log file only
    root.addHandler(console)


# -- commands -------------------------------------------------------------------------


def cmd_init(state: State, args: argparse.Namespace) -> int:
    cfg = init_store(state, Path(args.store_dir), Path(args.relay), args.name)
    _out(f"Created store {cfg.name} in {cfg.path}, relayed through {cfg.relay}.")
    _out(f"Invite another peer with: peersync invite {cfg.name}")
    return 0


def cmd_invite(state: State, args: argparse.Namespace) -> int:
    ident = state.identity()
    stores = state.find_stores(args.store)
    if len(stores) > 1:
        raise UsageError("this peer keeps several stores", "name one: `peersync invite STORE`")
    cfg = stores[0]
    _out(f"Invite code for store {cfg.name}. It holds the store's secret: send it privately.")
    _out("On the other machine: peersync join CODE STORE_DIR --relay RELAY_DIR")
    _out(make_invite(cfg, state.store_secrets(cfg.id), ident))
    return 0


def cmd_join(state: State, args: argparse.Namespace) -> int:
    cfg, present = join_store(state, args.code, Path(args.store_dir), Path(args.relay))
    _out(f"Joined store {cfg.name} in {cfg.path}, relayed through {cfg.relay}.")
    if not present:
        _out("The relay does not hold this store yet; it syncs once your cloud client has delivered it.")
    return 0


def _report_line(r: CycleReport) -> str:
    if r.paused:
        return f"✗ {r.store}: {r.paused}"
    mark = "■" if r.stopped else "✓" if r.ok else "✗"
    parts = [f"{r.files} files", f"{r.published_ops} sent in {r.bundles_written} bundles",
             f"{r.applied_ops} applied"]
    if r.conflicts:
        parts.append(f"{r.conflicts} conflicts kept as copies")
    if r.stopped:
        parts.append(f"stopped during {r.stopped}; the next cycle does the rest")
    return f"{mark} {r.store}: " + ", ".join(parts)


def _engines(state: State, which: str | None, exclude: tuple[str, ...] = ()) -> list[Engine]:
    ident = state.identity()
    return [Engine(state, cfg, ident, exclude=exclude) for cfg in state.find_stores(which)]


def _print_report(report: CycleReport, quiet: bool = False) -> None:
    if not quiet or not report.ok:
        _out(_report_line(report))
    if not quiet:
        for w in report.waiting:
            _out(f"  … waiting: {w}")
    for e in report.errors:
        print(f"  ✗ {e['subject']}: {e['message']}" + (f" — {e['hint']}" if e["hint"] else ""), file=sys.stderr)


def cmd_sync(state: State, args: argparse.Namespace) -> int:
    """One cycle now, whatever the schedule; if the service runs, between two of its cycles.

    Ctrl-C (or SIGTERM) ends the cycle after its current atomic step, like the
    service's; the exit status is then 128 + the signal's number (130 for Ctrl-C).
    A second Ctrl-C interrupts at once.
    """
    from .stop import StopOnSignals

    lock = Lock(state, "cycle")
    try:
        lock.acquire(timeout=args.wait, what="finish its cycle")
    except RefusedError as exc:  # the contract: sync exits 0 in sync, 1 errors remain
        print(f"peersync: {exc.message}, in a long cycle; its changes are synced when it ends, or try again.",
              file=sys.stderr)
        return 1
    status = 0
    stop = threading.Event()
    try:
        with StopOnSignals(stop, interrupt_twice=True) as signals:
            engines = _engines(state, args.store)
            try:
                for engine in engines:
                    if stop.is_set():
                        break
                    reporter = reporter_for(sys.stderr, args.quiet)
                    engine.progress, engine.should_stop = reporter, stop.is_set
                    if not args.quiet:  # totals cost a count of the index (or of the store) to shown bars only
                        engine.expect = reporter.total
                    reporter.begin(engine.cfg.name)
                    try:
                        report = engine.cycle(allow_deletes=args.allow_deletes, exclude=tuple(args.exclude or ()))
                    finally:
                        reporter.end()
                    _print_report(report, args.quiet)
                    if not report.ok:
                        status = 1
            finally:
                for engine in engines:
                    engine.close()
    finally:
        lock.release()
    if signals.signum is not None:
        print("peersync: stopped by a signal after the current step; what was done is kept and the next sync "
              "does the rest.", file=sys.stderr)
        return 128 + int(signals.signum)
    return status


def cmd_run(state: State, args: argparse.Namespace) -> int:
    from .service import Watched, install_signal_handlers, run_loop

    service = Lock(state, "service")
    service.acquire(timeout=0, what="keep running")
    stop = threading.Event()
    install_signal_handlers(stop)
    cycle_lock = Lock(state, "cycle")
    try:
        engines = {e.cfg.id: e for e in _engines(state, args.store)}
        for e in engines.values():
            e.relay.check_owner()
        settings = state.settings()
        watched = [
            Watched(e.cfg.id, e.cfg.root, e.relay.root, e.relay.peer_dir(e.ident.peer_id),
                    parse_schedule(str(state.settings(e.cfg)["schedule"])),
                    last_sync=float(e.index.get_meta("last_sync") or 0))
            for e in engines.values()
        ]
        names = ", ".join(f"{e.cfg.name} ({w.schedule})" for e, w in zip(engines.values(), watched))
        log.info("service started (pid %s) for %s", os.getpid(), names)
        if not args.quiet:
            _out(f"peersync {__version__} is syncing {names}; Ctrl-C stops it.")

        def cycle(w: Watched, paths: dict[str, bool] | None) -> float | None:
            engine = engines[w.key]
            engine.should_stop = stop.is_set
            delay = float(state.settings(engine.cfg)["delete_delay_seconds"])
            deadline = time.monotonic() + 600
            while True:  # `peersync sync` may hold the cycle lock: wait for it, but not through a stop
                try:
                    cycle_lock.acquire(timeout=0.5, what="finish")
                    break
                except PeersyncError:
                    if stop.is_set() or time.monotonic() > deadline:
                        return 1.0
            try:
                report = engine.cycle(delete_delay=delay, paths=paths)
                log.debug("%s: scanned %s", engine.cfg.name, report.scanned)
            except PeersyncError as exc:
                log.error("%s: %s", engine.cfg.name, exc.sentence())
                return 5.0
            except Exception:  # the service outlives any one failing cycle; the log has the details
                log.exception("%s: the sync cycle failed", engine.cfg.name)
                return 30.0
            finally:
                cycle_lock.release()
            if report.applied_ops or report.published_ops or report.errors or report.paused or report.stopped:
                log.info(_report_line(report))
                if not args.quiet:
                    _out(_report_line(report))
            if report.deferred_deletes:
                return delay
            if report.unstable:
                return 1.0
            if report.pending or report.waiting or report.paused:
                return float(state.settings(engine.cfg)["poll_seconds"])  # retried every cycle
            return None

        run_loop(watched, cycle, settings, stop)
        for e in engines.values():
            e.close()
    finally:
        service.release()
    log.info("service stopped")
    return 0


def cmd_status(state: State, args: argparse.Namespace) -> int:
    summaries = []
    for engine in _engines(state, args.store):
        try:
            summaries.append(engine.summary())
        finally:
            engine.close()
    service = Lock(state, "service")
    running = service.held_by_other()
    if args.json:
        _out(json.dumps({"version": 1, "peer": state.identity().peer_id,
                         "service": {"running": running, "pid": service.holder() if running else None},
                         "stores": summaries}, indent=2))
        return 0
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"service: {'running (pid ' + str(service.holder()) + ')' if running else '[yellow]not running[/]'}")
    for s in summaries:
        ok = s["last_sync_ok"] and not s["errors"]
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        console.print(f"{mark} [bold]{escape(s['name'])}[/]  {escape(s['path'])}  [dim](schedule {s['schedule']})[/]")
        console.print(f"    last sync {_when(s['last_sync'])}"
                      f"{'' if s['last_sync_ok'] or not s['last_sync'] else ' [red]with errors[/]'}; "
                      f"pending out {s['pending_out']}, in {s['pending_in']}")
        for p in s["peers"]:
            behind = f", {p['bundles_behind']} bundles to apply" if p["bundles_behind"] else ""
            console.print(f"    peer {escape(p['name'])} ({p['id'][:7]}) last seen {_when(p['last_seen'])}{behind}")
        for peer, problem in s["unknown_peers"].items():
            console.print(f"    [yellow]! unknown peer folder {peer[:7]}: {escape(problem)}[/]")
        if s["conflicts"]:
            console.print(f"    [yellow]{len(s['conflicts'])} conflict copies[/] (peersync conflicts)")
        for e in s["errors"]:
            console.print(f"    [red]✗ {escape(e['subject'])}: {escape(e['message'])}[/]")
        for c in s["corrections"]:
            if time.time() - c["time"] < 24 * 3600:
                console.print(f"    ↻ {escape(c['subject'])}: {escape(c['action'])} ({_when(c['time'])})")
    return 0


def cmd_conflicts(state: State, args: argparse.Namespace) -> int:
    for engine in _engines(state, args.store):
        try:
            for path in engine.summary()["conflicts"]:
                _out(str(Path(engine.cfg.path) / path))
        finally:
            engine.close()
    return 0


def cmd_errors(state: State, args: argparse.Namespace) -> int:
    for engine in _engines(state, args.store):
        try:
            if args.clear:
                with engine.index.tx():
                    engine.index.clear_errors()
                _out(f"{engine.cfg.name}: errors cleared; the next sync reports what is still wrong.")
                continue
            errors = engine.index.errors()
            if not errors:
                _out(f"✓ {engine.cfg.name}: no errors.")
            for e in errors:
                _out(f"✗ {engine.cfg.name}: {e['subject']}: {e['message']}")
                _out(f"    since {_when(e['first_seen'])}, failed {e['cycles']} cycle"
                     f"{'s' if e['cycles'] != 1 else ''}; to do: {e['hint'] or 'nothing, it is retried every cycle'}")
            for c in engine.index.corrections()[-10:]:
                _out(f"↻ {engine.cfg.name}: {_when(c['time'])}: {c['subject']}: {c['action']}")
        finally:
            engine.close()
    return 0


def _confirm(yes: bool, what: str, question: str) -> bool:
    """Ask before a change that cannot be undone; without a terminal, --yes is required."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{what} needs confirmation", "add --yes")
    return input(question + " [y/N] ").strip().lower() in ("y", "yes")


def cmd_peers(state: State, args: argparse.Namespace) -> int:
    words = list(args.words)
    if words and words[0] == "remove":
        if len(words) != 2:
            raise UsageError("say which peer to remove: `peersync peers remove PEER` (its name or id)")
        return _peers_remove(state, words[1], args.store, args.yes)
    if len(words) > 1:
        raise UsageError("`peersync peers` takes at most one store")
    for engine in _engines(state, words[0] if words else args.store):
        try:
            roster, problems = engine.roster()
            mine = engine.index.meta_int("last_bundle_seq")
            _out(f"{engine.cfg.name}:")
            for peer, rec in sorted(roster.items(), key=lambda kv: kv[1].name):
                if peer == engine.ident.peer_id:
                    _out(f"  {peer[:7]}  {rec.name}  {rec.machine}  {rec.user}  (this peer)")
                    continue
                beat = engine.relay.read_heartbeat(peer, rec.public_key) or {}
                acked = int(beat.get("applied", {}).get(engine.ident.peer_id, 0)) if beat else 0
                _out(f"  {peer[:7]}  {rec.name}  {rec.machine}  {rec.user}  last seen {_when(beat.get('time'))}, "
                     f"has applied {acked} of this peer's {mine} bundles")
            for peer, after in sorted(engine.removed.items()):
                _out(f"  {peer[:7]}  removed (bundles after {after} rejected)")
            for peer, problem in sorted(problems.items()):
                _out(f"  {peer[:7]}  not a member: {problem}")
        finally:
            engine.close()
    return 0


def _peers_remove(state: State, which: str, store: str | None, yes: bool) -> int:
    engines = _engines(state, store)
    try:
        if len(engines) > 1:
            raise UsageError("this peer keeps several stores", "name one with --store")
        engine = engines[0]
        if not _confirm(yes, f"removing {which} from {engine.cfg.name}",
                        f"Remove {which} from {engine.cfg.name}? Its later bundles are rejected and the store "
                        "key is changed so it cannot read new ones."):
            _out("Nothing removed.")
            return 0
        lock = Lock(state, "cycle")
        lock.acquire(timeout=60, what="finish its cycle")
        try:
            target, after = engine.remove_peer(which)
        finally:
            lock.release()
        _out(f"Removed {target.name} ({target.peer_id[:7]}) from {engine.cfg.name}: bundles after {after} are "
             f"rejected and the store key was changed. New peers need a new invite.")
        return 0
    finally:
        for e in engines:
            e.close()


def _queue_items(engine: Engine) -> list[tuple[int, str, str, int]]:
    """(number, operation, path, size) in the order they will be sent."""
    items = []
    for n, e in enumerate(engine.index.outgoing(), 1):
        op = "delete" if e.deleted else "mkdir" if e.kind == "dir" else "put"
        items.append((n, op, e.path, 0 if e.deleted or e.kind == "dir" else e.size))
    return items


def cmd_queue(state: State, args: argparse.Namespace) -> int:
    words = list(args.words)
    if words and words[0] == "drop":
        if len(words) != 2:
            raise UsageError("say which item to drop: `peersync queue drop ITEM` (its number or path)")
        return _queue_drop(state, words[1], args.store, args.yes)
    if len(words) > 1:
        raise UsageError("`peersync queue` takes at most one store")
    store = words[0] if words else args.store
    lock = Lock(state, "cycle")
    lock.acquire(timeout=60, what="finish its cycle")
    try:
        engines = _engines(state, store)
        for engine in engines:
            engine.scan_only()
    finally:
        lock.release()
    for engine in engines:
        try:
            items = _queue_items(engine)
            _out(f"{engine.cfg.name}: {len(items)} changes to send" + (":" if items else ""))
            for n, op, path, size in items:
                _out(f"{n:5}  {op:<6}  {path}" + (f"  ({size} bytes)" if size else ""))
        finally:
            engine.close()
    return 0


def _queue_drop(state: State, item: str, store: str | None, yes: bool) -> int:
    engines = _engines(state, store)
    try:
        if len(engines) > 1 and item.isdigit():
            raise UsageError("several stores have queues", "name the store with --store")
        for engine in engines:
            items = _queue_items(engine)
            match = [i for i in items if str(i[0]) == item or i[2] == item.replace(os.sep, "/")]
            if not match:
                continue
            n, op, path, _size = match[0]
            if not _confirm(yes, f"dropping {path} from the queue",
                            f"Drop '{op} {path}' from {engine.cfg.name}'s queue? It stays local until it "
                            "changes again."):
                _out("Nothing dropped.")
                return 0
            with engine.index.tx():
                engine.index.drop_outgoing(path)
            _out(f"Dropped {op} {path}: it stays on this peer until it changes again.")
            return 0
        raise UsageError(f"no queued change {item!r}", "see `peersync queue`")
    finally:
        for e in engines:
            e.close()


def cmd_reset(state: State, args: argparse.Namespace) -> int:
    """Clear half-synced state so the next cycle redoes it from the files on disk; loses nothing."""
    if args.all == bool(args.path):
        raise UsageError("name a file or folder to reset, or use --all")
    targets: list[tuple[Engine, str | None]]
    if args.all:
        targets = [(e, None) for e in _engines(state, args.store)]
    else:
        cfg, path = resolve_path(state, args.path)
        targets = [(Engine(state, cfg, state.identity()), path)]
    lock = Lock(state, "cycle")
    lock.acquire(timeout=60, what="finish its cycle")
    try:
        for engine, rel in targets:
            engine.reset(rel)
            engine.close()
            _out(f"Reset {rel or 'everything'} in {engine.cfg.name}; the next sync redoes it from the files on disk.")
    finally:
        lock.release()
    return 0


def _versions_of(state: State, target: str) -> tuple[Any, str, Index, list[dict[str, Any]]]:
    cfg, rel = resolve_path(state, target)
    index = Index(state.store_dir(cfg.id) / "index.db")
    return cfg, rel, index, index.versions(rel)


def cmd_versions(state: State, args: argparse.Namespace) -> int:
    cfg, rel, index, versions = _versions_of(state, args.path)
    index.close()
    if not versions:
        _out(f"No earlier versions of {rel} are kept.")
        return 0
    for n, v in enumerate(versions, 1):
        when = datetime.datetime.fromtimestamp(v["archived_at"]).strftime("%Y-%m-%d %H:%M:%S")
        _out(f"{n:3}  {when}  {v['size']:>10} bytes  {v['reason']}  {v['hash'][:12]}")
    return 0


def cmd_restore(state: State, args: argparse.Namespace) -> int:
    from .versions import Archive

    cfg, rel, index, versions = _versions_of(state, args.path)
    try:
        if not versions:
            raise UsageError(f"no earlier versions of {rel} are kept")
        if not 1 <= args.version <= len(versions):
            raise UsageError(f"version {args.version} does not exist; {rel} has versions 1 to {len(versions)}")
        v = versions[args.version - 1]
        archive = Archive(state.versions_dir(cfg.id), index)
        source = archive.object_path(v["hash"])
        if not source.exists():
            raise UsageError(f"version {args.version} of {rel} is no longer in the archive")
        target = paths.join(cfg.root, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = fsutil.temp_name(target)
        try:
            if fsutil.copy_durable(source, tmp) != v["hash"]:
                raise UsageError(f"version {args.version} of {rel} is damaged in the archive")
            with index.tx():
                if target.is_file():
                    digest, size = fsutil.hash_file(target)
                    archive.keep(target, rel, digest, size, target.stat().st_mtime_ns, "replaced by restore")
                os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        index.close()
    _out(f"Restored version {args.version} of {rel}; the next sync sends it to the other peers.")
    return 0


def cmd_config(state: State, args: argparse.Namespace) -> int:
    store = state.find_stores(args.store)[0] if args.store else None
    if args.key and args.key not in DEFAULTS:
        raise UsageError(f"unknown setting {args.key!r}", "known settings: " + ", ".join(sorted(DEFAULTS)))
    if args.key and args.value is not None:
        state.set_setting(args.key, args.value, store)
        store = state.find_stores(args.store)[0] if args.store else None  # as it is saved now
    settings = state.settings(store)
    for key in sorted(settings):
        if args.key in (None, key):
            _out(f"{key} = {json.dumps(settings[key])}")
    return 0


def cmd_doctor(state: State, args: argparse.Namespace) -> int:
    from .health import doctor_main

    return doctor_main(state, args)


def cmd_service(state: State, args: argparse.Namespace) -> int:
    from . import svc

    host, status = svc.Host.current(), 0
    if args.action == "status":
        st, report = svc.status(host)
        status = 0 if st.running else 1
    elif args.action == "uninstall":
        report = svc.uninstall(host, state)
    else:
        report = svc.install(host, state, store=args.store, relay=args.relay, invite=args.invite, name=args.name,
                             restart=args.restart)
    for line in report.lines:
        _out(line)
    return status


def cmd_demo(state: State, args: argparse.Namespace) -> int:
    """Two peers on this machine sharing a local relay folder: edit one folder, watch the other."""
    from .service import install_signal_handlers

    base = Path(args.dir).expanduser().absolute()
    relay = base / "relay"
    relay.mkdir(parents=True, exist_ok=True)
    homes = {name: base / f".state-{name}" for name in ("alice", "bob")}
    me = [sys.executable, "-m", "peersync"]

    def call(name: str, *argv: str) -> str:
        env = dict(os.environ, PEERSYNC_HOME=str(homes[name]))
        done = subprocess.run(me + list(argv), env=env, capture_output=True, text=True)
        if done.returncode not in (0, 1):
            raise RefusedError(f"demo setup failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    if not (homes["alice"] / "config.json").exists():
        call("alice", "init", str(base / "alice"), "--relay", str(relay), "--name", "demo")
        (base / "alice" / "hello.txt").write_text("Hello from Alice. Edit me, then look in ../bob/\n")
        code = call("alice", "invite", "demo").strip().splitlines()[-1]
        call("bob", "join", code, str(base / "bob"), "--relay", str(relay))
        call("alice", "sync")
        call("bob", "sync")
    _out(f"Demo ready in {base}: two peers, alice/ and bob/, sharing the relay folder relay/.")
    _out("Edit, add or delete files in either folder; the other follows.")
    if args.no_run:
        return 0
    procs = [subprocess.Popen(me + ["run", "--quiet"], env=dict(os.environ, PEERSYNC_HOME=str(h)))
             for h in homes.values()]
    _out("Both peers are running; Ctrl-C stops them.")
    stop = threading.Event()
    install_signal_handlers(stop)
    while not stop.is_set() and all(p.poll() is None for p in procs):
        stop.wait(0.5)
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
    return 0


# -- parsing ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peersync",
                                description="Keep a folder in sync through a cloud-replicated relay folder.")
    p.add_argument("--version", action="version", version=f"peersync {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log more, also to stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    # The same options after the command name ("peersync run --quiet"); SUPPRESS keeps the
    # value given before the command when they are not repeated after it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    _add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:
        return _add(name, parents=[common], **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    s = sub.add_parser("init", help="make a folder a new store")
    s.add_argument("store_dir")
    s.add_argument("--relay", required=True, help="a folder your cloud client replicates")
    s.add_argument("--name", help="the store's name (default: the folder's name)")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("invite", help="print an invite code for a store")
    s.add_argument("store", nargs="?")
    s.set_defaults(func=cmd_invite)

    s = sub.add_parser("join", help="join a store with an invite code")
    s.add_argument("code")
    s.add_argument("store_dir")
    s.add_argument("--relay", required=True, help="this machine's copy of the relay folder")
    s.set_defaults(func=cmd_join)

    s = sub.add_parser("sync", help="one full sync cycle now")
    s.add_argument("store", nargs="?")
    s.add_argument("--allow-deletes", action="store_true", help="confirm a held mass deletion")
    s.add_argument("--exclude", action="append", metavar="PATTERN", help="skip files matching PATTERN this time")
    s.add_argument("--wait", type=float, default=60.0, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_sync)

    s = sub.add_parser("run", help="watch and sync until stopped")
    s.add_argument("store", nargs="?")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="per store: peers, last sync, pending, conflicts, errors")
    s.add_argument("store", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    s = sub.add_parser("doctor", help="health of peersync, the relay and the peers")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("versions", help="list the kept earlier versions of a file")
    s.add_argument("path")
    s.set_defaults(func=cmd_versions)

    s = sub.add_parser("restore", help="bring back an earlier version of a file")
    s.add_argument("path")
    s.add_argument("--version", type=int, default=1, help="which one, as numbered by `peersync versions` (default 1)")
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser("conflicts", help="list unresolved conflict copies")
    s.add_argument("store", nargs="?")
    s.set_defaults(func=cmd_conflicts)

    s = sub.add_parser("errors", help="list what failed and what to do")
    s.add_argument("store", nargs="?")
    s.add_argument("--clear", action="store_true", help="forget reported errors (those still true come back)")
    s.set_defaults(func=cmd_errors)

    s = sub.add_parser("queue", help="list the changes waiting to be sent; `queue drop ITEM` removes one")
    s.add_argument("words", nargs="*", metavar="STORE | drop ITEM")
    s.add_argument("--store", help="the store, with drop")
    s.add_argument("--yes", action="store_true", help="drop without asking")
    s.set_defaults(func=cmd_queue)

    s = sub.add_parser("peers", help="list the store's peers; `peers remove PEER` revokes a lost machine")
    s.add_argument("words", nargs="*", metavar="STORE | remove PEER")
    s.add_argument("--store", help="the store, with remove")
    s.add_argument("--yes", action="store_true", help="remove without asking")
    s.set_defaults(func=cmd_peers)

    s = sub.add_parser("reset", help="clear a half-synced item so the next cycle redoes it from disk")
    s.add_argument("path", nargs="?")
    s.add_argument("--all", action="store_true", help="every item of every store (or of --store)")
    s.add_argument("--store")
    s.set_defaults(func=cmd_reset)

    s = sub.add_parser("config", help="show or change settings")
    s.add_argument("key", nargs="?")
    s.add_argument("value", nargs="?")
    s.add_argument("--store", help="change this store's setting only")
    s.set_defaults(func=cmd_config)

    s = sub.add_parser("demo", help="two peers on this machine sharing a local relay, running")
    s.add_argument("dir", nargs="?", default="peersync-demo")
    s.add_argument("--no-run", action="store_true", help="set up only")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("service", help="start `peersync run` at each logon of this user, or stop doing so")
    actions = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("install", help="set up a store if asked, register and start the service")
    a.add_argument("--store", help="the store folder; with --relay, created (init) unless this peer keeps it")
    a.add_argument("--relay", help="this machine's relay folder")
    a.add_argument("--invite", help="join the store this invite code names (needs --store and --relay)")
    a.add_argument("--name", help="the new store's name (default: the folder's name)")
    a.add_argument("--restart", action="store_true", help="restart the service if it runs (after an upgrade)")
    actions.add_parser("uninstall", help="stop and remove the service; data and keys stay")
    actions.add_parser("status", help="whether the service is registered and running (exit 1 if not running)")
    s.set_defaults(func=cmd_service)
    return p


def own_process() -> None:
    """Settings for a process that runs peersync and nothing else (the entry points; not a test calling
    ``main``). The objects the imports made live as long as the process: out of the cycle collector's
    way. A sync of many files makes millions of short-lived objects and next to no reference cycles,
    so the youngest generation is collected every 50,000 allocations, not every 700 (5% of the CPU
    time of a sync of 10,000 new files)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run() -> NoReturn:
    """The ``peersync`` command: ``main`` in a process of its own."""
    own_process()
    sys.exit(main())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return 2 if exc.code not in (0, None) else 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    state = State()
    _setup_logging(state, args.verbose, args.quiet)
    try:
        return int(args.func(state, args))
    except PeersyncError as exc:
        print(f"peersync: {exc.sentence()}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("peersync: interrupted; nothing half-done is left behind, the next sync carries on.", file=sys.stderr)
        return 130
    except sqlite3.Error as exc:
        log.debug("index error", exc_info=True)
        print(f"peersync: the index in {state.root} cannot be used ({exc}); check that the state folder is "
              "writable and its disk not full.", file=sys.stderr)
        return 1
    except OSError as exc:
        log.debug("OS error", exc_info=True)
        where = f" ({exc.filename})" if exc.filename else ""
        hint = "free some space and try again" if fsutil.is_disk_full(exc) else "check the path and its permissions"
        print(f"peersync: {exc.strerror or exc}{where}; {hint}.", file=sys.stderr)
        return 1
    except Exception as exc:  # never a traceback on the terminal
        log.exception("internal error")
        print(f"peersync: internal error ({exc.__class__.__name__}: {exc}); details are in "
              f"{state.log_dir() / 'peersync.log'}.", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
