"""Apply remote operations to a store: decide, keep the old content, write atomically.

For each operation the local row is first brought up to date with the disk
(a change nobody has scanned yet is a change all the same). Then:

- remote vector <= local: already have it, nothing to do;
- remote dominates: apply it, archiving what it overwrites or deletes;
- concurrent: the rule in :mod:`conflict` picks a winner. Where the remote
  side wins over a local modification, the local content is linked to a
  ``.sync-conflict-...`` name first and published like any new file; where
  the local side wins, nothing changes here, because the peer that holds the
  losing side keeps it the same way. Same content on both sides is no
  conflict: the winner's vector is adopted.

A file is written as a temporary name in its target folder, checked against
the announced hash, fsynced, given its mode and mtime, recorded as an intent,
and renamed over the target. An operation that cannot be applied now (a
locked file, content not at hand, a full disk) is kept in ``pending`` with
its content staged in the state folder, and retried every cycle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
import stat as statmod
from pathlib import Path
from typing import Any

from . import delta, fsutil, paths
from . import vector as vv
from .bundle import Record
from .conflict import conflict_copy_target, winner
from .errors import BadBundle, PathError
from .ignore import Ignore
from .index import Entry, Index
from .scan import Scanner
from .stop import StopCheck, Stopped, never
from .versions import Archive

log = logging.getLogger("peersync")

HASH_RE = re.compile(r"^[0-9a-f]{64}$")
PEER_RE = re.compile(r"^[A-Z2-7]{26}$")
OPS = {"put", "part", "delete", "mkdir"}


class Retry(Exception):
    """An operation that cannot be applied now; it is kept and retried."""

    def __init__(self, message: str, hint: str = "", need: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.need = need  # the hash of content that is not at hand: other peers are asked for it


class FlushFailed(Exception):
    """Putting the queued files in place failed (a disk error): none of the bundles they came from
    may be marked applied. Not an OSError, so that no handler of one file's error takes it."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(exc.strerror or str(exc))
        self.strerror = exc.strerror or str(exc)


class Skip(Exception):
    """An operation that will never apply here as sent (case clash, type clash); reported."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def check_record(rec: Record) -> dict[str, Any]:
    """Validate one record's metadata; raise BadBundle on anything malformed or hostile."""
    m = rec.meta
    op = m.get("op")
    if op not in OPS:
        raise BadBundle(f"bundle holds an unknown operation {str(op)[:20]!r}")
    try:
        m["path"] = paths.validate(m.get("path"))  # type: ignore[arg-type]
        if op != "part":
            m["vector"] = vv.check(m.get("vector"))
            if not isinstance(m.get("by"), str) or not PEER_RE.match(m["by"]):
                raise ValueError("bad author id")
        if op in ("put", "part") and not (isinstance(m.get("hash"), str) and HASH_RE.match(m["hash"])):
            raise ValueError("bad content hash")
        required = {"put": ("size", "mtime_ns"), "part": ("offset",)}.get(op, ())
        for key in ("size", "mtime_ns", "offset"):
            if key not in m:
                if key in required:
                    raise ValueError(f"missing {key}")
                continue
            if not isinstance(m[key], int) or isinstance(m[key], bool) or not 0 <= m[key] < 2**63:
                raise ValueError(f"bad {key}")
        if op == "part" and not isinstance(m.get("final", False), bool):
            raise ValueError("bad final flag")
        if op == "put":
            if m.get("content") not in ("inline", "parts", "ref", "delta"):
                raise ValueError("bad content kind")
            if m.get("mode") not in (0o644, 0o755):
                raise ValueError("bad mode")
            if m["content"] == "inline" and len(rec.data) != m.get("size"):
                raise ValueError("inline content does not match its size")
            if "from" in m:
                m["from"] = paths.validate(m["from"])
            if m["content"] == "delta":
                _check_delta(m, len(rec.data))
        if op == "delete" and m.get("kind") not in ("file", "dir"):
            raise ValueError("bad kind")
    except PathError as exc:
        raise BadBundle(f"bundle holds an {exc.message}") from exc
    except (ValueError, TypeError) as exc:
        raise BadBundle(f"bundle holds a malformed {op} record ({exc})") from exc
    return m


def _check_delta(m: dict[str, Any], data_len: int) -> None:
    """A delta put (docs/bundle-format.md 6.3.1): its base and ops must describe exactly ``size`` bytes."""
    if not (isinstance(m.get("base"), str) and HASH_RE.match(m["base"])):
        raise ValueError("bad delta base")
    base_size = m.get("base_size")
    if not isinstance(base_size, int) or isinstance(base_size, bool) or not 0 <= base_size < 2**63:
        raise ValueError("bad base_size")
    delta.check_ops(m.get("ops"), base_size, m["size"], data_len)


