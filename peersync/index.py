"""The per-peer, per-store SQLite index: what this peer knows of every path and every peer.

Tables:
  files       one row per path ever seen: content hash, size, mtime, mode, the
              stat fields a scan trusts, the version vector, and ``local_seq``
              (> 0 when the row's state is a local change; it is published
              while ``local_seq`` exceeds ``meta.published_seq``)
  applied     per author, the last bundle sequence applied
  partials    per author, a large file being assembled from parts
  pending     remote operations that could not be applied yet (file locked,
              content not at hand); retried every cycle
  siblings    the other versions of a path that no version this peer knows
              supersedes (concurrent changes): the row in ``files`` is the
              one that wins among them and is on disk
  intents     an apply in flight: written before the rename, removed after,
              so a crash in between is finished from the disk on restart
  errors      what went wrong, since when, over how many cycles
  bad_bundles bundles that did not verify, waiting or quarantined
  versions    the versions archive's catalogue
  corrections what peersync did by itself about an item that kept failing
  chunkmaps   per content hash of a large file, its chunk map (peersync.delta):
              the base a later version of the path is sent as a delta against
  folder_sums per folder, a digest of its listing (names and stat fields) taken
              when a full scan found the folder exactly as its rows say; a write
              that may change a row's stat fields (put, forget_stat) deletes the
              digest of the row's folder when its transaction commits, so a
              folder whose listing still has its digest needs no row read
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import fsutil, paths
from . import vector as vv

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    path TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    hash TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    mode INTEGER NOT NULL DEFAULT 0,
    inode INTEGER NOT NULL DEFAULT 0,
    vector TEXT NOT NULL DEFAULT '{}',
    modified_by TEXT NOT NULL DEFAULT '',
    local_seq INTEGER NOT NULL DEFAULT 0,
    ckey TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS files_ckey ON files(ckey);
CREATE INDEX IF NOT EXISTS files_local ON files(local_seq);
CREATE INDEX IF NOT EXISTS files_hash ON files(hash);
CREATE TABLE IF NOT EXISTS applied(author TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS partials(
    author TEXT PRIMARY KEY, meta TEXT NOT NULL, staged TEXT NOT NULL, written INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pending(
    path TEXT PRIMARY KEY, meta TEXT NOT NULL, staged TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '', first_seen REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    seen_cycle INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS intents(path TEXT PRIMARY KEY, entry TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS siblings(path TEXT NOT NULL, vector TEXT NOT NULL, entry TEXT NOT NULL,
    PRIMARY KEY(path, vector));
CREATE TABLE IF NOT EXISTS errors(
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, message TEXT NOT NULL,
    hint TEXT NOT NULL DEFAULT '', first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    cycles INTEGER NOT NULL DEFAULT 1, seen_cycle INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS bad_bundles(
    author TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL, first_seen REAL NOT NULL,
    quarantined INTEGER NOT NULL DEFAULT 0, tries INTEGER NOT NULL DEFAULT 0, file TEXT NOT NULL DEFAULT '',
    PRIMARY KEY(author, seq));
CREATE TABLE IF NOT EXISTS versions(
    id INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL, hash TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, archived_at REAL NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS versions_path ON versions(path);
CREATE TABLE IF NOT EXISTS corrections(
    id INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, subject TEXT NOT NULL, action TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folder_sums(folder TEXT PRIMARY KEY, digest BLOB NOT NULL, unsynced TEXT NOT NULL);
"""


CHUNKMAPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunkmaps(
    hash TEXT PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL, map BLOB NOT NULL, made REAL NOT NULL);
