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

import hashlib
import logging
import os
import re
import shutil
import stat as statmod
from pathlib import Path
from typing import Any

from . import fsutil, paths
from . import vector as vv
from .bundle import Record
from .conflict import conflict_name, remote_wins
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

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


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
            if m.get("content") not in ("inline", "parts", "ref"):
                raise ValueError("bad content kind")
            if m.get("mode") not in (0o644, 0o755):
                raise ValueError("bad mode")
            if m["content"] == "inline" and len(rec.data) != m.get("size"):
                raise ValueError("inline content does not match its size")
            if "from" in m:
                m["from"] = paths.validate(m["from"])
        if op == "delete" and m.get("kind") not in ("file", "dir"):
            raise ValueError("bad kind")
    except PathError as exc:
        raise BadBundle(f"bundle holds an {exc.message}") from exc
    except (ValueError, TypeError) as exc:
        raise BadBundle(f"bundle holds a malformed {op} record ({exc})") from exc
    return m


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


class Applier:
    def __init__(self, root: Path, index: Index, scanner: Scanner, archive: Archive, ignore: Ignore,
                 peer: str, staging: Path) -> None:
        self.root = root
        self.index = index
        self.scanner = scanner
        self.archive = archive
        self.ignore = ignore
        self.peer = peer
        self.staging = staging
        self.applied_ops = 0
        self.conflicts = 0

    # -- records from a bundle ------------------------------------------------

    def apply_records(self, author: str, records: list[Record], stop: StopCheck = never) -> None:
        for rec in records:
            if stop():
                raise Stopped  # between two records: the bundle is read again, and what is applied stays
            m = rec.meta
            if m["op"] == "part":
                self._part(author, m, rec.data)
            elif m["op"] == "put" and m["content"] == "parts":
                self._start_parts(author, m, rec.data)
            else:
                self._run(m, rec.data if m["op"] == "put" and m["content"] == "inline" else None)

    def _run(self, m: dict[str, Any], data: bytes | Path | None) -> None:
        """Apply one operation; on Retry keep it pending, on Skip report it."""
        path = m["path"]
        if self.ignore.ignored(path, m["op"] == "mkdir" or m.get("kind") == "dir"):
            return
        try:
            self.apply(remote_entry(m), m, data)
        except Retry as exc:
            staged = self._stage(m, data)
            with self.index.tx():
                self.index.add_pending(path, m, staged, exc.message)
                self.index.record_error(f"apply:{path}", "apply", path, exc.message, exc.hint)
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
        if self.index.has_pending_or_error(path):  # usually not: spare a commit (and its fsync)
            with self.index.tx():
                self.index.drop_pending(path)
                self.index.clear_error(f"apply:{path}")

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
            local = self.index.get(path)
            if local and vv.compare(meta["vector"], local.vector) in (vv.Order.BEFORE, vv.Order.EQUAL):
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

    # -- deciding -------------------------------------------------------------

    def apply(self, remote: Entry, m: dict[str, Any], data: bytes | Path | None) -> None:
        if not paths.inside_without_links(self.root, remote.path):
            raise Skip(f"{remote.path} lies under a symbolic link; peersync never reads or writes through one",
                       "replace the link with a real folder")
        try:
            local = self.scanner.refresh(remote.path)
        except PathError:
            raise
        except OSError as exc:
            raise Retry(f"cannot read {remote.path} before applying a change ({exc.strerror})") from exc
        if local is None:
            self._enact(None, remote, m, data)
            return
        order = vv.compare(remote.vector, local.vector)
        if order in (vv.Order.EQUAL, vv.Order.BEFORE):
            return
        if order is vv.Order.AFTER:
            self._enact(local, remote, m, data)
            return
        # Concurrent changes.
        same = local.deleted == remote.deleted and local.kind == remote.kind and (
            local.deleted or local.kind == "dir" or local.hash == remote.hash
        )
        wins = remote_wins(local, remote)
        # Every peer that sees both sides ends with the same row: the winner's content under the
        # merge of both vectors, so a later change on either side dominates it everywhere.
        merged = vv.merge(local.vector, remote.vector)
        if same or not wins:
            # Same content: nothing to write. Local side wins: the peer that holds the losing
            # side keeps it as a conflict copy.
            with self.index.tx():
                local.vector = merged
                if same and wins:
                    local.modified_by = remote.modified_by
                self.index.put(local)
            return
        keep = local.live and local.kind == "file"
        self.conflicts += keep
        remote.vector = merged
        self._enact(local, remote, m, data, keep_local_as_conflict=keep)

    # -- doing ----------------------------------------------------------------

    def _enact(self, local: Entry | None, remote: Entry, m: dict[str, Any], data: bytes | Path | None,
               keep_local_as_conflict: bool = False) -> None:
        if not paths.inside_without_links(self.root, remote.path):
            raise Skip(f"{remote.path} lies under a symbolic link; peersync never writes through one",
                       "replace the link with a real folder")
        target = paths.join(self.root, remote.path)
        if remote.deleted:
            self._delete(local, remote, target)
        elif remote.kind == "dir":
            self._mkdir(local, remote, target)
        else:
            self._put(local, remote, m, data, target, keep_local_as_conflict)
        self.applied_ops += 1

    def _check_case(self, remote: Entry, local: Entry | None) -> None:
        if local is not None and local.live:
            return
        clash = self.index.case_clash(remote.path)
        if clash:
            raise Skip(f"{remote.path} and {clash} differ only in letter case, which a Windows or macOS "
                       f"disk cannot hold apart", "rename one of them on the peer that made it")

    def _parent_ready(self, target: Path, rel: str) -> None:
        parent = target.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:
            raise Retry(f"a file stands where the folder of {rel} should be",
                        "rename or move that file") from exc
        except NotADirectoryError as exc:
            raise Retry(f"a file stands where the folder of {rel} should be",
                        "rename or move that file") from exc
        except OSError as exc:
            raise self._os_retry(rel, exc) from exc

    def _os_retry(self, rel: str, exc: OSError) -> Retry:
        if fsutil.is_disk_full(exc):
            return Retry(f"the disk is full while writing {rel}", "free some space; the change is retried")
        if fsutil.is_locked_error(exc) or isinstance(exc, PermissionError):
            return Retry(f"{rel} is locked or not writable", "close the program that holds it; it is retried")
        return Retry(f"cannot write {rel} ({exc.strerror or exc})", "it is retried every cycle")

    def _materialize(self, m: dict[str, Any], data: bytes | Path | None, tmp: Path) -> tuple[str, Path | None]:
        """Write the operation's content to ``tmp``; return its hash and, if it was moved, where from."""
        if isinstance(data, bytes):
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return hashlib.sha256(data).hexdigest(), None
        if isinstance(data, Path):
            try:
                os.rename(data, tmp)  # staged content: moved, and given back if the apply fails
            except OSError:
                return fsutil.copy_durable(data, tmp), None
            digest, _ = fsutil.hash_file(tmp)
            return digest, data
        source = self._find_content(m)
        if source is None:
            raise Retry(f"the content of {m['path']} is not here yet (it was renamed elsewhere)",
                        "it is asked for from its author and arrives in a later bundle")
        # A copy, not a link: two live paths must never share one inode.
        return fsutil.copy_durable(source, tmp), None

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
             target: Path, keep_local_as_conflict: bool) -> None:
        self._check_case(remote, local)
        if local is not None and local.live and local.kind == "dir":
            try:
                target.rmdir()
            except OSError as exc:
                raise Retry(f"a folder with files stands where the file {remote.path} should be",
                            "move the folder's files away") from exc
        self._parent_ready(target, remote.path)
        tmp = fsutil.temp_name(target)
        moved_from: Path | None = None
        try:
            try:
                digest, moved_from = self._materialize(m, data, tmp)
            except OSError as exc:
                raise self._os_retry(remote.path, exc) from exc
            if digest != remote.hash:
                raise Retry(f"the content received for {remote.path} does not match its hash",
                            "it is fetched again")
            if not fsutil.IS_WINDOWS:
                os.chmod(tmp, remote.mode)
            os.utime(tmp, ns=(remote.mtime_ns, remote.mtime_ns))
            st = os.stat(tmp)
            new = Entry(remote.path, "file", False, remote.hash, remote.size, remote.mtime_ns, remote.mode,
                        st.st_ino, remote.vector, remote.modified_by, 0)
            self.index.add_intent(new)
            copy: Entry | None = None
            created = False
            old_on_disk = local is not None and local.live and local.kind == "file" and target.exists()
            if keep_local_as_conflict and local is not None and old_on_disk:
                copy = self._conflict_copy(local, target)
            elif old_on_disk and local is not None:
                created = self.archive.keep(target, local.path, local.hash, local.size, local.mtime_ns, "overwritten")
            try:
                os.replace(tmp, target)
            except OSError as exc:
                if old_on_disk and local is not None and copy is None:
                    self.archive.undo(local.path, local.hash, created)
                if copy is not None:  # it shares the live file's inode: do not leave it behind
                    paths.join(self.root, copy.path).unlink(missing_ok=True)
                with self.index.tx():
                    self.index.drop_intent(remote.path)
                raise self._os_retry(remote.path, exc) from exc
            fsutil.fsync_dir(target.parent)
            with self.index.tx():
                self.index.put(new)
                self.index.drop_intent(remote.path)
                if copy is not None:
                    self.index.put(copy)
        finally:
            if moved_from is not None and tmp.exists():
                os.replace(tmp, moved_from)  # not applied: the staged content goes back, never lost
            tmp.unlink(missing_ok=True)

    def _conflict_copy(self, local: Entry, target: Path) -> Entry:
        """Link the local (losing) content to its conflict name; return its new index row."""
        n = 0
        while True:
            rel = conflict_name(local.path, local.mtime_ns, local.modified_by or self.peer, n)
            dest = paths.join(self.root, rel)
            if not dest.exists():
                fsutil.link_or_copy(target, dest)
                break
            digest, _ = fsutil.hash_file(dest)
            if digest == local.hash:
                break
            n += 1
        st = os.stat(dest)
        clock = self.index.next_clock()
        return Entry(rel, "file", False, local.hash, local.size, st.st_mtime_ns, local.mode, st.st_ino,
                     vv.bump({}, self.peer, clock), self.peer, clock)

    def _delete(self, local: Entry | None, remote: Entry, target: Path) -> None:
        record = Entry(remote.path, remote.kind, True, remote.hash, remote.size, remote.mtime_ns, remote.mode, 0,
                       remote.vector, remote.modified_by, 0)
        if local is not None and local.live:
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

    def _mkdir(self, local: Entry | None, remote: Entry, target: Path) -> None:
        if local is not None and local.live and local.kind == "file" and target.is_file():
            self.archive.keep(target, local.path, local.hash, local.size, local.mtime_ns, "replaced by a folder")
            target.unlink()
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._os_retry(remote.path, exc) from exc
        with self.index.tx():
            self.index.put(Entry(remote.path, "dir", False, "", 0, 0, 0o755, 0, remote.vector, remote.modified_by, 0))

    # -- crash recovery -------------------------------------------------------

    def recover_intents(self) -> int:
        """Finish the index side of applies a crash interrupted after their rename."""
        done = 0
        for intent in self.index.intents():
            target = paths.join(self.root, intent.path)
            finished = False
            try:
                st = os.stat(target, follow_symlinks=False)
                if statmod.S_ISREG(st.st_mode) and st.st_size == intent.size:
                    finished = fsutil.hash_file(target)[0] == intent.hash
            except OSError:
                pass
            with self.index.tx():
                if finished:
                    intent.inode, intent.mtime_ns = st.st_ino, st.st_mtime_ns
                    self.index.put(intent)
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