def remote_entry(m: dict[str, Any]) -> Entry:
    op = m["op"]
    return Entry(
        path=m["path"],
        kind="dir" if op == "mkdir" or (op == "delete" and m.get("kind") == "dir") else "file",
        deleted=op == "delete",
        hash=m.get("hash", "") or "",
        size=m.get("size", 0),
        mtime_ns=m.get("mtime_ns", 0),
        mode=m.get("mode", 0o755 if op == "mkdir" else 0o644),
        vector=m["vector"],
        modified_by=m["by"],
    )


# Files written before they are put in place together, across the bundles of one peer. Each batch
# costs two syncfs (or one fsync per file), two commits and a rewrite of the index pages it touches,
# so fewer, larger batches are cheaper; the content the queue holds for a retry is bounded in bytes.
QUEUE_MAX = 10000
QUEUE_BYTES = 16 << 20
_UTIME_BY_FD = os.utime in os.supports_fd  # not on Windows


@dataclasses.dataclass
class _Queued:
    """A file written under a temporary name, waiting to be renamed into place by ``flush``."""

    m: dict[str, Any]
    data: bytes
    local: Entry | None
    new: Entry
    tmp: str
    target: str
    siblings: list[Entry]
    device: int  # the filesystem it is written on (st_dev)


def _vectors(entries: list[Entry]) -> list[str]:
    return sorted(vv.dumps(e.vector) for e in entries)


def _same(a: Entry, b: Entry) -> bool:
    """Both versions leave the same thing on disk (content, not metadata)."""
    return a.deleted == b.deleted and a.kind == b.kind and (a.deleted or a.kind == "dir" or a.hash == b.hash)


def version_meta(e: Entry, content: str = "") -> dict[str, Any]:
    """The operation that describes version ``e``; a put gets ``content`` as its content kind if given."""
    base = {"path": e.path, "vector": e.vector, "by": e.modified_by}
    if e.deleted:
        return {"op": "delete", "kind": e.kind, "hash": e.hash, "mtime_ns": e.mtime_ns, **base}
    if e.kind == "dir":
        return {"op": "mkdir", **base}
    meta = {"op": "put", "hash": e.hash, "size": e.size, "mtime_ns": e.mtime_ns, "mode": e.mode, **base}
    if content:
        meta["content"] = content
    return meta


