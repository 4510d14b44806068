"""One sync cycle of one store: scan, publish, read, verify, apply, heartbeat.

The engine knows the layers below it (scanner, index, bundles, relay,
applier) and nothing above it: the CLI and the service call ``cycle``.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import bundle, crypto, delta, fsutil, paths
from . import vector as vv
from .apply import Applier, FlushFailed, check_record, version_meta
from .bundle import Record
from .compact import Compactor
from .conflict import conflict_copy_target, is_conflict_copy
from .errors import (
    BadBundle,
    CryptoError,
    IncompleteBundle,
    PeersyncError,
    RefusedError,
    RelayError,
    StorePausedError,
    UsageError,
)
from .ignore import Ignore
from .index import Entry, Index
from .relay import PeerRecord, Relay
from .scan import NeedFullScan, Scanner
from .state import Identity, State, StoreConfig
from .stop import StopCheck, Stopped, never
from .store import bundle_key, check_marker, roster_key, rotation_info
from .versions import Archive

log = logging.getLogger("peersync")

Progress = Callable[[str, int, int], None]

# A heartbeat unchanged for this long is rewritten anyway, so peers can tell a silent peer.
HEARTBEAT_SECONDS = 300


def _quiet(stage: str, items: int, nbytes: int) -> None:
    pass


@dataclasses.dataclass
class CycleReport:
    store: str
    files: int = 0
    changed: int = 0
    published_ops: int = 0
    bundles_written: int = 0
    applied_ops: int = 0
    conflicts: int = 0
    held_deletes: int = 0
    deferred_deletes: int = 0
    unstable: int = 0
    pending: int = 0  # remote changes kept to retry (a held file, content not here yet)
    stopped: str = ""  # the stage a stop was asked in; the cycle ended there, the rest is done next cycle
    waiting: list[str] = dataclasses.field(default_factory=list)
    errors: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    paused: str = ""
    scanned: str = "full"  # "full", or how many paths a partial scan looked at ("12 paths")

    @property
    def ok(self) -> bool:
        return not self.errors and not self.paused


class Engine:
    def __init__(self, state: State, cfg: StoreConfig, ident: Identity, progress: Progress = _quiet,
                 exclude: tuple[str, ...] = ()) -> None:
        self.state = state
        self.cfg = cfg
        self.ident = ident
        self.progress = progress  # (stage, items, bytes) done, as they are done
        self.expect: Progress = _quiet  # (stage, items, bytes) to do, before a stage starts, where it is known
        self.settings = state.settings(cfg)
        self._exclude = exclude
        self.exclude = tuple(self.settings["exclude"]) + exclude
        self.relay = Relay(Path(cfg.relay), cfg.id)
        self._load_keys()
        # Removed peers: the last sequence still accepted from each.
        self.removed: dict[str, int] = {}
        self.index = Index(state.store_dir(cfg.id) / "index.db")
        self.archive = Archive(state.versions_dir(cfg.id), self.index)
        self.staging = state.store_dir(cfg.id) / "staging"
        self.quarantine_dir = state.store_dir(cfg.id) / "quarantine"
        self.missing_since: dict[str, float] = {}  # kept across the service's cycles
        # Asked between atomic steps (a file scanned, a bundle written, a record applied); the service and
        # `peersync sync` make it true on SIGINT/SIGTERM, and the cycle ends after the current step.
        self.should_stop: StopCheck = never
        # Partial scans: paths to look at again whatever the watcher says (files still being written,
        # deletions waiting for their delay), and whether the next scan must be a full one.
        self.recheck: dict[str, bool] = {}
        self.full_scan_due = True
        self._scanned_exclude: tuple[str, ...] | None = None

    def close(self) -> None:
        self.index.close()

    # -- keys and membership ---------------------------------------------------

    def _load_keys(self) -> None:
        """Bundle keys of every key epoch held, and the roster keys that authenticate peer records."""
        self.secrets = self.state.store_secrets(self.cfg.id)
        self.keys: dict[int, list[bytes]] = {}
        self.roster_keys: dict[int, bytes] = {}
        for epoch, by_writer in self.secrets.items():
            writers = sorted(by_writer)  # concurrent rotations: the smallest writer's key seals
            self.keys[epoch] = [bundle_key(by_writer[w], epoch) for w in writers]
            self.roster_keys[epoch] = roster_key(by_writer[writers[0]])
        self.epoch = max(self.keys)
        self.seal_key = self.keys[self.epoch][0]

    def roster(self) -> tuple[dict[str, PeerRecord], dict[str, str]]:
        """Current members (removed peers left out) and the problems of peer folders that are not.

        Removals and key rotations are read from every member's signed
        roster.json; secrets sealed to this peer are learned on the way.
        After a rotation, a peer record counts only if the newest roster key
        authenticates it or the rotation lists it as a member.
        """
        peers, problems = self.relay.roster(self.roster_keys)
        records = {p: self.relay.read_roster_record(p, rec.public_key) for p, rec in peers.items()}
        # Removals count in the order they were made; one made by an already removed peer does not,
        # so a stolen laptop cannot answer its removal by removing its remover.
        removals: list[tuple[float, str, str, int]] = []
        for writer, record in records.items():
            for r in (record or {}).get("removed", []):
                try:
                    if isinstance(r, dict) and isinstance(r.get("peer"), str) and r["peer"] != writer:
                        removals.append((float(r.get("time", 0)), writer, r["peer"], int(r.get("after", 0))))
                except (TypeError, ValueError):
                    continue  # a malformed entry counts for nothing
        removed: dict[str, int] = {}
        for _when, writer, peer, after in sorted(removals):
            if writer not in removed:
                removed[peer] = min(after, removed.get(peer, 1 << 62))
        if self._learn_secrets(peers, records, removed):
            peers, problems = self.relay.roster(self.roster_keys)
        members: set[str] = set()
        for writer, record in records.items():
            if record is None or writer in removed:
                continue
            for ep in record.get("epochs", []):
                if isinstance(ep, dict) and ep.get("epoch") == self.epoch:
                    members |= {str(m) for m in ep.get("members", [])}
        current = {}
        for p, rec in peers.items():
            if p in removed:
                continue
            if self.epoch and rec.epoch != self.epoch and p not in members:
                problems[p] = "joined with an invite from before the store key was rotated; it needs a new invite"
                continue
            current[p] = rec
        self.removed = removed
        self._removed_records = {p: peers[p] for p in removed if p in peers}
        return current, problems

    def remove_peer(self, which: str) -> tuple[PeerRecord, int]:
        """Revoke a peer (a lost laptop): reject its later bundles and rotate the store key without it.

        Returns the removed peer's record and the last of its bundles still accepted.
        """
        roster, _ = self.roster()
        me = self.ident.peer_id
        matches = [rec for p, rec in roster.items() if which in (p, rec.name) or (len(which) >= 4 and
                                                                                 p.startswith(which.upper()))]
        if not matches:
            raise UsageError(f"no current peer {which!r} in store {self.cfg.name}", "see `peersync peers`")
        if len(matches) > 1:
            raise UsageError(f"{which!r} names several peers", "give more of its id, as `peersync peers` shows it")
        target = matches[0]
        if target.peer_id == me:
            raise RefusedError("a peer cannot remove itself", "remove it from another peer")
        after = self.index.applied().get(target.peer_id, 0)
        epoch = self.epoch + 1
        secret = crypto.random_bytes(crypto.SECRET_BYTES)
        members = sorted(p for p in roster if p != target.peer_id)
        keys = {p: base64.b64encode(self.ident.box.seal_to(roster[p].box_key, secret,
                                                            rotation_info(self.cfg.id, epoch))).decode()
                for p in members if p != me and roster[p].box_key}
        record = self.relay.read_roster_record(me, self.ident.public_key) or {}
        record = {
            "removed": list(record.get("removed", [])) + [
                {"peer": target.peer_id, "name": target.name, "after": after, "time": time.time()}],
            "epochs": list(record.get("epochs", [])) + [{"epoch": epoch, "members": members, "keys": keys}],
        }
        self.state.save_store_secret(self.cfg.id, secret, epoch, me)
        self.relay.write_roster_record(me, record, self.ident.key)
        self._load_keys()
        # peer.json stays as it is: peers still holding only the old key must go on recognising this
        # peer, to read the rotation at all. The rotation's member list vouches for every member.
        with self.index.tx():
            self.index.add_correction(f"peer {target.peer_id[:7]}",
                                      f"removed {target.name}; store key rotated to epoch {epoch}")
        return target, after

    def _learn_secrets(self, peers: dict[str, PeerRecord], records: dict[str, dict[str, Any] | None],
                       removed: dict[str, int]) -> bool:
        learned = False
        me = self.ident.peer_id
        for writer, record in records.items():
            if record is None or writer in removed or writer == me:
                continue
            for ep in record.get("epochs", []):
                try:
                    epoch = int(ep["epoch"])
                    if epoch <= 0 or writer in self.secrets.get(epoch, {}) or me not in ep.get("keys", {}):
                        continue  # epoch 0 is the invite's secret: no rotation may replace it
                    sealed = base64.b64decode(ep["keys"][me])
                    secret = self.ident.box.open_from(peers[writer].box_key, sealed, rotation_info(self.cfg.id, epoch))
                except (KeyError, TypeError, ValueError, AttributeError, CryptoError) as exc:
                    log.warning("cannot take the store key of peer %s: %s", writer[:7], exc)
                    continue
                self.state.save_store_secret(self.cfg.id, secret, epoch, writer)
                learned = True
        if learned:
            self._load_keys()
        return learned

    def _parts(self, exclude: tuple[str, ...] = (), delete_delay: float = 0.0) -> tuple[Ignore, Scanner, Applier]:
        """The scanner skips one-off excludes too; incoming changes skip only the lasting patterns
        (they are already downloaded, and a skipped one would never come again)."""
        ignore = Ignore(self.cfg.root, self.exclude + exclude)
        lasting = Ignore(self.cfg.root, self.exclude) if exclude else ignore
        scanner = Scanner(self.cfg.root, self.index, ignore, self.ident.peer_id, self.settings, self.progress,
                          self.missing_since, delete_delay, stop=self.should_stop)
        applier = Applier(self.cfg.root, self.index, scanner, self.archive, lasting, self.ident.peer_id,
                          self.staging)
        return ignore, scanner, applier

    # -- the cycle ------------------------------------------------------------

    def cycle(self, allow_deletes: bool = False, exclude: tuple[str, ...] = (),
              delete_delay: float = 0.0, paths: dict[str, bool] | None = None) -> CycleReport:
        """One cycle. ``delete_delay``: seconds a file must stay missing before its deletion is sent.

        ``paths`` (from a trusted watcher: store-relative path -> walk it whole if a folder)
        limits the scan to those paths; None scans the whole store. A partial scan becomes
        a full one when this engine has not scanned the store whole yet, when the
        exclude patterns changed, or when it meets what only a full scan handles.
        """
        # Settings changed since this engine was made (`peersync config` while the service runs) count now.
        fresh = next((s for s in self.state.stores() if s.id == self.cfg.id), None)
        if fresh is not None:
            self.cfg.settings = fresh.settings
        self.settings = self.state.settings(self.cfg)
        self.exclude = tuple(self.settings["exclude"]) + self._exclude
        report = CycleReport(self.cfg.name)
        self.index.reload()
        with self.index.tx():
            self.index.set_meta("cycle", self.index.meta_int("cycle") + 1)
            self.index.clear_errors("store:")
            self.index.clear_errors("relay:")
        try:
            check_marker(self.cfg, self.ident)
        except StorePausedError as exc:
            report.paused = exc.sentence()
            with self.index.tx():
                self.index.record_error("store:paused", "store", self.cfg.name, exc.message, exc.hint)
            return self._finish(report, ok=False)
        _, scanner, applier = self._parts(exclude, delete_delay)
        applier.recover_intents()
        self._scan(scanner, report, allow_deletes, paths, exclude)
        if self._stopping(report, "scan"):
            return self._finish(report, ok=True)
        try:
            self.relay.check_reachable()
        except RelayError as exc:
            with self.index.tx():
                self.index.record_error("relay:missing", "relay", self.cfg.relay, exc.message, exc.hint)
            return self._finish(report, ok=False)
        if not self._publish_or_record(scanner, report):
            return self._finish(report, ok=False)
        if self._stopping(report, "publish"):
            return self._finish(report, ok=True)
        try:
            self._read(applier, report)
        except Stopped:
            self._stopping(report, "apply")
            report.applied_ops += applier.applied_ops
            report.conflicts += applier.conflicts
            applier.clean_staging()
            return self._finish(report, ok=True)
        applier.retry_pending()
        Compactor(self).maintain(report)
        report.applied_ops += applier.applied_ops
        report.conflicts += applier.conflicts
        if self.index.outgoing():  # conflict copies made while applying
            self._publish_or_record(scanner, report)
        applier.clean_staging()
        return self._finish(report, ok=True)

    def reset(self, rel: str | None) -> None:
        """Clear half-synced state of ``rel`` (or everything) so the next cycle redoes it from the disk.

        The file on disk is sent again with a version that supersedes the remote
        one that could not be applied, so every peer ends with what this disk
        holds. The remote version is not hidden: if its content is here, it is
        written beside the file as a conflict copy, which the next cycle sends
        like any new file.
        """
        index = self.index

        def hit(path: str) -> bool:
            return rel is None or path == rel or path.startswith(rel + "/")

        with index.tx():
            for path, meta, staged, _reason, _first, _n in index.pending():
                if not hit(path):
                    continue
                if staged and Path(staged).exists() and meta.get("op") == "put":
                    self._set_aside_as_conflict_copy(path, meta, Path(staged))
                local = index.get(path)
                if local is not None:
                    clock = index.next_clock()
                    vector = vv.merge(local.vector, meta["vector"], *(s.vector for s in index.siblings(path)))
                    index.set_siblings(path, [])
                    local.vector = vv.bump(vector, self.ident.peer_id, clock)
                    local.modified_by, local.local_seq = self.ident.peer_id, clock
                    index.put(local)
                index.drop_pending(path)
            for intent, _ in index.intents():
                if hit(intent.path):
                    index.drop_intent(intent.path)
            for (author,) in list(index.db.execute("SELECT author FROM partials")):
                partial = index.partial(author)
                if partial and hit(partial[0]["path"]):
                    index.clear_partial(author)
            for e in index.errors():
                if rel is None or hit(e["subject"]) or e["key"] in (f"apply:{rel}", f"scan:{rel}"):
                    index.clear_error(e["key"])
            index.forget_stat(rel)

    def _set_aside_as_conflict_copy(self, path: str, meta: dict[str, Any], staged: Path) -> None:
        """Write a remote version that reset set aside beside its file, if its content is what it claims."""
        if fsutil.hash_file(staged)[0] != meta["hash"]:
            return  # damaged content is no version of anything: nothing to keep
        rel, there = conflict_copy_target(self.cfg.root, path, meta["mtime_ns"], meta["by"], meta["hash"])
        if there or not paths.inside_without_links(self.cfg.root, rel):
            return
        dest = paths.join(self.cfg.root, rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = fsutil.temp_name(dest)
        try:
            fsutil.copy_durable(staged, tmp)
            os.utime(tmp, ns=(meta["mtime_ns"], meta["mtime_ns"]))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        fsutil.fsync_dir(dest.parent)

    def scan_only(self) -> CycleReport:
        """Record local changes in the queue without sending anything (for `peersync queue`)."""
        report = CycleReport(self.cfg.name)
        self.index.reload()
        check_marker(self.cfg, self.ident)
        _, scanner, applier = self._parts()
        applier.recover_intents()
        self._scan(scanner, report, allow_deletes=False)
        return report

    def _publish_or_record(self, scanner: Scanner, report: CycleReport) -> bool:
        """Publish; a relay that cannot be written (read-only, full, gone) is an error, retried next cycle."""
        try:
            self._publish(scanner, report)
        except OSError as exc:
            scanner.kept.clear()
            with self.index.tx():
                self.index.record_error("relay:publish", "relay", self.cfg.relay,
                                        f"changes cannot be written to the relay ({exc.strerror or exc})",
                                        "check that the relay folder is writable and its disk not full; retried")
            return False
        scanner.kept.clear()  # sent: the rest of the cycle does not need it in memory
        return True

    def _stopping(self, report: CycleReport, stage: str) -> bool:
        """True (and noted in the report and the log) once a stop was asked; the cycle then ends."""
        if not (report.stopped or self.should_stop()):
            return False
        if not report.stopped:
            report.stopped = stage
            log.info("%s: stopped during %s, before the end of the cycle; the next cycle does the rest",
                     self.cfg.name, stage)
        return True

    def _finish(self, report: CycleReport, ok: bool) -> CycleReport:
        report.errors = self.index.errors()
        report.pending = len(self.index.pending())
        with self.index.tx():
            self.index.set_meta("last_sync", time.time())
            self.index.set_meta("last_sync_ok", int(ok and not report.errors))
        if ok:
            self._heartbeat(report)
        return report

    def _scan(self, scanner: Scanner, report: CycleReport, allow_deletes: bool,
              paths: dict[str, bool] | None = None, exclude: tuple[str, ...] = ()) -> None:
        """Scan the whole store, or only ``paths`` (and what is to be looked at again) when that is safe."""
        result = None
        patterns = self.exclude + exclude
        partial = paths is not None and not self.full_scan_due and patterns == self._scanned_exclude
        self.full_scan_due = True  # until this scan ends well: what it was to look at is not lost
        if partial and paths is not None:
            dirty = dict(self.recheck)
            for e in self.index.errors():  # a file that could not be read is tried again every cycle
                if e["key"].startswith("scan:") and e["kind"] == "scan":
                    dirty.setdefault(e["subject"].rstrip("/"), False)
            for p, deep in paths.items():
                dirty[p] = dirty.get(p, False) or deep
            self.expect("scan", len(dirty), 0)
            try:
                result = scanner.scan_paths(dirty, allow_deletes=allow_deletes)
                report.scanned = f"{len(dirty)} paths"
            except NeedFullScan as exc:
                log.debug("%s: a full scan instead of a partial one: %s", self.cfg.name, exc)
        if result is None:
            if self.expect is not _quiet:  # a progress bar's total
                known = self.index.count_live_files()
                if not known:  # a first scan: count what is there
                    known = scanner.count_files()
                self.expect("scan", known, 0)
            result = scanner.scan(allow_deletes=allow_deletes)
        report.files, report.changed, report.held_deletes = result.files, result.changed, result.held_deletes
        report.deferred_deletes, report.unstable = result.deferred_deletes, len(result.unstable)
        if result.stopped:
            self._stopping(report, "scan")
            return  # the next scan is a full one
        self._scanned_exclude = patterns
        # An editor's rename-aside is recognised by the inode of an ignored file anywhere in the store:
        # while one is pending, scans are full ones.
        self.full_scan_due = bool(result.moved_aside)
        self.recheck = {p: False for p in [*result.unstable, *self.missing_since]}
        if result.scope is not None:
            report.files = result.live_files
        with self.index.tx():
            # Recorded again, an error keeps when it started and counts one more failed cycle.
            for path, message, hint in result.problems:
                self.index.record_error(f"scan:{path}", "scan", path, message, hint)
            if result.held_deletes:
                self.index.record_error(
                    "scan:held-deletes", "held", self.cfg.name,
                    f"{result.held_deletes} of {result.live_files} files are gone from {self.cfg.root}; "
                    "the deletion is held and not sent",
                    "if you deleted them, run `peersync sync --allow-deletes`; otherwise restore them",
                )
            # What this scan looked at and found well is no error any more; a partial scan leaves the rest.
            for key, subject in self.index.stale_errors("scan:"):
                if result.scope is None or key == "scan:held-deletes" or result.scope(subject):
                    self.index.clear_error(key)

    # -- publishing -------------------------------------------------------------

    def _publish(self, scanner: Scanner, report: CycleReport) -> None:
        """Pack the outgoing queue (and content other peers asked for) into bundles and write them.

        A stop asked meanwhile ends it between two records: the bundle being
        packed is written, and ``published_seq`` covers only the changes sent
        whole, so the others are sent again by the next cycle.
        """
        outgoing = self.index.outgoing()
        wanted = self._wanted()
        if not outgoing and not wanted:
            return
        gone_hashes = {e.hash: e.path for e in outgoing if e.deleted and e.kind == "file" and e.hash}
        todo = [(e, e.local_seq, "") for e in outgoing] + [(e, 0, key) for e, key in wanted]
        content = sum(0 if e.deleted or e.kind == "dir" or (top and e.hash in gone_hashes) else e.size
                      for e, top, _key in todo)
        self.expect("pack", len(todo), content)
        self.expect("publish", len(todo), content)
        seq = max(self.index.meta_int("last_bundle_seq"), self.relay.next_seq(self.ident.peer_id) - 1)
        max_bytes = int(self.settings["bundle_max_bytes"])
        batch: list[Record] = []
        batch_size = 0
        batch_top = 0
        answered: list[str] = []  # requests answered by changes whole in the batch: noted once it is written
        # Sealing a bundle (zstd, ChaCha20, SHA-256: C code that releases the GIL) runs on a second
        # thread while this one reads and hashes the next batch and writes the previous bundle.
        # Bundles are still written in order and recorded in the index by this thread only.
        sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seal")
        # (sealed bytes, seq, changes whole up to, operations, content bytes, requests answered)
        sealing: tuple[Future[bytes], int, int, int, int, list[str]] | None = None

        def land() -> None:
            nonlocal sealing
            if sealing is None:
                return
            job, landed_seq, top, ops, nbytes, keys = sealing
            sealing = None
            data = job.result()
            self.relay.write_bundle(self.ident.peer_id, landed_seq, data)
            self.progress("publish", ops, nbytes)
            with self.index.tx():
                self.index.set_meta("last_bundle_seq", landed_seq)
                if top:
                    self.index.set_meta("published_seq", max(top, self.index.meta_int("published_seq")))
                for key in keys:
                    self.index.set_meta(key, time.time())
            report.bundles_written += 1
            report.published_ops += ops

        def flush() -> None:
            nonlocal seq, batch, batch_size, sealing, answered
            seq += 1
            job = sealer.submit(bundle.seal, batch, store_id=self.cfg.id, author=self.ident.peer_id,
                                epoch=self.epoch, seq=seq, key=self.seal_key, signer=self.ident.key)
            land()
            sealing = (job, seq, batch_top, sum(1 for r in batch if r.meta["op"] != "part"),
                       sum(len(r.data) for r in batch), answered)
            batch, batch_size, answered = [], 0, []

        stopped = False
        link_free = paths.LinkCheck(self.cfg.root)
        try:
            for entry, top, key in todo:
                if self.should_stop():
                    break
                records = self._records(entry, scanner, gone_hashes if top else {}, link_free, delta_ok=bool(top))
                try:
                    for rec in records:
                        if self.should_stop():  # between the parts of a large file
                            stopped = True
                            break
                        self.progress("pack", 1 if rec.meta["op"] != "part" else 0, len(rec.data))
                        if batch and batch_size + rec.encoded_size > max_bytes:
                            flush()
                        batch.append(rec)
                        batch_size += rec.encoded_size
                finally:
                    records.close()
                if stopped:
                    break
                batch_top = max(batch_top, top)
                if key:
                    answered.append(key)
            if batch:
                flush()
            land()
        finally:
            sealer.shutdown(wait=True, cancel_futures=True)
        if batch_top:  # changes that sent nothing after all (e.g. every file vanished meanwhile) leave the queue
            with self.index.tx():
                self.index.set_meta("published_seq", max(batch_top, self.index.meta_int("published_seq")))

    def _records(self, e: Entry, scanner: Scanner, gone_hashes: dict[str, str], link_free: paths.LinkCheck,
                 delta_ok: bool = False) -> Generator[Record, None, None]:
        """The records that send ``e``. ``delta_ok`` only for this peer's own changes: answers to
        wants and snapshots carry the whole content, never a delta against a base the reader lacks.
        ``link_free`` is the pass's check that no folder on the way is a link."""
        meta = version_meta(e)
        if meta["op"] != "put":
            yield Record(meta)
            return
        if not link_free(e.path):
            return  # a folder on the way became a symbolic link: never read through it
        if e.hash in gone_hashes:
            yield Record({**meta, "content": "ref", "from": gone_hashes[e.hash]})
            return
        part = min(int(self.settings["part_bytes"]), int(self.settings["bundle_max_bytes"]))
        kept = scanner.kept.get(e.hash) if e.size <= part else None
        if kept is not None:  # read and hashed by this cycle's scan: sent as it was then
            yield Record({**meta, "content": "inline"}, kept)
            return
        source = paths.join(link_free.root, e.path)
        try:
            if delta_ok and e.size > part:
                rec = self._delta_record(meta, source, part)
                if rec is not None:
                    yield rec
                    return
            if e.size <= part:
                data = source.read_bytes()
                if hashlib.sha256(data).hexdigest() != e.hash:
                    raise ValueError("changed since scanned")
                yield Record({**meta, "content": "inline"}, data)
                return
            yield from self._part_records(meta, source, part)
        except (OSError, ValueError):
            scanner.refresh(e.path)  # changed or gone since the scan: it is sent again as it is now

    def _delta_record(self, meta: dict[str, Any], source: Path, limit: int) -> Record | None:
        """The put as a delta against the content this peer last had at the path, or None when there
        is no such base or the literals would not fit ``limit`` bytes (the file goes whole then)."""
        threshold = int(self.settings["delta_min_bytes"])
        if not 0 < threshold <= meta["size"]:
            return None
        new_map = self.index.chunk_map(meta["hash"])
        base = self.index.delta_base(meta["path"], meta["hash"])
        if new_map is None or base is None:
            return None
        base_hash, base_size, base_map = base
        ops, literals = delta.plan(base_map, new_map)
        if len(ops) > delta.MAX_OPS or sum(n for _, n in literals) > limit:
            return None
        st = os.stat(source)
        if st.st_size != meta["size"]:
            raise ValueError("changed since scanned")
        data = delta.literal_bytes(source, literals)
        return Record({**meta, "content": "delta", "base": base_hash, "base_size": base_size, "ops": ops}, data)

    def _part_records(self, meta: dict[str, Any], source: Path, part: int) -> Generator[Record, None, None]:
        """A large file as a put carrying its first part, then parts; memory stays one part."""
        h = hashlib.sha256()
        offset = 0
        with open(source, "rb") as f:
            while True:
                chunk = f.read(part)
                h.update(chunk)
                if offset == 0:
                    yield Record({**meta, "content": "parts"}, chunk)
                else:
                    final = offset + len(chunk) >= meta["size"]
                    if final and h.hexdigest() != meta["hash"]:
                        raise ValueError("changed while being sent")
                    yield Record({"op": "part", "path": meta["path"], "hash": meta["hash"], "offset": offset,
                                  "final": final}, chunk)
                offset += len(chunk)
                if offset >= meta["size"] or not chunk:
                    break

    def _wanted(self) -> list[tuple[Entry, str]]:
        """Live files other peers asked for (a rename whose content they did not have), each with the
        meta key that marks the request answered once the file is written to the relay."""
        out: list[tuple[Entry, str]] = []
        roster, _ = self.roster()
        for peer, rec in roster.items():
            if peer == self.ident.peer_id:
                continue
            beat = self.relay.read_heartbeat(peer, rec.public_key)
            for want in (beat or {}).get("wants", [])[:1000]:
                key = f"answered:{peer}:{want.get('hash')}:{want.get('round', 0)}"
                if self.index.get_meta(key):
                    continue
                for e in self.index.find_by_hash(str(want.get("hash"))):
                    out.append((e, key))
                    break
        return out

    # -- reading ------------------------------------------------------------------

    def _read(self, applier: Applier, report: CycleReport) -> None:
        roster, problems = self.roster()
        with self.index.tx():
            self.index.clear_errors("peer:")
            for peer, problem in problems.items():
                if "peer.json yet" in problem:
                    report.waiting.append(f"peer {peer[:7]} {problem}")
                    continue
                self.index.record_error(f"peer:{peer}", "peer", peer[:7], f"relay folder of peer {peer[:7]}: {problem}",
                                        "its bundles are ignored; if this peer is yours, re-join it with an invite")
        Compactor(self).bootstrap(applier, roster, report)
        applied = self.index.applied()
        grace = float(self.settings["bundle_grace_seconds"])
        readable = dict(roster, **self._removed_records)
        listed = {peer: self.relay.list_bundles(peer)[0] for peer in sorted(readable) if peer != self.ident.peer_id}
        self._expect_bundles(listed, applied)
        for peer, found in listed.items():
            rec = readable[peer]
            seq = applied.get(peer, 0) + 1
            limit = self.removed.get(peer, 1 << 62)
            rejected = [s for s in found if s > limit]
            if rejected and not self.index.get_meta(f"rejected:{peer}:{max(rejected)}"):
                with self.index.tx():
                    self.index.set_meta(f"rejected:{peer}:{max(rejected)}", time.time())
                    self.index.add_correction(f"peer {peer[:7]}", f"rejected its bundles after {limit}: it was "
                                                                  "removed from the store")
            # The files of consecutive bundles are put in place together (see Applier.flush), and
            # each bundle is marked applied in the commit that records them: flush before anything
            # else marks a bundle, and before leaving this peer.
            while seq in found and seq <= limit:
                if self.should_stop():
                    self._flush(applier, peer, seq)
                    raise Stopped
                try:
                    header, records = self._open(found[seq], peer, seq, rec.public_key)
                except (IncompleteBundle, BadBundle) as exc:
                    if not self._flush(applier, peer, seq) or self._hold_or_quarantine(
                            peer, seq, found[seq], exc, grace, report):
                        break
                    seq += 1
                    continue
                try:
                    applier.apply_records(peer, records, self.should_stop)
                except (OSError, FlushFailed) as exc:  # e.g. a full disk: retry the bundle later
                    self._apply_failed(peer, seq, exc)
                    break
                self.progress("apply", 1, bundle.HEADER_SIZE + header.ciphertext_size + bundle.SIGNATURE_SIZE)
                applier.bundle_done(peer, seq)
                seq += 1
            self._flush(applier, peer, seq - 1)
            if found and max(found) >= seq and seq not in found:
                report.waiting.append(f"bundle {seq} of peer {peer[:7]} has not arrived yet")

    def _flush(self, applier: Applier, peer: str, seq: int) -> bool:
        """Put the queued files in place and mark their bundles applied; False if that failed (the
        bundles not marked are read again)."""
        try:
            applier.flush()
        except FlushFailed as exc:
            self._apply_failed(peer, seq, exc)
            return False
        return True

    def _apply_failed(self, peer: str, seq: int, exc: OSError | FlushFailed) -> None:
        with self.index.tx():
            self.index.record_error(f"peer:{peer}:apply", "apply", f"{peer[:7]}/{seq}",
                                    f"bundle {seq} of peer {peer[:7]} could not be applied "
                                    f"({exc.strerror or exc})", "it is retried every cycle")

    def _expect_bundles(self, listed: dict[str, dict[int, Path]], applied: dict[str, int]) -> None:
        """Tell the progress display how many bundles (and bytes) fetch, verify and apply have before them."""
        count = size = 0
        for peer, found in listed.items():
            seq, limit = applied.get(peer, 0) + 1, self.removed.get(peer, 1 << 62)
            while seq in found and seq <= limit:
                try:
                    size += found[seq].stat().st_size
                except OSError:
                    pass
                count += 1
                seq += 1
        for stage in ("fetch", "verify", "apply"):
            self.expect(stage, count, size)

    def _open(self, path: Path, peer: str, seq: int, public_key: bytes) -> tuple[bundle.Header, list[Record]]:
        try:
            size = path.stat().st_size
            if size > bundle.HEADER_SIZE + bundle.MAX_CIPHERTEXT + bundle.SIGNATURE_SIZE:
                raise BadBundle(f"bundle is {size} bytes, more than any bundle may be")
            raw = path.read_bytes()
        except OSError as exc:
            raise IncompleteBundle(f"bundle cannot be read yet ({exc.strerror})") from exc
        self.progress("fetch", 1, len(raw))
        header, records = bundle.open_bundle(raw, store_id=self.cfg.id, author=peer, seq=seq,
                                             author_key=public_key, keys=self.keys)
        for r in records:
            check_record(r)
        self.progress("verify", 1, len(raw))
        return header, records

    def _hold_or_quarantine(self, peer: str, seq: int, path: Path, exc: PeersyncError, grace: float,
                            report: CycleReport) -> bool:
        """Wait for a bundle that may still be arriving; quarantine it once that is unlikely.

        A bundle shorter than it declares is waited for ``bundle_grace_seconds``.
        One of full size that fails its signature is waited for three cycles in
        which it does not change, then quarantined. One that fails any other
        check is quarantined at once. Returns True while waiting (stop reading
        this peer), False once it is set aside.
        """
        try:
            st = path.stat()
            sig = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            sig = ""
        incomplete = isinstance(exc, IncompleteBundle)
        retryable = incomplete or getattr(exc, "retryable", False)
        with self.index.tx():
            first, quarantined, tries = self.index.bad_bundle(peer, seq, exc.message, sig)
        expired = time.time() - first >= grace
        stuck = not incomplete and tries >= 3
        if retryable and not quarantined and not expired and not stuck:
            report.waiting.append(f"bundle {seq} of peer {peer[:7]}: {exc.message}; retrying")
            return True
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(path, self.quarantine_dir / f"{peer}-{seq:012d}.psb")
        except OSError:
            pass
        if stuck:
            why = "it failed 3 cycles unchanged"
        elif retryable:
            why = f"it was still incomplete after {grace:.0f} s"
        else:
            why = "it failed a check that cannot pass later"
        with self.index.tx():
            self.index.quarantine(peer, seq)
            self.index.set_applied(peer, seq)
            self.index.record_error(
                f"bundle:{peer}:{seq}", "bundle", f"{peer[:7]}/{seq}",
                f"bundle {seq} of peer {peer[:7]} was rejected and quarantined: {exc.message}",
                "nothing from it was applied; check the sending peer, then `peersync errors --clear`",
            )
            self.index.add_correction(f"bundle {seq} of peer {peer[:7]}",
                                      f"quarantined it ({why}) and went on with the next bundles")
        log.warning("quarantined bundle %s of %s: %s", seq, peer, exc.message)
        return False

    # -- heartbeat ------------------------------------------------------------------

    def _heartbeat(self, report: CycleReport) -> None:
        wants = [
            {"hash": meta.get("need") or meta["hash"], "round": attempts // 3}
            for _p, meta, _s, _r, _f, attempts in self.index.pending()
            if meta.get("need") or (meta.get("op") == "put" and meta.get("content") == "ref")
        ]
        body: dict[str, Any] = {
            "name": self.ident.name,
            "applied": self.index.applied(),
            "published": self.index.meta_int("last_bundle_seq"),
            "health": "ok" if report.ok else "errors",
            "schedule": str(self.settings["schedule"]),
            "errors": len(report.errors),
            "wants": wants[:1000],
        }
        # Rewrite only when something changed or it is getting old: every rewrite is an upload.
        digest = hashlib.sha256(repr(sorted(body.items())).encode()).hexdigest()
        last = float(self.index.get_meta("heartbeat_at") or 0)
        if digest == self.index.get_meta("heartbeat_digest") and time.time() - last < HEARTBEAT_SECONDS:
            return
        try:
            self.relay.write_heartbeat(self.ident.peer_id, body, self.ident.key)
        except OSError as exc:
            log.warning("cannot write heartbeat: %s", exc)
            return
        with self.index.tx():
            self.index.set_meta("heartbeat_digest", digest)
            self.index.set_meta("heartbeat_at", time.time())

    # -- what status shows ------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        roster, problems = self.roster()
        applied = self.index.applied()
        peers = []
        incoming = 0
        for peer, rec in sorted(roster.items()):
            if peer == self.ident.peer_id:
                continue
            beat = self.relay.read_heartbeat(peer, rec.public_key)
            found, _ = self.relay.list_bundles(peer)
            behind = sum(1 for s in found if s > applied.get(peer, 0))
            incoming += behind
            peers.append({"id": peer, "name": rec.name, "machine": rec.machine, "user": rec.user,
                          "last_seen": beat.get("time") if beat else None, "bundles_behind": behind})
        conflicts = [e.path for e in self.index.entries(live_only=True) if is_conflict_copy(e.path)]
        last = self.index.get_meta("last_sync")
        return {
            "name": self.cfg.name,
            "id": self.cfg.id,
            "path": self.cfg.path,
            "relay": self.cfg.relay,
            "last_sync": float(last) if last else None,
            "last_sync_ok": bool(self.index.meta_int("last_sync_ok")),
            "schedule": str(self.settings["schedule"]),
            "pending_out": len(self.index.outgoing()),
            "pending_in": incoming + len(self.index.pending()),
            "peers": peers,
            "unknown_peers": problems,
            "conflicts": conflicts,
            "errors": self.index.errors(),
            "corrections": self.index.corrections()[-10:],
        }