CREATE INDEX IF NOT EXISTS chunkmaps_path ON chunkmaps(path);
"""
CHUNKMAPS_KEPT = 1000  # the most recently made maps are kept


@dataclasses.dataclass
class Entry:
    path: str
    kind: str = "file"  # "file" or "dir"
    deleted: bool = False
    hash: str = ""
    size: int = 0
    mtime_ns: int = 0
    mode: int = 0o644
    inode: int = 0
    vector: vv.Vector = dataclasses.field(default_factory=dict)
    modified_by: str = ""
    local_seq: int = 0

    @property
    def live(self) -> bool:
        return not self.deleted

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _FIELDS}  # dataclasses.asdict deep-copies: slow in bulk

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        return cls(**data)


_FIELDS = tuple(f.name for f in dataclasses.fields(Entry))
_COLUMNS = "path, kind, deleted, hash, size, mtime_ns, mode, inode, vector, modified_by, local_seq"


def _entry(row: sqlite3.Row | tuple[Any, ...]) -> Entry:
    return Entry(row[0], row[1], bool(row[2]), row[3], row[4], row[5], row[6], row[7], vv.loads(row[8]), row[9],
                 row[10])


class Index:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        self.path = path
        self.db = sqlite3.connect(str(path), isolation_level=None, timeout=30)
        if new and not fsutil.IS_WINDOWS:
            os.chmod(path, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.db.executescript(CHUNKMAPS_SCHEMA)
        self._migrate()
        if self.get_meta("schema") is None:
            self.set_meta("schema", str(SCHEMA_VERSION))
        self._in_tx = False
        # Folders (prefixes: "a/b/", "" for the root) with a row written in the open transaction:
        # their digests are deleted when it commits. Doing it here, not with an SQL trigger,
        # costs a set insertion per row instead of about 10 µs (SQLite's string functions).
        self._touched: set[str] = set()
        self._sibling_cache: set[str] | None = None
        self._trouble_cache: set[str] | None = None  # paths with a pending operation or an apply error
        # This peer's counter as the open transaction has moved it (written once, at its commit):
        # a scan of 10,000 new files takes 10,000 of them. Read afresh by each transaction, as
        # another process may have moved it in between.
        self._clock: int | None = None
        self._absent: set[str] = set()  # paths known to have no row (``knowing_absent``)
        self._unknown: set[str] = set()  # case keys known to have no row (``knowing_absent``)

    def _migrate(self) -> None:
        """Columns added since the first release (CREATE TABLE IF NOT EXISTS does not add them)."""
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(pending)")}
        if "seen_cycle" not in columns:
            self.db.execute("ALTER TABLE pending ADD COLUMN seen_cycle INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[None]:
        """One atomic change of the index; nests as a no-op."""
        if self._in_tx:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        self._in_tx = True
        try:
            yield
            self._drop_touched_sums()
            if self._clock is not None:
                self.set_meta("clock", self._clock)
        except BaseException:
            self.db.execute("ROLLBACK")
            self._trouble_cache = None
            self._touched.clear()
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_tx = False
            self._clock = None

    # -- meta -----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | int | float) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, str(value)))

    def meta_int(self, key: str, default: int = 0) -> int:
        value = self.get_meta(key)
        return default if value is None else int(value)

    def next_clock(self) -> int:
        """This peer's next counter: strictly increasing, never reused."""
        with self.tx():
            if self._clock is None:
                self._clock = self.meta_int("clock")
            self._clock += 1
            return self._clock

    # -- files ----------------------------------------------------------------

    def get(self, path: str) -> Entry | None:
        if path in self._absent:
            return None
        row = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE path=?", (path,)).fetchone()
        return None if row is None else _entry(row)

    @contextmanager
    def knowing_absent(self, candidates: Iterable[str]) -> Iterator[None]:
        """Within this block, ``get`` answers without a query for the paths among ``candidates``
        that no row has, and ``case_clash`` for those whose case key no row has: a bundle of new
        files is applied with two queries fewer a file. Each answer comes from the same column its
        query would read (a row's case key as stored, which an older Python may have folded
        otherwise, is never taken for its path). Rows are never deleted, and every row is written
        by ``put_many``, which forgets the paths it writes; the caller holds the store's lock, so no
        other process writes rows meanwhile."""
        absent = set(candidates)
        keys = {paths.case_key(p) for p in absent}
        for column, wanted in (("path", absent), ("ckey", keys)):
            listed = list(wanted)
            for i in range(0, len(listed), 500):
                chunk = listed[i:i + 500]
                marks = ",".join("?" * len(chunk))
                wanted.difference_update(r[0] for r in self.db.execute(
                    f"SELECT DISTINCT {column} FROM files WHERE {column} IN ({marks})", chunk))
        self._absent, self._unknown = absent, keys
        try:
            yield
        finally:
            self._absent, self._unknown = set(), set()

    def put(self, e: Entry) -> None:
        self.put_many((e,))

    def put_many(self, entries: Iterable[Entry]) -> None:
        """Write rows (one statement for them all: a batch of applied files)."""
        touched, absent, unknown = self._touched, self._absent, self._unknown
        rows = []
        for e in entries:
            ckey = paths.case_key(e.path)
            rows.append((e.path, e.kind, int(e.deleted), e.hash, e.size, e.mtime_ns, e.mode, e.inode,
                         vv.dumps(e.vector), e.modified_by, e.local_seq, ckey))
            absent.discard(e.path)
            unknown.discard(ckey)
            touched.add(e.path[:e.path.rfind("/") + 1])
            if e.kind == "dir" and e.deleted:
                touched.add(e.path + "/")  # a folder gone: its own digest goes too
        self.db.executemany(f"INSERT OR REPLACE INTO files({_COLUMNS}, ckey) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        if not self._in_tx:
            self._drop_touched_sums()

    def _drop_touched_sums(self) -> None:
        if self._touched:
            self.drop_folder_sums(self._touched)
            self._touched.clear()

    def case_clash(self, path: str) -> str | None:
        """A live path that differs from ``path`` only in letter case, if any."""
        ckey = paths.case_key(path)
        if ckey in self._unknown:
            return None
        row = self.db.execute(
            "SELECT path FROM files WHERE ckey=? AND path<>? AND deleted=0 LIMIT 1", (ckey, path)
        ).fetchone()
        return None if row is None else str(row[0])

    def entries(self, live_only: bool = False) -> Iterator[Entry]:
        sql = f"SELECT {_COLUMNS} FROM files" + (" WHERE deleted=0" if live_only else "") + " ORDER BY path"
        for row in self.db.execute(sql):
            yield _entry(row)

    def stat_map(self) -> dict[str, tuple[str, bool, int, int, int, int]]:
        """path -> (kind, deleted, size, mtime_ns, inode, mode): what a scan compares against."""
        return {
            r[0]: (r[1], bool(r[2]), r[3], r[4], r[5], r[6])
            for r in self.db.execute("SELECT path, kind, deleted, size, mtime_ns, inode, mode FROM files")
        }

    # -- folder digests (peersync.scan) ------------------------------------------

    def folder_sums(self) -> dict[str, tuple[bytes, frozenset[str]]]:
        """folder prefix -> (digest of its listing, the names in it that never sync)."""
        self._drop_touched_sums()  # rows written earlier in this transaction
        return {r[0]: (bytes(r[1]), frozenset(json.loads(r[2])) if r[2] != "[]" else frozenset())
                for r in self.db.execute("SELECT folder, digest, unsynced FROM folder_sums")}

    def set_folder_sum(self, folder: str, digest: bytes, unsynced: list[str]) -> None:
        self.db.execute("INSERT OR REPLACE INTO folder_sums(folder, digest, unsynced) VALUES(?, ?, ?)",
                        (folder, digest, json.dumps(unsynced)))

    def drop_folder_sums(self, folders: Iterable[str] | None = None) -> None:
        """Forget the digests of ``folders`` (prefixes such as "a/b/", "" for the root), or of all.
        Every write of a row's stat fields must drop its folder's: put and forget_stat do."""
        if folders is None:
            self.db.execute("DELETE FROM folder_sums")
        else:
            self.db.executemany("DELETE FROM folder_sums WHERE folder=?", ((f,) for f in folders))

    def count_live(self) -> int:
        """Live rows, files and folders."""
        return int(self.db.execute("SELECT COUNT(*) FROM files WHERE deleted=0").fetchone()[0])

    def count_live_files(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM files WHERE deleted=0 AND kind='file'").fetchone()[0])

    def outgoing(self) -> list[Entry]:
        published = self.meta_int("published_seq")
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM files WHERE local_seq > ? ORDER BY local_seq", (published,)
        )
        return [_entry(r) for r in rows]

    def find_by_hash(self, digest: str) -> list[Entry]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM files WHERE hash=? AND deleted=0 AND kind='file'", (digest,))
        return [_entry(r) for r in rows]

    # -- applied / partials ---------------------------------------------------

    def applied(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT author, seq FROM applied")}

    def set_applied(self, author: str, seq: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO applied(author, seq) VALUES(?, ?)", (author, seq))

    def partial(self, author: str) -> tuple[dict[str, Any], str, int] | None:
        row = self.db.execute("SELECT meta, staged, written FROM partials WHERE author=?", (author,)).fetchone()
        return None if row is None else (json.loads(row[0]), row[1], row[2])

    def set_partial(self, author: str, meta: dict[str, Any], staged: str, written: int) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO partials(author, meta, staged, written) VALUES(?,?,?,?)",
            (author, json.dumps(meta), staged, written),
        )

    def clear_partial(self, author: str) -> None:
        self.db.execute("DELETE FROM partials WHERE author=?", (author,))

    # -- pending remote operations -------------------------------------------

    def add_pending(self, path: str, meta: dict[str, Any], staged: str, reason: str) -> None:
        """Keep an operation for later. ``attempts`` counts the cycles in which it failed for this same
        reason (another reason starts the count again), which is what the three-strikes rule counts."""
        cycle = self.meta_int("cycle")
        row = self.db.execute("SELECT first_seen, attempts, reason, seen_cycle FROM pending WHERE path=?",
                              (path,)).fetchone()
        if row is None:
            first, attempts = time.time(), 1
        elif row[2] != reason:
            first, attempts = row[0], 1
        else:
            first, attempts = row[0], row[1] + (row[3] != cycle)
        self.db.execute(
            "INSERT OR REPLACE INTO pending(path, meta, staged, reason, first_seen, attempts, seen_cycle)"
            " VALUES(?,?,?,?,?,?,?)",
            (path, json.dumps(meta), staged, reason, first, attempts, cycle),
        )
        if self._trouble_cache is not None:
            self._trouble_cache.add(path)

    def pending(self) -> list[tuple[str, dict[str, Any], str, str, float, int]]:
        rows = self.db.execute("SELECT path, meta, staged, reason, first_seen, attempts FROM pending ORDER BY path")
        return [(r[0], json.loads(r[1]), r[2], r[3], r[4], r[5]) for r in rows]

    def pending_meta(self, path: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT meta FROM pending WHERE path=?", (path,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def has_pending_or_error(self, path: str) -> bool:
        """Asked after every applied operation: answered from the (few) such paths, read once a cycle."""
        if self._trouble_cache is None:
            self._trouble_cache = {r[0] for r in self.db.execute(
                "SELECT path FROM pending UNION SELECT substr(key, 7) FROM errors WHERE key LIKE 'apply:%'")}
        return path in self._trouble_cache

    def drop_pending(self, path: str) -> None:
        self.db.execute("DELETE FROM pending WHERE path=?", (path,))
        self._trouble_cache = None

    # -- intents --------------------------------------------------------------

    def add_intent(self, e: Entry, siblings: list[Entry]) -> None:
        """Before a rename: the row and the siblings the path will have once it is done."""
        self.add_intents(((e, siblings),))

    def add_intents(self, intents: Iterable[tuple[Entry, list[Entry]]]) -> None:
        rows = [(e.path, json.dumps({"entry": e.to_dict(), "siblings": [s.to_dict() for s in siblings]}))
                for e, siblings in intents]
        with self.tx():
            self.db.executemany("INSERT OR REPLACE INTO intents(path, entry) VALUES(?, ?)", rows)

    def intents(self) -> list[tuple[Entry, list[Entry]]]:
        out = []
        for (text,) in self.db.execute("SELECT entry FROM intents"):
            data = json.loads(text)
            if "entry" not in data:  # written before siblings existed: there were none
                data = {"entry": data, "siblings": []}
            out.append((Entry.from_dict(data["entry"]), [Entry.from_dict(s) for s in data["siblings"]]))
        return out

    # -- siblings: concurrent versions that lost ---------------------------------

    def siblings(self, path: str) -> list[Entry]:
        if path not in self._sibling_paths():
            return []
        rows = self.db.execute("SELECT entry FROM siblings WHERE path=? ORDER BY vector", (path,))
        return [Entry.from_dict(json.loads(r[0])) for r in rows]

    def set_siblings(self, path: str, entries: list[Entry]) -> None:
        known = self._sibling_paths()
        if not entries and path not in known:
            return
        self.db.execute("DELETE FROM siblings WHERE path=?", (path,))
        self.db.executemany(
            "INSERT OR REPLACE INTO siblings(path, vector, entry) VALUES(?,?,?)",
            [(path, vv.dumps(e.vector), json.dumps(e.to_dict())) for e in entries],
        )
        if entries:
            known.add(path)
        else:
            known.discard(path)

    def _sibling_paths(self) -> set[str]:
        """The paths that have siblings: most stores have none, so most reads and writes are spared."""
        if self._sibling_cache is None:
            self._sibling_cache = {r[0] for r in self.db.execute("SELECT DISTINCT path FROM siblings")}
        return self._sibling_cache

    def reload(self) -> None:
        """Forget what is cached: another process may have changed the index (call as a cycle starts)."""
        self._sibling_cache = None
        self._trouble_cache = None

    def all_siblings(self) -> Iterator[Entry]:
        for (text,) in self.db.execute("SELECT entry FROM siblings ORDER BY path, vector"):
            yield Entry.from_dict(json.loads(text))

    def drop_intent(self, path: str) -> None:
        self.drop_intents((path,))

    def drop_intents(self, done: Iterable[str]) -> None:
        self.db.executemany("DELETE FROM intents WHERE path=?", [(path,) for path in done])

    # -- errors ---------------------------------------------------------------

    def record_error(self, key: str, kind: str, subject: str, message: str, hint: str = "") -> None:
        """Note an error seen in the current cycle; repeated cycles count up."""
        cycle = self.meta_int("cycle")
        now = time.time()
        row = self.db.execute("SELECT cycles, seen_cycle FROM errors WHERE key=?", (key,)).fetchone()
        if row is None:
            self.db.execute(
                "INSERT INTO errors(key, kind, subject, message, hint, first_seen, last_seen, cycles, seen_cycle)"
                " VALUES(?,?,?,?,?,?,?,1,?)",
                (key, kind, subject, message, hint, now, now, cycle),
            )
        else:
            cycles = row[0] + (1 if row[1] != cycle else 0)
            self.db.execute(
                "UPDATE errors SET message=?, hint=?, last_seen=?, cycles=?, seen_cycle=? WHERE key=?",
                (message, hint, now, cycles, cycle, key),
            )
        if self._trouble_cache is not None and key.startswith("apply:"):
            self._trouble_cache.add(key[len("apply:"):])

    def clear_error(self, key: str) -> None:
        self.db.execute("DELETE FROM errors WHERE key=?", (key,))
        self._trouble_cache = None

    def clear_errors(self, prefix: str = "") -> None:
        self.db.execute("DELETE FROM errors WHERE key LIKE ?", (prefix + "%",))
        self._trouble_cache = None

    def errors(self) -> list[dict[str, Any]]:
        cols = ("key", "kind", "subject", "message", "hint", "first_seen", "last_seen", "cycles")
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM errors ORDER BY first_seen")
        return [dict(zip(cols, r)) for r in rows]

    # -- bad bundles ----------------------------------------------------------

    def bad_bundle(self, author: str, seq: int, reason: str, file_sig: str = "") -> tuple[float, bool, int]:
        """Note a bundle that does not verify; returns (first seen, quarantined, failed cycles).

        ``file_sig`` (size and mtime) restarts the count of failed cycles when the file changes:
        a cloud client still writing it is not a bundle that failed three times.
        """
        row = self.db.execute(
            "SELECT first_seen, quarantined, tries, file FROM bad_bundles WHERE author=? AND seq=?", (author, seq)
        ).fetchone()
        if row:
            tries = row[2] + 1 if row[3] == file_sig else 1
            self.db.execute("UPDATE bad_bundles SET reason=?, tries=?, file=? WHERE author=? AND seq=?",
                            (reason, tries, file_sig, author, seq))
            return row[0], bool(row[1]), tries
        now = time.time()
        self.db.execute(
            "INSERT INTO bad_bundles(author, seq, reason, first_seen, tries, file) VALUES(?,?,?,?,1,?)",
            (author, seq, reason, now, file_sig),
        )
        return now, False, 1

    def quarantine(self, author: str, seq: int) -> None:
        self.db.execute("UPDATE bad_bundles SET quarantined=1 WHERE author=? AND seq=?", (author, seq))

    def forget_bad_bundle(self, author: str, seq: int) -> None:
        self.db.execute("DELETE FROM bad_bundles WHERE author=? AND seq=? AND quarantined=0", (author, seq))

    def bad_bundles(self) -> list[dict[str, Any]]:
        cols = ("author", "seq", "reason", "first_seen", "quarantined", "tries")
        return [dict(zip(cols, r)) for r in self.db.execute(f"SELECT {', '.join(cols)} FROM bad_bundles")]

    # -- versions catalogue ---------------------------------------------------

    def add_version(self, path: str, digest: str, size: int, mtime_ns: int, reason: str) -> None:
        self.db.execute(
            "INSERT INTO versions(path, hash, size, mtime_ns, archived_at, reason) VALUES(?,?,?,?,?,?)",
            (path, digest, size, mtime_ns, time.time(), reason),
        )

    def versions(self, path: str | None = None) -> list[dict[str, Any]]:
        cols = ("id", "path", "hash", "size", "mtime_ns", "archived_at", "reason")
        sql = f"SELECT {', '.join(cols)} FROM versions"
        args: tuple[Any, ...] = ()
        if path is not None:
            sql += " WHERE path=?"
            args = (path,)
        return [dict(zip(cols, r)) for r in self.db.execute(sql + " ORDER BY id DESC", args)]

    # -- corrections ------------------------------------------------------------

    def add_correction(self, subject: str, action: str) -> None:
        self.db.execute("INSERT INTO corrections(time, subject, action) VALUES(?,?,?)", (time.time(), subject, action))
        self.db.execute("DELETE FROM corrections WHERE id <= (SELECT MAX(id) FROM corrections) - 200")

    def corrections(self) -> list[dict[str, Any]]:
        cols = ("time", "subject", "action")
        return [dict(zip(cols, r)) for r in self.db.execute(f"SELECT {', '.join(cols)} FROM corrections ORDER BY id")]

    # -- chunk maps of large files (peersync.delta) ------------------------------

    def set_chunk_map(self, digest: str, path: str, size: int, packed: bytes) -> None:
        """Keep the chunk map of content ``digest``, last seen at ``path``."""
        self.db.execute("INSERT OR REPLACE INTO chunkmaps(hash, path, size, map, made) VALUES(?,?,?,?,?)",
                        (digest, path, size, packed, time.time()))
        self.db.execute("DELETE FROM chunkmaps WHERE rowid NOT IN "
                        "(SELECT rowid FROM chunkmaps ORDER BY made DESC LIMIT ?)", (CHUNKMAPS_KEPT,))

    def chunk_map(self, digest: str) -> bytes | None:
        row = self.db.execute("SELECT map FROM chunkmaps WHERE hash=?", (digest,)).fetchone()
        return bytes(row[0]) if row else None

    def delta_base(self, path: str, digest: str) -> tuple[str, int, bytes] | None:
        """The content this peer last had at ``path`` other than ``digest``, with its map: a delta's base."""
        row = self.db.execute("SELECT hash, size, map FROM chunkmaps WHERE path=? AND hash<>? "
                              "ORDER BY made DESC LIMIT 1", (path, digest)).fetchone()
        return (str(row[0]), int(row[1]), bytes(row[2])) if row else None

    # -- the outgoing queue -----------------------------------------------------

    def drop_outgoing(self, path: str) -> bool:
        """Take a local change out of the queue; it stays local until it changes again."""
        published = self.meta_int("published_seq")
        cur = self.db.execute("UPDATE files SET local_seq=0 WHERE path=? AND local_seq > ?", (path, published))
        return cur.rowcount > 0

    def forget_stat(self, path: str | None = None) -> None:
        """Make the next scan hash ``path`` (or every path) again instead of trusting its stat."""
        if path is None:
            self.db.execute("UPDATE files SET inode=-1")
        else:
            self.db.execute("UPDATE files SET inode=-1 WHERE path=? OR path LIKE ?", (path, path + "/%"))
        self.drop_folder_sums()

    def integrity_ok(self) -> bool:
        return bool(self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def stat_rows(self, paths: set[str],
                  trees: set[str] | frozenset[str] = frozenset()) -> dict[str, tuple[str, bool, int, int, int, int]]:
        """:meth:`stat_map` for ``paths`` and everything under the folders ``trees`` only (a partial scan)."""
        cols = "SELECT path, kind, deleted, size, mtime_ns, inode, mode FROM files"
        rows: list[Any] = []
        for p in paths:
            rows += self.db.execute(f"{cols} WHERE path=?", (p,)).fetchall()
        for t in trees:  # '0' follows '/': the range is every path under t/, with no LIKE wildcard to escape
            rows += self.db.execute(f"{cols} WHERE path >= ? AND path < ?", (t + "/", t + "0")).fetchall()
        return {r[0]: (r[1], bool(r[2]), r[3], r[4], r[5], r[6]) for r in rows}

    def stale_errors(self, prefix: str) -> list[tuple[str, str]]:
        """(key, subject) of the errors under ``prefix`` not recorded again in the current cycle."""
        rows = self.db.execute("SELECT key, subject FROM errors WHERE key LIKE ? AND seen_cycle <> ?",
                               (prefix + "%", self.meta_int("cycle")))
        return [(str(r[0]), str(r[1])) for r in rows]