class Applier:
    def __init__(self, root: Path, index: Index, scanner: Scanner, archive: Archive, ignore: Ignore,
                 peer: str, staging: Path) -> None:
        self.root = root
        self._root = os.fspath(root)  # the hot path joins and opens plain strings: a Path costs ~10 us a file
        self.index = index
        self.scanner = scanner
        self.archive = archive
        self.ignore = ignore
        self.peer = peer
        self.staging = staging
        self.applied_ops = 0
        self.conflicts = 0
        self._queue: list[_Queued] = []
        self._queued_bytes = 0
        # Bundles whose every record is applied or queued, marked applied in the commit that records
        # the queue (see ``bundle_done``): a mark is never durable before the files it stands for.
        self._marks: list[tuple[str, int]] = []
        # Rows (with their siblings) of folders made and of versions adopted, waiting for the batch's
        # last commit: one commit, not one each. A crash before it leaves a folder the next scan finds,
        # or a file whose new mtime the next scan takes in (mtime-only changes are not sent).
        self._rows: list[tuple[Entry, list[Entry]]] = []
        self._queued_keys: set[str] = set()  # case keys of the queued paths
        # Folders (relative) found to exist, with no link on the way, while applying this bundle:
        # their files skip the per-component lstat and the mkdir. Forgotten whenever this peer
        # deletes something or removes a folder, and at the start of every bundle.
        self._real_dirs: set[str] = set()

    # -- records from a bundle ------------------------------------------------

    def apply_records(self, author: str, records: list[Record], stop: StopCheck = never) -> None:
        """Apply a bundle's records. Its files may stay queued after it returns: ``bundle_done`` marks
        the bundle applied with them, and ``flush`` puts them in place. On an error the queue and the
        marks not yet recorded are dropped, and those bundles are read again later."""
        self._real_dirs.clear()
        try:
            with self.index.knowing_absent(r.meta["path"] for r in records):
                self._apply_records(author, records, stop)
        except BaseException:
            self._discard_queue()
            raise

    def bundle_done(self, author: str, seq: int) -> None:
        """Mark bundle ``seq`` of ``author`` applied in the commit that records what is queued now."""
        self._marks.append((author, seq))

    def _apply_records(self, author: str, records: list[Record], stop: StopCheck) -> None:
        for rec in records:
            if stop():
                self.flush()  # what is written so far is put in place and kept
                raise Stopped  # between two records: the bundle is read again
            m = rec.meta
            if m["op"] == "part":
                self.flush()
                self._part(author, m, rec.data)
            elif m["op"] == "put" and m["content"] == "parts":
                self.flush()
                self._start_parts(author, m, rec.data)
            else:
                self._run(m, rec.data if m["op"] == "put" and m["content"] in ("inline", "delta") else None)

    def _run(self, m: dict[str, Any], data: bytes | Path | None) -> None:
        """Apply one operation; on Retry keep it pending, on Skip report it."""
        path = m["path"]
        if self.ignore.ignored(path, m["op"] == "mkdir" or m.get("kind") == "dir"):
            return
        key = paths.case_key(path)
        if key in self._queued_keys:
            self.flush()  # this path, or one that differs only in case, is waiting to be renamed into place
        try:
            self.apply(remote_entry(m), m, data)
        except Retry as exc:
            self._keep_for_later(m, data, exc)
            return
        except Skip as exc:
            with self.index.tx():
                self.index.drop_pending(path)
                self.index.record_error(f"apply:{path}", "conflict", path, exc.message, exc.hint)
            return
        except (PathError, ValueError, OverflowError, OSError) as exc:
            # Not foreseen: keep the operation and its content, report it, and go on with the others.
            log.exception("cannot apply %s", path)
            staged = self._stage(m, data)
            with self.index.tx():
                self.index.add_pending(path, m, staged, f"cannot apply ({exc.__class__.__name__}: {exc})")
                self.index.record_error(f"apply:{path}", "apply", path,
                                        f"{path} cannot be applied ({exc.__class__.__name__}: {exc})",
                                        "it is retried every cycle; the log has the details")
            return
        if key in self._queued_keys:
            return  # recorded by ``flush``, which settles its pending operation then
        if self.index.has_pending_or_error(path):  # usually not: spare a commit (and its fsync)
            with self.index.tx():
                self._settle(path)

    def _settle(self, path: str) -> None:
        """Drop the pending operation and the error of ``path`` if what it now holds settles them."""
        if self.index.has_pending_or_error(path):
            waiting = self.index.pending_meta(path)
            if waiting is None or self._settled(waiting):  # not a newer one still waiting
                self.index.drop_pending(path)
                self.index.clear_error(f"apply:{path}")

    def _keep_for_later(self, m: dict[str, Any], data: bytes | Path | None, exc: Retry) -> None:
        path = m["path"]
        log.info("%s is kept for a later attempt: %s", path, exc.message)
        if m.get("content") == "delta":  # literals alone are no content to keep: the whole file is asked for
            m = {k: v for k, v in m.items() if k not in ("base", "base_size", "ops")}
            m["content"] = "ref"
            exc.need = m["hash"]
            data = None
            with self.index.tx():
                self.index.add_correction(path, "a delta could not be applied here "
                                                f"({exc.message}); fell back to a full copy")
        staged = self._stage(m, data)
        with self.index.tx():
            self.index.add_pending(path, dict(m, need=exc.need) if exc.need else m, staged, exc.message)
            self.index.record_error(f"apply:{path}", "apply", path, exc.message, exc.hint)

    def _settled(self, m: dict[str, Any]) -> bool:
        """True when this peer keeps the version ``m`` describes, or one that supersedes it."""
        local = self.index.get(m["path"])
        known = ([local] if local else []) + self.index.siblings(m["path"])
        return any(vv.compare(m["vector"], v.vector) in (vv.Order.BEFORE, vv.Order.EQUAL) for v in known)

    def _stage(self, m: dict[str, Any], data: bytes | Path | None) -> str:
        """Keep a pending operation's content in the state folder so the bundle is not needed again."""
        if m["op"] != "put" or data is None:
            return ""
        target = self.staging / m["hash"]
        if isinstance(data, Path):
            if not data.exists():
                return str(target) if target.exists() else ""
            if data != target:
                self.staging.mkdir(parents=True, exist_ok=True)
                os.replace(data, target)
        elif hashlib.sha256(data).hexdigest() != m["hash"]:
            return ""  # never keep content under a hash it does not have
        elif not target.exists():
            fsutil.atomic_write(target, data)
        return str(target)

    def _start_parts(self, author: str, m: dict[str, Any], data: bytes) -> None:
        current = self.index.partial(author)
        if current and current[0]["path"] == m["path"] and current[0]["vector"] == m["vector"]:
            return  # the same bundle, read again after a restart
        self.staging.mkdir(parents=True, exist_ok=True)
        staged = self.staging / f"part-{author}-{m['hash'][:16]}"
        with open(staged, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with self.index.tx():
            self.index.set_partial(author, m, str(staged), len(data))

    def _part(self, author: str, m: dict[str, Any], data: bytes) -> None:
        current = self.index.partial(author)
        if current is None or current[0]["path"] != m["path"] or current[0]["hash"] != m["hash"]:
            return  # the rest of a file its author gave up sending (it changed meanwhile)
        meta, staged, written = current
        offset = m.get("offset", -1)
        if offset + len(data) <= written:
            return  # already written before a restart
        if offset != written or written + len(data) > meta["size"]:
            with self.index.tx():  # parts that do not fit: drop the file; its next version comes whole
                self.index.clear_partial(author)
                self.index.record_error(f"apply:{m['path']}", "apply", m["path"],
                                        f"the parts of {m['path']} did not fit together and were dropped",
                                        "it is sent again when it next changes")
            return
        with open(staged, "r+b") as f:
            f.seek(offset)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with self.index.tx():
            self.index.set_partial(author, meta, staged, written + len(data))
        if m.get("final"):
            with self.index.tx():
                self.index.clear_partial(author)
            self._run(meta, Path(staged))

    def retry_pending(self) -> None:
        self._real_dirs.clear()
        for path, meta, staged, reason, _first, attempts in self.index.pending():
            if attempts >= 3 and "does not match its hash" in reason and meta["op"] == "put":
                # Third failure with content that will not verify: drop it and fetch it again.
                if staged:
                    Path(staged).unlink(missing_ok=True)
                meta = dict(meta, content="ref")
                staged = ""
                with self.index.tx():
                    self.index.add_pending(path, meta, "", "its content is fetched again")
                    self.index.add_correction(path, "the content received did not match its hash three times; "
                                                    "dropped it and asked its author to send it again")
                continue
            if self._settled(meta):
                with self.index.tx():
                    self.index.drop_pending(path)
                    self.index.clear_error(f"apply:{path}")
                continue
            data: Path | None = Path(staged) if staged else None
            if meta["op"] == "put" and meta["content"] != "ref" and (data is None or not data.exists()):
                # The kept content is gone (cleaned away, disk trouble): ask its author for it again.
                with self.index.tx():
                    self.index.add_pending(path, dict(meta, content="ref"), "", "its content is fetched again")
                    self.index.add_correction(path, "the kept content was missing; asked its author to send it again")
                continue
            self._run(meta, data)
        self.flush()  # rows only: staged content (a Path) is put in place one file at a time, never queued

    # -- deciding -------------------------------------------------------------

    def apply(self, remote: Entry, m: dict[str, Any], data: bytes | Path | None) -> None:
        if not self._link_free(remote.path):
            raise Skip(f"{remote.path} lies under a symbolic link; peersync never reads or writes through one",
                       "replace the link with a real folder")
        target = paths.join_str(self._root, remote.path)
        try:
            local = self.scanner.refresh(remote.path, links_checked=True, abspath=target)
        except PathError:
            raise
        except OSError as exc:
            raise Retry(f"cannot read {remote.path} before applying a change ({exc.strerror})") from exc
        if local is None:
            self._enact(None, remote, m, data, target, siblings=[])
            return
        siblings = self.index.siblings(remote.path)
        known = [local, *siblings]
        if any(vv.compare(remote.vector, v.vector) in (vv.Order.EQUAL, vv.Order.BEFORE) for v in known):
            if not siblings:
                return  # already have it, or something newer
            versions = known  # nothing new; the checks below still put the right version on disk
        else:
            # The versions this peer knows of the path, less those the remote one supersedes, plus it.
            versions = [v for v in known if vv.compare(v.vector, remote.vector) is not vv.Order.BEFORE] + [remote]
        best = winner(versions)
        rest = [v for v in versions if v is not best]
        if remote in rest:
            self._keep_losing_content(remote, data, local)
        if best is local:
            if _vectors(rest) != _vectors(siblings):
                self._later(local, rest)  # the row stands; its siblings change
            return
        if best is not remote and best.vector == remote.vector and best.hash == remote.hash:
            best = remote  # a known version sent again (its content was asked for): take it with its content
            rest = [v for v in versions if v.vector != remote.vector]
        wm, wdata = (m, data) if best is remote else (version_meta(best, content="ref"), None)
        if _same(local, best):
            self._adopt(local, best, rest)
            return
        # Another version goes on disk. The one there is kept as a conflict copy if it is still a
        # current version (concurrent, lost); if it is superseded it goes to the versions archive.
        keep = local in rest and local.live and local.kind == "file"
        self.conflicts += keep
        self._enact(local, best, wm, wdata, target, keep_local_as_conflict=keep, siblings=rest)

    def _keep_losing_content(self, remote: Entry, data: bytes | Path | None, local: Entry) -> None:
        """Keep a concurrent version that lost in the versions archive: it goes on disk if the
        version that beat it is superseded later by one that it beats (a deletion, say). Not when the
        file on disk holds that very content (a peer that joined with a copy of the files): that goes
        to the archive itself before peersync overwrites or deletes it."""
        if remote.deleted or remote.kind != "file" or data is None or self.archive.has(remote.hash):
            return
        if local.live and local.kind == "file" and local.hash == remote.hash:
            return
        if isinstance(data, bytes):
            if hashlib.sha256(data).hexdigest() == remote.hash:
                self.archive.keep_bytes(data, remote.path, remote.hash, remote.size, remote.mtime_ns,
                                        "concurrent version that lost")
        elif data.exists() and fsutil.hash_file(data)[0] == remote.hash:
            self.archive.keep(data, remote.path, remote.hash, remote.size, remote.mtime_ns,
                              "concurrent version that lost")

    def _adopt(self, local: Entry, best: Entry, rest: list[Entry]) -> None:
        """The winning version has what is on disk already: take its metadata (and its mtime)."""
        new = dataclasses.replace(best, inode=local.inode, local_seq=0)
        if best.live and best.kind == "file":
            target = paths.join(self.root, best.path)
            try:
                if not fsutil.IS_WINDOWS and local.mode != best.mode:
                    os.chmod(target, best.mode)
                os.utime(target, ns=(best.mtime_ns, best.mtime_ns))
                st = os.stat(target)
            except OSError as exc:
                raise self._os_retry(best.path, exc) from exc
            new.inode = st.st_ino
        self._later(new, rest)
        self.applied_ops += 1

    # -- doing ----------------------------------------------------------------

    def _enact(self, local: Entry | None, remote: Entry, m: dict[str, Any], data: bytes | Path | None,
               target: str, siblings: list[Entry], keep_local_as_conflict: bool = False) -> None:
        """Put ``remote`` on disk at ``target`` (its path joined to the root); ``siblings`` are the
        path's other current versions once it is there."""
        if not self._link_free(remote.path):
            raise Skip(f"{remote.path} lies under a symbolic link; peersync never writes through one",
                       "replace the link with a real folder")
        if remote.deleted:
            self._delete(local, remote, Path(target), siblings)
        elif remote.kind == "dir":
            self._mkdir(local, remote, Path(target), siblings)
        else:
            self._put(local, remote, m, data, target, siblings, keep_local_as_conflict)
        self.applied_ops += 1

    def _check_case(self, remote: Entry, local: Entry | None) -> None:
        if local is not None and local.live:
            return
        clash = self.index.case_clash(remote.path)
        if clash:
            raise Skip(f"{remote.path} and {clash} differ only in letter case, which a Windows or macOS "
                       f"disk cannot hold apart", "rename one of them on the peer that made it")

    def _link_free(self, rel: str) -> bool:
        """``paths.inside_without_links``, remembered per folder for the bundle being applied."""
        return rel.rpartition("/")[0] in self._real_dirs or paths.inside_without_links(self.root, rel)

    def _parent_ready(self, target: str, rel: str) -> None:
        """Make the folder of ``rel`` (checked link-free by the caller) exist."""
        folder = rel.rpartition("/")[0]
        if folder in self._real_dirs:
            return
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
        except FileExistsError as exc:
            raise Retry(f"a file stands where the folder of {rel} should be",
                        "rename or move that file") from exc
        except NotADirectoryError as exc:
            raise Retry(f"a file stands where the folder of {rel} should be",
                        "rename or move that file") from exc
        except OSError as exc:
            raise self._os_retry(rel, exc) from exc
        self._real_dirs.add(folder)

    def _os_retry(self, rel: str, exc: OSError) -> Retry:
        if fsutil.is_disk_full(exc):
            return Retry(f"the disk is full while writing {rel}", "free some space; the change is retried")
        if fsutil.is_locked_error(exc) or isinstance(exc, PermissionError):
            return Retry(f"{rel} is locked or not writable", "close the program that holds it; it is retried")
        return Retry(f"cannot write {rel} ({exc.strerror or exc})", "it is retried every cycle")

    def _materialize(self, m: dict[str, Any], data: bytes | Path | None, tmp: str,
                     durable: bool = True) -> tuple[str, Path | None, os.stat_result | None]:
        """Write the operation's content to ``tmp``; return its hash, where it was moved from if it
        was, and its stat if it has its mode and mtime already (content from the bundle). That is
        fsynced here unless ``durable`` is false (``flush`` does it then)."""
        if isinstance(data, bytes) and m.get("content") == "delta":
            return self._build_delta(m, data, tmp), None, None
        if isinstance(data, bytes):
            digest = hashlib.sha256(data).hexdigest()
            if digest != m["hash"]:
                return digest, None, None  # never written: the caller reports the mismatch
            return digest, None, self._write_new(tmp, data, m["mode"], m["mtime_ns"], durable)
        if isinstance(data, Path):
            try:
                os.rename(data, tmp)  # staged content: moved, and given back if the apply fails
            except OSError:
                return fsutil.copy_durable(data, tmp), None, None
            return self._hash_received(m, tmp), data, None
        source = self._find_content(m)
        if source is None:
            raise Retry(f"the content of {m['path']} is not here yet",
                        "it is asked for from the peers that have it and arrives in a later bundle", need=m["hash"])
        # A copy, not a link: two live paths must never share one inode.
        digest = fsutil.copy_durable(source, tmp)
        if digest == m["hash"] and self.index.chunk_map(digest) is None:
            self._hash_received(m, tmp)
        return digest, None, None

    @staticmethod
    def _write_new(tmp: str, data: bytes, mode: int, mtime_ns: int, durable: bool) -> os.stat_result:
        """Make ``tmp`` with ``data``, ``mode`` and ``mtime_ns``; return its stat. All through the one
        descriptor where the OS allows: no lookup of the path after the open, which costs as much."""
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            by_fd = _UTIME_BY_FD
            if by_fd:
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            st = os.fstat(fd)
            if not fsutil.IS_WINDOWS and statmod.S_IMODE(st.st_mode) != mode:  # the umask took bits away
                os.chmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if not by_fd:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
            st = os.stat(tmp)
        return st

    def _hash_received(self, m: dict[str, Any], tmp: str) -> str:
        """The hash of received content; a large file's chunk map is kept too, the base of its next delta."""
        threshold = int(self.scanner.settings.get("delta_min_bytes", 0))
        if not 0 < threshold <= m.get("size", 0):
            return fsutil.hash_file(tmp)[0]
        digest, size, chunk_map = delta.hash_and_map(tmp)
        if digest == m["hash"]:
            with self.index.tx():
                self.index.set_chunk_map(digest, m["path"], size, chunk_map)
        return digest

    def _build_delta(self, m: dict[str, Any], data: bytes, tmp: str) -> str:
        """Write the content a delta describes to ``tmp`` from its base; return its hash. Without the
        base, or when the result does not hash right, raise Retry: the whole content is asked for."""
        base = self._find_content({"hash": m["base"], "from": m["path"]})
        if base is None:
            raise Retry(f"the base of the delta for {m['path']} is not here",
                        "the whole file is asked for from the peers that have it", need=m["hash"])
        src = os.open(base, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            try:
                digest, size, chunk_map = delta.rebuild(src, m["ops"], data, out, self.index.chunk_map(m["base"]))
            except ValueError as exc:
                raise Retry(f"the delta for {m['path']} does not fit its base ({exc})",
                            "the whole file is asked for from the peers that have it", need=m["hash"]) from exc
            finally:
                os.close(out)
        finally:
            os.close(src)
        if digest != m["hash"]:
            raise Retry(f"the delta for {m['path']} did not rebuild its content",
                        "the whole file is asked for from the peers that have it", need=m["hash"])
        with self.index.tx():
            self.index.set_chunk_map(digest, m["path"], size, chunk_map)
        return digest

    def _find_content(self, m: dict[str, Any]) -> Path | None:
        """A local file that holds the content ``m`` announces by hash (for renames)."""
        digest = m["hash"]
        candidates = []
        if "from" in m:
            candidates.append(m["from"])
        candidates += [e.path for e in self.index.find_by_hash(digest)]
        for rel in candidates:
            entry = self.index.get(rel)
            if entry and entry.live and entry.hash == digest:
                fresh = self.scanner.refresh(rel)
                if fresh and fresh.live and fresh.hash == digest:
                    return paths.join(self.root, rel)
        if self.archive.has(digest):
            return self.archive.object_path(digest)
        staged = self.staging / digest
        return staged if staged.exists() else None

    def _put(self, local: Entry | None, remote: Entry, m: dict[str, Any], data: bytes | Path | None,
             target: str, siblings: list[Entry], keep_local_as_conflict: bool) -> None:
        self._check_case(remote, local)
        if local is not None and local.live and local.kind == "dir":
            self._real_dirs.clear()
            try:
                os.rmdir(target)
            except OSError as exc:
                raise Retry(f"a folder with files stands where the file {remote.path} should be",
                            "move the folder's files away") from exc
        self._parent_ready(target, remote.path)
        # Content carried in the bundle is written now and put in place with the rest of the
        # bundle (see ``flush``). Anything else goes one at a time, after what is queued: a conflict
        # copy, or content found by hash, must see the disk as the index describes it.
        queue = isinstance(data, bytes) and not keep_local_as_conflict and m.get("content") != "delta"
        if not queue:
            self.flush()
        tmp = fsutil.temp_name(target)
        moved_from: Path | None = None
        queued = False
        try:
            try:
                digest, moved_from, st = self._materialize(m, data, tmp, durable=not queue)
            except OSError as exc:
                raise self._os_retry(remote.path, exc) from exc
            if digest != remote.hash:
                raise Retry(f"the content received for {remote.path} does not match its hash",
                            "it is fetched again")
            if st is None:
                if not fsutil.IS_WINDOWS:
                    os.chmod(tmp, remote.mode)
                os.utime(tmp, ns=(remote.mtime_ns, remote.mtime_ns))
                st = os.stat(tmp)
            new = Entry(remote.path, "file", False, remote.hash, remote.size, remote.mtime_ns, remote.mode,
                        st.st_ino, remote.vector, remote.modified_by, 0)
            if queue:
                assert isinstance(data, bytes)
                self._queue.append(_Queued(m, data, local, new, tmp, target, siblings, st.st_dev))
                self._queued_bytes += len(data)
                self._queued_keys.add(paths.case_key(remote.path))
                queued = True
                if len(self._queue) >= QUEUE_MAX or self._queued_bytes >= QUEUE_BYTES:
                    self.flush()
                return
            self.index.add_intent(new, siblings)
            try:
                copy = self._replace(local, new, tmp, target, keep_local_as_conflict)
            except Retry:
                with self.index.tx():
                    self.index.drop_intent(remote.path)
                raise
            fsutil.fsync_dir(os.path.dirname(target))
            with self.index.tx():
                self._record_put(new, siblings, copy)
        finally:
            if not queued:
                if moved_from is not None and os.path.exists(tmp):
                    os.replace(tmp, moved_from)  # not applied: the staged content goes back, never lost
                fsutil.remove(tmp)

    def _replace(self, local: Entry | None, new: Entry, tmp: str, target: str,
                 keep_local_as_conflict: bool) -> Entry | None:
        """Rename ``tmp`` over ``target``, keeping what was there (a conflict copy, or the versions
        archive); return the conflict copy's row, if one was made. Raise Retry if it cannot be done."""
        copy: Entry | None = None
        created = False
        old_on_disk = local is not None and local.live and local.kind == "file" and os.path.exists(target)
        if keep_local_as_conflict and local is not None and old_on_disk:
            copy = self._conflict_copy(local, target)
        elif old_on_disk and local is not None:
            try:
                created = self.archive.keep(Path(target), local.path, local.hash, local.size, local.mtime_ns,
                                            "overwritten")
            except OSError as exc:  # the old content cannot be kept (a full state disk): not overwritten
                raise self._os_retry(new.path, exc) from exc
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if old_on_disk and local is not None and copy is None:
                self.archive.undo(local.path, local.hash, created)
            if copy is not None:  # it shares the live file's inode: do not leave it behind
                paths.join(self.root, copy.path).unlink(missing_ok=True)
            raise self._os_retry(new.path, exc) from exc
        return copy

    def _record_put(self, new: Entry, siblings: list[Entry], copy: Entry | None) -> None:
        self.index.put(new)
        self.index.set_siblings(new.path, siblings)
        self.index.drop_intent(new.path)
        if copy is not None:
            self.index.put(copy)
            self.index.set_siblings(copy.path, [])  # superseded by the copy (see _conflict_copy)

    def flush(self) -> None:
        """Put the queued files in place: make their content durable at once, record the intents in one
        commit, rename them all, make the renames durable, and record the outcome in one commit.
        Crash safety is that of a single put (intents before renames), with two commits per batch.
        The rows of folders made and versions adopted meanwhile, and the marks of the bundles done,
        go in the last commit. A disk error that leaves some of them neither in place nor pending
        raises FlushFailed: the marks are dropped, and those bundles are read again."""
        queue, self._queue = self._queue, []
        rows, self._rows = self._rows, []
        marks, self._marks = self._marks, []
        self._queued_bytes = 0
        self._queued_keys.clear()
        try:
            self._put_in_place(queue, rows, marks)
        except OSError as exc:
            for q in queue:  # those not renamed yet; the disk may refuse this too: FlushFailed all the same
                with contextlib.suppress(OSError):
                    fsutil.remove(q.tmp)
            with contextlib.suppress(OSError):  # those renamed get their rows now, not at the next cycle
                self.recover_intents({q.new.path for q in queue})
            raise FlushFailed(exc) from exc

    def _put_in_place(self, queue: list[_Queued], rows: list[tuple[Entry, list[Entry]]],
                      marks: list[tuple[str, int]]) -> None:
        if not queue:
            if rows or marks:
                with self.index.tx():
                    self._record_rows(rows)
                    self._record_marks(marks)
            return
        try:
            fsutil.sync_files([q.tmp for q in queue], devices={q.device: q.tmp for q in queue})
            self.index.add_intents((q.new, q.siblings) for q in queue)
        except OSError as exc:
            for q in queue:
                fsutil.remove(q.tmp)
                self._keep_for_later(q.m, q.data, self._os_retry(q.new.path, exc))
            with self.index.tx():  # every queued file is now a pending operation: its bundle is done
                self._record_rows(rows)
                self._record_marks(marks)
            return
        done: list[_Queued] = []
        failed: list[tuple[_Queued, Retry]] = []
        for q in queue:
            try:
                self._replace(q.local, q.new, q.tmp, q.target, keep_local_as_conflict=False)
                done.append(q)
            except Retry as exc:
                fsutil.remove(q.tmp)
                failed.append((q, exc))
        fsutil.sync_folders({os.path.dirname(q.target) for q in done})
        with self.index.tx():
            self._record_rows(rows)
            self.index.put_many(q.new for q in done)
            for q in done:
                self.index.set_siblings(q.new.path, q.siblings)
                self._settle(q.new.path)
            self.index.drop_intents(q.new.path for q in queue)
            if not failed:
                self._record_marks(marks)
        if failed:
            for q, why in failed:
                self._keep_for_later(q.m, q.data, why)
            with self.index.tx():
                self._record_marks(marks)

    def _later(self, row: Entry, siblings: list[Entry]) -> None:
        """Record ``row`` with the batch's last commit."""
        self._rows.append((row, siblings))
        self._queued_keys.add(paths.case_key(row.path))  # a later record of this path flushes first
        if len(self._rows) >= QUEUE_MAX:
            self.flush()

    def _record_rows(self, rows: list[tuple[Entry, list[Entry]]]) -> None:
        for row, siblings in rows:
            self.index.put(row)
            self.index.set_siblings(row.path, siblings)
            self._settle(row.path)

    def _record_marks(self, marks: list[tuple[str, int]]) -> None:
        for author, seq in marks:
            self.index.set_applied(author, seq)
            self.index.forget_bad_bundle(author, seq)

    def _discard_queue(self) -> None:
        for q in self._queue:
            fsutil.remove(q.tmp)
        self._queue = []
        self._queued_bytes = 0
        self._rows = []  # their folders and mtimes are on disk: the next scan finds them
        self._marks = []  # their bundles are read again
        self._queued_keys.clear()

    def _conflict_copy(self, local: Entry, target: str) -> Entry:
        """Link the local (losing) content to its conflict name; return its new index row."""
        rel, there = conflict_copy_target(self.root, local.path, local.mtime_ns, local.modified_by or self.peer,
                                          local.hash)
        dest = paths.join(self.root, rel)
        if not there:
            fsutil.link_or_copy(target, dest)
        st = os.stat(dest)
        clock = self.index.next_clock()
        # Another peer that held the same losing content may have made this very copy, under the same
        # name, and this peer may know its version already: like any local change, the copy supersedes
        # what is known of the path. A fresh vector would stay concurrent with that version, and a later
        # deletion of the copy here would leave it on the peers that hold the other.
        known = self.index.get(rel)
        before = [known.vector] if known is not None else []
        before += [sibling.vector for sibling in self.index.siblings(rel)]
        return Entry(rel, "file", False, local.hash, local.size, st.st_mtime_ns, local.mode, st.st_ino,
                     vv.bump(vv.merge(*before), self.peer, clock), self.peer, clock)

    def _delete(self, local: Entry | None, remote: Entry, target: Path, siblings: list[Entry]) -> None:
        record = Entry(remote.path, remote.kind, True, remote.hash, remote.size, remote.mtime_ns, remote.mode, 0,
                       remote.vector, remote.modified_by, 0)
        if local is not None and local.live:
            self._real_dirs.clear()
            try:
                st = os.stat(target, follow_symlinks=False)
            except FileNotFoundError:
                st = None
            if st is not None and statmod.S_ISDIR(st.st_mode):
                try:
                    target.rmdir()
                except OSError:
                    pass  # files nobody else has live in it: the next scan sends the folder back
            elif st is not None and statmod.S_ISREG(st.st_mode):
                created = self.archive.keep(target, local.path, local.hash, local.size, local.mtime_ns, "deleted")
                try:
                    target.unlink()
                except OSError as exc:
                    self.archive.undo(local.path, local.hash, created)
                    raise self._os_retry(remote.path, exc) from exc
                fsutil.fsync_dir(target.parent)
        with self.index.tx():
            self.index.put(record)
            self.index.set_siblings(remote.path, siblings)

    def _mkdir(self, local: Entry | None, remote: Entry, target: Path, siblings: list[Entry]) -> None:
        if local is not None and local.live and local.kind == "file" and target.is_file():
            self.archive.keep(target, local.path, local.hash, local.size, local.mtime_ns, "replaced by a folder")
            target.unlink()
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_retry(remote.path, exc) from exc
        self._real_dirs.add(remote.path)
        row = Entry(remote.path, "dir", False, "", 0, 0, 0o755, 0, remote.vector, remote.modified_by, 0)
        self._later(row, siblings)

    # -- crash recovery -------------------------------------------------------

    def recover_intents(self, only: set[str] | None = None) -> int:
        """Finish the index side of applies a crash interrupted after their rename. With ``only``
        (the paths of a batch that just failed), just those, and a file that cannot be read now
        keeps its intent for the next cycle's recovery: the disk is failing, not the rename."""
        done = 0
        for intent, siblings in self.index.intents():
            if only is not None and intent.path not in only:
                continue
            target = paths.join(self.root, intent.path)
            finished = False
            try:
                st = os.stat(target, follow_symlinks=False)
                if statmod.S_ISREG(st.st_mode) and st.st_size == intent.size:
                    finished = fsutil.hash_file(target)[0] == intent.hash
            except OSError:
                if only is not None:
                    continue
            with self.index.tx():
                if finished:
                    intent.inode, intent.mtime_ns = st.st_ino, st.st_mtime_ns
                    self.index.put(intent)
                    self.index.set_siblings(intent.path, siblings)
                    done += 1
                self.index.drop_intent(intent.path)
        return done

    def clean_staging(self) -> None:
        """Remove staged content no pending operation or partial file needs any more."""
        keep = {s for _, _, s, *_ in self.index.pending()}
        keep |= {r[0] for r in self.index.db.execute("SELECT staged FROM partials")}
        if not self.staging.exists():
            return
        for f in self.staging.iterdir():
            if str(f) not in keep:
                if f.is_dir():
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    f.unlink(missing_ok=True)
