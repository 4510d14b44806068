"""Keeping the relay small: snapshots, deleting acknowledged bundles, and bootstrapping from a snapshot.

- A peer acknowledges an author's bundles through the ``applied`` map of its
  heartbeat. An author deletes its own bundle once every current peer has
  acknowledged it and a complete snapshot covers it, so a peer that joins
  later, or returns after months, can still catch up.
- A snapshot is this peer's whole state (every path, content included),
  written once the relay bytes it lets go reach ``snapshot_ratio`` copies of
  the store, as bundle-format parts and then a manifest that lists the parts'
  hashes and the sequence it had applied from every author. It is written
  by one peer at a time: the one with the smallest id among those recently
  seen. A snapshot that a newer one covers is deleted by its writer.
- A reader that finds an author's first bundles already deleted applies the
  newest snapshot that covers them, then continues with later bundles.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from typing import TYPE_CHECKING

from . import bundle, paths
from .apply import FlushFailed, check_record, version_meta
from .bundle import Record
from .errors import BadBundle, BundleError, PeersyncError

if TYPE_CHECKING:
    from .apply import Applier
    from .engine import CycleReport, Engine
    from .relay import PeerRecord

log = logging.getLogger("peersync")

# Only peers seen within this long are candidates to write snapshots.
WRITER_FRESH_SECONDS = 24 * 3600


class Manifest:
    def __init__(self, writer: str, number: int, parts: list[str], applied: dict[str, int]) -> None:
        self.writer = writer
        self.number = number
        self.parts = parts  # sha256 hex of each part file, in order
        self.applied = applied  # what the writer had applied from every author, itself included


class Compactor:
    def __init__(self, engine: Engine) -> None:
        self.e = engine

    # -- reading snapshots -----------------------------------------------------

    def manifests(self, roster: dict[str, PeerRecord]) -> list[Manifest]:
        """Every complete, verified snapshot manifest in the relay, newest last."""
        out = []
        for peer, rec in roster.items():
            for number, folder in self.e.relay.list_snapshots(peer).items():
                try:
                    raw = (folder / "manifest.psb").read_bytes()
                    _, records = bundle.open_bundle(
                        raw, store_id=self.e.cfg.id, author=peer, seq=number, author_key=rec.public_key,
                        keys=self.e.keys, flags=bundle.FLAG_SNAPSHOT_MANIFEST)
                    meta = records[0].meta
                    if meta.get("op") != "snapshot":
                        raise BadBundle("a snapshot manifest without its record")
                    parts = [str(h) for h in meta["parts"]]
                    applied = {str(k): int(v) for k, v in meta["applied"].items()}
                except (OSError, BundleError, KeyError, TypeError, ValueError, IndexError) as exc:
                    log.debug("snapshot %s of %s unusable: %s", number, peer, exc)
                    continue
                out.append(Manifest(peer, number, parts, applied))
        return sorted(out, key=lambda m: (sum(m.applied.values()), m.writer, m.number))

    def bootstrap(self, applier: Applier, roster: dict[str, PeerRecord], report: CycleReport) -> None:
        """Apply a snapshot if some author's bundles this peer still needs were already deleted."""
        applied = self.e.index.applied()
        gaps: dict[str, int] = {}  # author -> the last sequence that is gone
        for peer, rec in roster.items():
            if peer == self.e.ident.peer_id:
                continue
            found, _ = self.e.relay.list_bundles(peer)
            have = applied.get(peer, 0)
            if found and min(found) > have + 1:
                gaps[peer] = min(found) - 1
            elif not found:
                beat = self.e.relay.read_heartbeat(peer, rec.public_key) or {}
                published = int(beat.get("published", 0) or 0)
                if published > have:
                    gaps[peer] = published
        if not gaps:
            return
        usable = [m for m in self.manifests(roster)
                  if all(m.applied.get(a, 0) >= s for a, s in gaps.items()) and m.writer != self.e.ident.peer_id]
        if not usable:
            report.waiting.append("bundles this peer missed were already removed; waiting for a snapshot")
            return
        chosen = usable[-1]
        try:
            self._apply_snapshot(chosen, roster[chosen.writer], applier)
        except (OSError, BundleError, FlushFailed) as exc:
            report.waiting.append(f"snapshot {chosen.number} of peer {chosen.writer[:7]} is not readable yet "
                                  f"({exc}); retrying")
            return
        with self.e.index.tx():
            for author, seq in chosen.applied.items():
                if author != self.e.ident.peer_id and seq > applied.get(author, 0):
                    self.e.index.set_applied(author, seq)
            self.e.index.add_correction(
                f"snapshot {chosen.number} of peer {chosen.writer[:7]}",
                "caught up from it: the bundles this peer missed had already been removed from the relay")
        log.info("bootstrapped from snapshot %s of %s", chosen.number, chosen.writer)

    def _apply_snapshot(self, m: Manifest, writer: PeerRecord, applier: Applier) -> None:
        folder = self.e.relay.snapshots_dir(m.writer) / f"{m.number:012d}"
        key = f"snapshot:{m.writer}"
        for i, digest in enumerate(m.parts, 1):
            raw = (folder / f"{i:012d}.psb").read_bytes()
            if hashlib.sha256(raw).hexdigest() != digest:
                raise BadBundle(f"part {i} does not match its manifest")
            _, records = bundle.open_bundle(raw, store_id=self.e.cfg.id, author=m.writer, seq=i,
                                            author_key=writer.public_key, keys=self.e.keys,
                                            flags=bundle.FLAG_SNAPSHOT_PART)
            for r in records:
                check_record(r)
            applier.apply_records(key, records)
        applier.flush()  # its files in place before the bundles it covers are marked applied

    # -- writing snapshots -------------------------------------------------------

    def _acks(self, roster: dict[str, PeerRecord]) -> tuple[dict[str, dict[str, int]], set[str]]:
        """What each current peer has applied from each author, and the peers to wait for."""
        now = time.time()
        silent = float(self.e.settings["silent_peer_seconds"])
        acks: dict[str, dict[str, int]] = {self.e.ident.peer_id: self.e.index.applied()}
        waiting_for: set[str] = set()
        for peer, rec in roster.items():
            if peer == self.e.ident.peer_id:
                continue
            beat = self.e.relay.read_heartbeat(peer, rec.public_key)
            if beat is None:
                if now - rec.joined < silent:
                    waiting_for.add(peer)  # joined, never acknowledged anything yet
                continue
            if now - float(beat.get("time", 0)) > silent:
                continue  # gone for a month: it will catch up from a snapshot
            applied = beat.get("applied", {})
            acks[peer] = {str(k): int(v) for k, v in applied.items()} if isinstance(applied, dict) else {}
            waiting_for.add(peer)
        return acks, waiting_for

    def _acked(self, author: str, acks: dict[str, dict[str, int]], waiting_for: set[str]) -> int:
        """The highest sequence of ``author`` that every current peer but the author has applied."""
        readers = [p for p in waiting_for | {self.e.ident.peer_id} if p != author]
        if not readers:  # nobody else to wait for
            return self.e.index.meta_int("last_bundle_seq")
        return min(acks.get(p, {}).get(author, 0) for p in readers)

    def is_writer(self, roster: dict[str, PeerRecord], current: set[str]) -> bool:
        """This peer writes snapshots if its id is the smallest among current peers seen lately."""
        now = time.time()
        fresh = [self.e.ident.peer_id]
        for peer in current:
            beat = self.e.relay.read_heartbeat(peer, roster[peer].public_key)
            if beat and now - float(beat.get("time", 0)) < WRITER_FRESH_SECONDS:
                fresh.append(peer)
        return min(fresh) == self.e.ident.peer_id

    def maintain(self, report: CycleReport) -> None:
        """Write a snapshot when one is due, then delete what snapshots and acknowledgements allow."""
        roster, _ = self.e.roster()
        acks, waiting_for = self._acks(roster)
        manifests = self.manifests(roster)
        latest = manifests[-1] if manifests else None
        if self.is_writer(roster, waiting_for) and self._snapshot_due(roster, acks, waiting_for, latest,
                                                                      report.bundles_written):
            try:
                self.write_snapshot()
            except (OSError, PeersyncError) as exc:
                log.warning("cannot write a snapshot: %s", exc)
            manifests = self.manifests(roster)
            latest = manifests[-1] if manifests else None
        me = self.e.ident.peer_id
        if latest is not None:
            covered = latest.applied.get(me, 0)
            limit = min(covered, self._acked(me, acks, waiting_for))
            found, _ = self.e.relay.list_bundles(me)
            for seq in sorted(s for s in found if s <= limit):
                self.e.relay.delete_bundle(me, seq)
            # Own snapshots that the latest one covers are no longer needed.
            for m in manifests:
                if m.writer == me and m is not latest and all(
                        latest.applied.get(a, 0) >= s for a, s in m.applied.items()):
                    self.e.relay.delete_snapshot(me, m.number)

    def _snapshot_due(self, roster: dict[str, PeerRecord], acks: dict[str, dict[str, int]],
                      waiting_for: set[str], latest: Manifest | None, just_published: int = 0) -> bool:
        """True when acknowledged bundles that no snapshot covers have piled up.

        The ``just_published`` bundles this peer wrote in the running cycle do not count: a
        snapshot made of them at once would put the same content into the relay a second time
        (a fresh 4 GiB store alone in its relay counts as acknowledged by nobody else and
        would be written twice in its first cycle). They count from the next cycle on.
        """
        if self.e.index.pending() or self.e.index.db.execute("SELECT 1 FROM partials LIMIT 1").fetchone():
            return False  # the state is not whole yet: a snapshot now would miss those changes
        pile = 0
        me = self.e.ident.peer_id
        fresh_from = self.e.index.meta_int("last_bundle_seq") - just_published
        for author in set(roster) | {me}:
            found, _ = self.e.relay.list_bundles(author)
            acked = self._acked(author, acks, waiting_for)
            if author == me:
                acked = min(acked, fresh_from)
            base = latest.applied.get(author, 0) if latest else 0
            for seq, path in found.items():
                if base < seq <= acked:
                    try:
                        pile += path.stat().st_size
                    except OSError:
                        pass
        if pile < int(self.e.settings["snapshot_min_bytes"]):
            return False  # the usual answer, without summing every file's size
        # A snapshot copies the whole store into the relay. It is worth that upload only once the
        # bytes it lets go (that pile, and the snapshots it supersedes) reach `snapshot_ratio` copies
        # of the store: a first full transfer is not uploaded a second time at once, and each byte
        # of change costs at most about one more byte of snapshot.
        superseded = sum(self._snapshot_bytes(author) for author in set(roster) | {me})
        return pile + superseded >= float(self.e.settings["snapshot_ratio"]) * self._store_bytes()

    def _snapshot_bytes(self, author: str) -> int:
        total = 0
        for folder in self.e.relay.list_snapshots(author).values():
            try:
                total += sum(f.stat().st_size for f in folder.iterdir())
            except OSError:
                pass
        return total

    def _store_bytes(self) -> int:
        row = self.e.index.db.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE deleted=0").fetchone()
        return int(row[0])

    def write_snapshot(self) -> int:
        """Write this peer's whole state as a snapshot; return its number."""
        e = self.e
        number = e.index.meta_int("snapshot_seq") + 1
        applied = dict(e.index.applied())
        applied[e.ident.peer_id] = e.index.meta_int("last_bundle_seq")
        max_bytes = int(e.settings["bundle_max_bytes"])
        digests: list[str] = []
        batch: list[Record] = []
        size = 0

        def flush() -> None:
            nonlocal batch, size
            data = bundle.seal(batch, store_id=e.cfg.id, author=e.ident.peer_id, epoch=e.epoch, seq=len(digests) + 1,
                               key=e.seal_key, signer=e.ident.key, flags=bundle.FLAG_SNAPSHOT_PART)
            e.relay.write_snapshot_file(e.ident.peer_id, number, f"{len(digests) + 1:012d}.psb", data)
            digests.append(hashlib.sha256(data).hexdigest())
            batch, size = [], 0

        _, scanner, _ = e._parts()
        link_free = paths.LinkCheck(e.cfg.root)
        # Every path's version on disk, with its content; then the concurrent versions that lost, as
        # metadata only (a peer that bootstraps must know them, or its next edit would not supersede them).
        records = itertools.chain(
            (rec for entry in e.index.entries() for rec in e._records(entry, scanner, {}, link_free)),
            (Record(version_meta(sibling, content="ref")) for sibling in e.index.all_siblings()),
        )
        for rec in records:
            if batch and size + rec.encoded_size > max_bytes:
                flush()
            batch.append(rec)
            size += rec.encoded_size
        if batch or not digests:
            flush()
        manifest = Record({"op": "snapshot", "parts": digests, "applied": applied, "time": time.time()})
        data = bundle.seal([manifest], store_id=e.cfg.id, author=e.ident.peer_id, epoch=e.epoch, seq=number,
                           key=e.seal_key, signer=e.ident.key, flags=bundle.FLAG_SNAPSHOT_MANIFEST)
        e.relay.write_snapshot_file(e.ident.peer_id, number, "manifest.psb", data)
        with e.index.tx():
            e.index.set_meta("snapshot_seq", number)
        log.info("wrote snapshot %s (%s parts)", number, len(digests))
        return number
