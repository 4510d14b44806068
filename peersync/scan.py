"""Scanner: walk a store against its index, hash only what changed, and guard against mass deletion.

A file is unchanged while its (size, mtime_ns, inode, exec bit) match the
index. Otherwise it is hashed, with a stat before and after: a file that
changed while being read is still being written and waits for a later scan.
A changed file gets a new version vector from this peer's clock and a
``local_seq`` that puts it in the outgoing queue.

A full scan walks the whole store. A partial scan (:meth:`Scanner.scan_paths`)
looks only at the paths a trusted watcher reported, with the same rules;
it decides deletions among those paths only, so a file it did not look at
is never taken for a deleted one.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import marshal
import os
import stat as statmod
import sys
import time
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pathspec

from . import __version__, delta, fsutil, paths
from . import vector as vv
from .ignore import IGNORE_FILE, Ignore
from .index import Entry, Index
from .stop import StopCheck, never

Progress = Callable[[str, int, int], None]  # (stage, items, bytes)
StatRow = tuple[str, bool, int, int, int, int]  # an index row as a scan compares it: Index.stat_map
# A folder entry as its digest covers it: (name, S_IFDIR) or (name, mode, size, mtime_ns, inode).
Listed = tuple[str, int] | tuple[str, int, int, int, int]

# Where a name is found whatever its letter case (Windows, macOS), a partial scan checks a
# reported name against its folder's listing: "quote.txt" renamed "Quote.txt" is a new name.
CASE_INSENSITIVE = fsutil.IS_WINDOWS or sys.platform == "darwin"

# Changed files up to KEEP_FILE_BYTES are read whole when hashed, and their content kept for the
# publish of the same cycle, up to KEEP_BYTES in all (memory stays bounded however many there are).
KEEP_FILE_BYTES = 256 * 1024
KEEP_BYTES = 32 * 1024 * 1024

# A full scan keeps, per folder, a digest of its listing (names and the stat fields it compares)
# from the last time it found every entry of the folder as the index's rows say (Index.folder_sums;
# Index.put drops it when a row of the folder changes). A folder whose listing has that digest
# again is unchanged and its rows are not read: a scan that finds nothing reads no row. Digests
# are kept only under the rules that decided what a folder holds: a change of the ignore rules,
# of this format, of peersync's or pathspec's version or of Python's marshal format drops them all.
SUMS_FORMAT = 1


def _no_progress(stage: str, items: int, nbytes: int) -> None:
    pass


class NeedFullScan(Exception):
    """A partial scan met something only a full scan handles (a changed ignore file, a name to normalise)."""


@dataclasses.dataclass
class ScanResult:
    files: int = 0
    changed: int = 0
    hashed_bytes: int = 0
    deleted: int = 0
    deferred_deletes: int = 0
    held_deletes: int = 0
    live_files: int = 0
    stopped: bool = False  # a stop was asked: the walk ended early and no deletion was decided
    moved_aside: int = 0  # missing files whose inode lives on under an ignored name (an editor saving)
    # A partial scan: which paths it looked at (the others keep what earlier scans found).
    scope: Callable[[str], bool] | None = None
    unstable: list[str] = dataclasses.field(default_factory=list)
    problems: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (path, message, hint)


def file_mode(st: os.stat_result) -> int:
    """Only the executable bit syncs; Windows has none, so it keeps what the index says."""
    return 0o755 if st.st_mode & 0o100 else 0o644


class Scanner:
    def __init__(self, root: Path, index: Index, ignore: Ignore, peer: str, settings: dict[str, Any],
                 progress: Progress = _no_progress, missing_since: dict[str, float] | None = None,
                 delete_delay: float = 0.0, stop: StopCheck = never) -> None:
        self.root = root
        self.stop = stop  # asked before each entry of a walk: a stopped walk decides no deletion
        # When each missing path was first seen missing: a deletion is sent only once the path
        # has stayed missing for ``delete_delay`` seconds (kept across cycles by the service).
        self.missing_since = missing_since if missing_since is not None else {}
        self.delete_delay = delete_delay
        self.index = index
        self.ignore = ignore
        self.peer = peer
        self.settings = settings
        self.progress = progress
        # The content of small files this scan found changed, by hash, for the publish that follows:
        # sent as it was hashed, without reading the file again. At most KEEP_BYTES in all.
        self.kept: dict[str, bytes] = {}
        self._kept_bytes = 0

    # -- one path ----------------------------------------------------------------

    def _new_version(self, base: Entry | None, **fields: Any) -> Entry:
        """Record a local change. It supersedes every version of the path this peer knows: the
        one on disk and the concurrent ones that lost to it (whose content is in conflict copies)."""
        clock = self.index.next_clock()
        path = fields.pop("path")
        siblings = self.index.siblings(path)
        if siblings:
            self.index.set_siblings(path, [])
        entry = Entry(
            path=path,
            vector=vv.bump(vv.merge(base.vector if base else {}, *(s.vector for s in siblings)), self.peer, clock),
            modified_by=self.peer,
            local_seq=clock,
            **fields,
        )
        self.index.put(entry)
        return entry

    def _examine_file(self, rel: str, abspath: str | Path, st: os.stat_result, result: ScanResult,
                      entry: Entry | None) -> None:
        """Hash the file at ``rel`` (stat ``st``) and record it if it changed; ``entry`` is its row."""
        mode = entry.mode if (fsutil.IS_WINDOWS and entry) else file_mode(st)
        chunk_map = b""
        try:
            data: bytes | None = None
            after: os.stat_result | None = None
            if 0 < int(self.settings.get("delta_min_bytes", 0)) <= st.st_size:  # the base of a later delta
                digest, size, chunk_map = delta.hash_and_map(abspath)
            elif st.st_size <= KEEP_FILE_BYTES and self._kept_bytes + st.st_size <= KEEP_BYTES:
                # One read of a byte more than its size: one that changed meanwhile differs in size
                # (or in its stat, below) and is looked at again on the next scan. The stat after the
                # read is of the file read (one replaced meanwhile has another inode: the next scan
                # looks at it).
                try:
                    data, after = fsutil.read_head(abspath, st.st_size + 1)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                    result.unstable.append(rel)  # replaced by a link since the walk: looked at again
                    return
                digest, size = hashlib.sha256(data).hexdigest(), len(data)
                if not fsutil.NO_FOLLOW:  # (Windows) the stat by descriptor would be of a link's target
                    after = None
            else:
                digest, size = fsutil.hash_file(abspath)
            if after is None:
                after = os.stat(abspath, follow_symlinks=False)
        except FileNotFoundError:
            return  # gone while we looked: the next scan sees the deletion
        except OSError as exc:
            if fsutil.is_locked_error(exc) or isinstance(exc, PermissionError):
                result.problems.append((rel, "the file is locked or unreadable; it is retried every cycle",
                                        "close the program that holds it"))
                return
            raise
        result.hashed_bytes += size
        if ((after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or size != st.st_size
                or (st.st_ino and (after.st_ino, after.st_dev) != (st.st_ino, st.st_dev))):
            result.unstable.append(rel)  # still being written
            return
        if chunk_map and self.index.chunk_map(digest) is None:
            self.index.set_chunk_map(digest, rel, size, chunk_map)
        if entry and entry.live and entry.kind == "file" and entry.hash == digest and entry.mode == mode:
            # Touched, not changed: nothing to send. The row keeps the version's mtime, which every
            # peer holding this version shares and conflict decisions compare; only the inode is
            # refreshed, so a touched file is hashed again on later scans.
            entry.size, entry.inode = st.st_size, st.st_ino
            self.index.put(entry)
            return
        self._new_version(entry, path=rel, kind="file", hash=digest, size=size, mtime_ns=st.st_mtime_ns,
                          mode=mode, inode=st.st_ino)
        result.changed += 1
        if data is not None and digest not in self.kept:
            self.kept[digest] = data
            self._kept_bytes += size

    def _examine_dir(self, rel: str) -> None:
        entry = self.index.get(rel)
        if entry is None or entry.deleted or entry.kind != "dir":
            self._new_version(entry, path=rel, kind="dir", mode=0o755)

    def _tombstone(self, entry: Entry) -> None:
        self._new_version(entry, path=entry.path, kind=entry.kind, deleted=True, hash=entry.hash,
                          size=entry.size, mtime_ns=entry.mtime_ns, mode=entry.mode)

    def refresh(self, rel: str, links_checked: bool = False, abspath: str | Path | None = None) -> Entry | None:
        """Bring one path's index row up to date with the disk (the check before an apply).
        ``links_checked``: the caller has just found no link among the folders of ``rel``;
        ``abspath``: ``rel`` joined to the root, if the caller has it."""
        if abspath is None:
            abspath = paths.join(self.root, rel)
        entry = self.index.get(rel)
        if not links_checked and not paths.inside_without_links(self.root, rel):
            return entry  # under a symbolic link: outside the store, never looked at
        try:
            st = os.stat(abspath, follow_symlinks=False)
        except FileNotFoundError:
            if not (entry and entry.live):
                return entry
            self._tombstone(entry)
            return self.index.get(rel)
        except NotADirectoryError:
            return entry
        if statmod.S_ISDIR(st.st_mode):
            self._examine_dir(rel)
        elif statmod.S_ISREG(st.st_mode):
            if not (entry and entry.live and entry.kind == "file"
                    and (entry.size, entry.mtime_ns, entry.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)):
                self._examine_file(rel, abspath, st, ScanResult(), entry)
        return self.index.get(rel)

    # -- the whole store ------------------------------------------------------

    def scan(self, allow_deletes: bool = False) -> ScanResult:
        result = ScanResult()
        look = _Look()
        rows: list[dict[str, StatRow]] = []

        def known() -> dict[str, StatRow]:  # read once, and only if some folder is not as its digest says
            if not rows:
                rows.append(self.index.stat_map())
            return rows[0]

        with self.index.tx():
            sums = self._folder_sums()
            self._walk(os.fspath(self.root), "", known, look, result, rename_nfc=True, sums=sums)
            if result.stopped:
                return result  # what was scanned is kept; files not walked are not deleted ones
            if not rows and self.index.count_live() == look.unread:
                # Every folder is as its rows say, and no live row is anywhere else: nothing is gone.
                self._deletions({}, set(), [], allow_deletes, result, live_files=result.files)
                return result
            self._check_clean(known(), look, result)
            self._deletions(known(), look.seen, look.skipped, allow_deletes, result, look.ignored_inodes)
        return result

    def _check_clean(self, known: Mapping[str, StatRow], look: _Look, result: ScanResult) -> None:
        """The rows are read after all: compare the folders found as their digests say too, entry by
        entry as the walk does, so that a row written by something that did not drop its folder's
        digest (an older peersync) is found; whatever differs is examined. Their entries are seen."""
        any_mode = fsutil.IS_WINDOWS
        for folder, prefix, packed, unsynced in look.clean:
            for item in marshal.loads(packed):
                name = item[0]
                if name in unsynced:
                    continue
                rel = prefix + name
                look.seen.add(rel)
                row = known.get(rel)
                if len(item) == 2:  # a folder
                    if row is None or row[1] or row[0] != "dir":
                        self._examine_dir(rel)
                    continue
                if (row is not None and row[0] == "file" and not row[1] and row[2:5] == item[2:5]
                        and (any_mode or row[5] == (0o755 if item[1] & 0o100 else 0o644))):
                    continue
                try:
                    st = os.lstat(os.path.join(folder, name))
                except OSError:
                    continue  # gone meanwhile: the next scan sees it
                if statmod.S_ISREG(st.st_mode):
                    self._examine_file(rel, os.path.join(folder, name), st, result,
                                       None if row is None else self.index.get(rel))

    def _folder_sums(self) -> dict[str, tuple[bytes, frozenset[str]]]:
        """The folder digests the index holds, if they were taken under the rules in force now."""
        versions = f"{SUMS_FORMAT} {__version__} {pathspec.__version__} {sys.version_info[:2]} {fsutil.TEMP_PREFIX}"
        rules = hashlib.sha256(f"{versions}\n{self.ignore.rules}".encode("utf-8", "surrogatepass")).hexdigest()
        if self.index.get_meta("folder_sums_rules") != rules:
            self.index.drop_folder_sums()
            self.index.set_meta("folder_sums_rules", rules)
            return {}
        return self.index.folder_sums()

    def _walk(self, top: str, top_prefix: str, known: Callable[[], Mapping[str, StatRow]], look: _Look,
              result: ScanResult, rename_nfc: bool,
              sums: dict[str, tuple[bytes, frozenset[str]]] | None = None) -> None:
        """Walk the folder ``top`` (the store's root, or ``top_prefix`` in it) whole: the one walk of every scan.

        ``known()`` gives the index's rows of at least every path under ``top``. What is seen,
        skipped and ignored is recorded into ``look``. A name not in NFC is renamed to it
        where that is safe when ``rename_nfc`` (a full scan), else only a full scan can
        handle it: NeedFullScan.

        ``sums`` (a full scan): each folder's digest and the names in it that never sync
        (index.folder_sums). A folder whose listing has its digest is as its rows say: nothing
        in it is looked at further, its rows are not read, and it goes into ``look.clean``. A
        folder found exactly as its rows say, with nothing to report, rename or remove in it,
        has its digest recorded.
        """
        seen, skipped_dirs = look.seen, look.skipped
        # Inodes living on under ignored names: an editor saving renames the original to a
        # temporary name ("Quote.docx" -> "~WRL0001.tmp") for a moment. That is no deletion.
        ignored_inodes = look.ignored_inodes
        # This loop is the whole cost of a scan that finds nothing, so it runs on plain strings and
        # one stat per entry, relative to an open folder where the OS allows it (no lookup of the
        # whole path per file). One regex search tells that no ignore rule can match (the full
        # rules run only when one might), and each distinct name is validated once: a path is
        # valid when its folder is, its last name is, and it is not too long (validate checks no more).
        ignored = self.ignore.ignored
        shortcut = self.ignore.shortcut.search if self.ignore.shortcut is not None else None
        valid_names: dict[str, bool] = {}
        any_mode = fsutil.IS_WINDOWS  # Windows has no exec bit: the index's mode stands
        stop, temp_prefix, mark_seen = self.stop, fsutil.TEMP_PREFIX, seen.add
        known_row: Callable[[str], StatRow | None] | None = None
        by_fd = os.scandir in os.supports_fd and os.stat in os.supports_dir_fd
        no_follow = getattr(os, "O_NOFOLLOW", 0)
        stack: list[tuple[str, str]] = [(top, top_prefix)]
        while stack:
            folder, prefix = stack.pop()
            dir_fd = -1
            try:
                if by_fd:  # the root may be a link the user made; no folder under it is followed
                    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | (no_follow if prefix else 0))
                with os.scandir(folder if dir_fd < 0 else dir_fd) as listing:
                    entries = list(listing)
            except OSError as exc:
                if dir_fd >= 0:
                    os.close(dir_fd)
                skipped_dirs.append(prefix)
                result.problems.append((prefix or ".", f"the folder cannot be read ({exc.strerror})",
                                        "check its permissions"))
                continue
            try:
                digest = None
                if sums is not None:
                    if stop():
                        result.stopped = True
                        break
                    listed = _listing(folder, entries, dir_fd)
                    if listed is not None:
                        packed = marshal.dumps(listed)
                        digest = hashlib.blake2b(packed, digest_size=16).digest()
                        kept = sums.get(prefix)
                        if kept is not None and kept[0] == digest:
                            self._clean_folder(folder, prefix, listed, packed, kept[1], stack, look, result)
                            continue
                if known_row is None:
                    known_row = known().get
                plain = digest is not None  # all this folder holds is as its rows say, or never synced
                unsynced: list[str] = []  # names here that never sync (ignored, links, devices)
                counted = 0  # files found here and not yet reported to progress
                for de in entries:
                    if stop():
                        result.stopped = True
                        stack.clear()
                        break
                    name = de.name
                    renamed = False
                    if not name.isascii():  # ASCII names are valid UTF-8 and NFC already
                        if not rename_nfc:
                            self._check_nfc(prefix, name)
                        else:
                            nfc = self._nfc_name(Path(folder), name, result)
                            if nfc is None:
                                plain = False
                                continue
                            renamed = nfc != name  # renamed to NFC just now: not this entry any more
                            name = nfc
                            plain = plain and not renamed
                    rel = prefix + name
                    try:
                        if dir_fd < 0:
                            st = os.lstat(os.path.join(folder, name))
                        elif renamed:
                            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                        else:
                            st = de.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        plain = False
                        continue  # gone while we looked
                    except OSError as exc:
                        # Listed but not readable (in a folder without search permission, say): not
                        # gone. Neither it nor anything the index holds under it is deleted.
                        plain = False
                        mark_seen(rel)
                        skipped_dirs.append(rel + "/")
                        result.problems.append((rel, f"the path cannot be read ({exc.strerror})",
                                                "check its permissions"))
                        continue
                    kind = st.st_mode & 0o170000  # statmod.S_IFMT, without a call
                    is_dir = kind == statmod.S_IFDIR
                    if name.startswith(temp_prefix):
                        self._remove_stale_temp(Path(folder, name))
                        plain = False
                        continue
                    if ((shortcut is None or shortcut(rel + "/" if is_dir else rel) is not None)
                            and ignored(rel, is_dir)):
                        if not is_dir:
                            ignored_inodes.add(st.st_ino)
                        unsynced.append(name)
                        continue
                    if kind == statmod.S_IFLNK:
                        unsynced.append(name)
                        continue  # symlinks are never followed nor synced
                    valid = valid_names.get(name)
                    if valid is None:
                        valid = valid_names[name] = paths.is_valid(name)
                    if not valid or len(rel) > paths.MAX_PATH_CHARS:
                        result.problems.append((rel, "this name cannot be synced to every system (reserved "
                                                     "or invalid on Windows, or too long)", "rename it"))
                        if is_dir:
                            skipped_dirs.append(rel + "/")
                        plain = False
                        continue
                    mark_seen(rel)
                    old = known_row(rel)
                    if is_dir:
                        if old is None or old[1] or old[0] != "dir":
                            self._examine_dir(rel)
                            plain = False
                        stack.append((os.path.join(folder, name), rel + "/"))
                        continue
                    if kind != statmod.S_IFREG:
                        unsynced.append(name)
                        continue  # sockets, fifos, devices
                    result.files += 1
                    counted += 1
                    if (old is not None and old[0] == "file" and not old[1] and old[2] == st.st_size
                            and old[3] == st.st_mtime_ns and old[4] == st.st_ino
                            and (any_mode or old[5] == (0o755 if st.st_mode & 0o100 else 0o644))):  # file_mode
                        continue
                    plain = False
                    self.progress("scan", counted, 0)
                    counted = 0
                    self._examine_file(rel, os.path.join(folder, name), st, result,
                                       None if old is None else self.index.get(rel))  # no row: no query
                    self.progress("hash", 1, st.st_size)
                if counted:
                    self.progress("scan", counted, 0)
                if plain and digest is not None and not result.stopped:
                    # A later write to a row of this folder in the same scan (a deletion) drops it again.
                    self.index.set_folder_sum(prefix, digest, unsynced)
            finally:
                if dir_fd >= 0:
                    os.close(dir_fd)

    def _clean_folder(self, folder: str, prefix: str, listing: list[Listed], packed: bytes,
                      unsynced: frozenset[str], stack: list[tuple[str, str]], look: _Look, result: ScanResult) -> None:
        """A folder whose listing has its digest: what it holds is counted and its folders walked.
        The listing is kept ``packed`` (marshal): a tenth of the memory of its tuples."""
        files = synced = 0
        for item in listing:
            name = item[0]
            if name in unsynced:
                if len(item) > 2:  # an ignored file whose inode may be a moved-aside original's
                    look.ignored_inodes.add(item[4])
                continue
            synced += 1
            if len(item) == 2:
                stack.append((os.path.join(folder, name), prefix + name + "/"))
            else:
                files += 1
        look.clean.append((folder, prefix, packed, unsynced))
        look.unread += synced
        result.files += files
        if files:
            self.progress("scan", files, 0)

    def count_files(self) -> int:
        """How many files a full scan would look at, by a walk that reads no file (for a progress total)."""
        count = 0
        stack: list[tuple[str, str]] = [(str(self.root), "")]
        while stack and not self.stop():
            folder, prefix = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for de in entries:
                rel = prefix + de.name
                try:
                    is_dir = de.is_dir(follow_symlinks=False)
                    is_file = de.is_file(follow_symlinks=False)
                except OSError:
                    continue
                if de.name.startswith(fsutil.TEMP_PREFIX) or self.ignore.ignored(rel, is_dir):
                    continue
                if is_dir:
                    stack.append((de.path, rel + "/"))
                elif is_file:
                    count += 1
        return count

    def _deletions(self, known: dict[str, StatRow], seen: set[str],
                   skipped_dirs: list[str], allow_deletes: bool, result: ScanResult,
                   ignored_inodes: set[int] = frozenset(),  # type: ignore[assignment]
                   in_scope: Callable[[str], bool] | None = None, live_files: int | None = None) -> None:
        """Decide which of the ``known`` paths not ``seen`` are deleted.

        A partial scan passes the rows of the paths it looked at as ``known``, says which
        paths those are with ``in_scope``, and gives the store's ``live_files``: held
        deletions and missing paths outside its scope stay as they are.
        """
        gone = {  # rows indexed, not unpacked: this runs over every path of the store
            p for p, row in known.items()
            if not row[1] and p not in seen and not any(p.startswith(s) for s in skipped_dirs)
            and not self.ignore.ignored(p, row[0] == "dir")
        }
        moved_aside = {p for p in gone if known[p][0] == "file" and known[p][4] in ignored_inodes}
        result.deferred_deletes += len(moved_aside)
        result.moved_aside += len(moved_aside)
        gone -= moved_aside
        result.live_files = live_files if live_files is not None else sum(
            1 for row in known.values() if row[0] == "file" and not row[1])
        # A held deletion stays held, cycle after cycle, until it is confirmed or the files are back:
        # files added meanwhile must not dilute the share and release it by themselves.
        was_held = set(json.loads(self.index.get_meta("held_deletes") or "[]"))
        held = was_held & gone
        if in_scope is not None:
            held |= {p for p in was_held if not in_scope(p)}  # not looked at: still held
        if allow_deletes:
            held = set()
        else:
            fresh = gone - held
            fresh_files = sum(1 for p in fresh if known[p][0] == "file")
            ratio = float(self.settings["mass_delete_ratio"])
            if fresh_files >= int(self.settings["mass_delete_min"]) and fresh_files > ratio * result.live_files:
                held |= fresh
        self.index.set_meta("held_deletes", json.dumps(sorted(held)))
        result.held_deletes = sum(1 for p in held if (known[p][0] if p in known else self._kind(p)) == "file")
        now = time.monotonic()
        for p in list(self.missing_since):
            if p not in gone and (in_scope is None or in_scope(p)):
                del self.missing_since[p]  # back (an editor's save finished): no deletion
        for p in sorted(gone - held, reverse=True):
            if self.delete_delay and now - self.missing_since.setdefault(p, now) < self.delete_delay:
                result.deferred_deletes += 1
                continue
            self.missing_since.pop(p, None)
            entry = self.index.get(p)
            if entry is not None:
                self._tombstone(entry)
                result.deleted += 1

    def _kind(self, rel: str) -> str:
        entry = self.index.get(rel)
        return entry.kind if entry else "file"

    # -- the paths a watcher reported -------------------------------------------

    def scan_paths(self, dirty: Mapping[str, bool], allow_deletes: bool = False) -> ScanResult:
        """Scan only ``dirty``: store-relative paths a watcher reported, each with ``deep``.

        A reported path that is a folder is walked whole when ``deep`` (created,
        moved or deleted: what it holds raised no events of its own), otherwise
        only noted as a folder. The folders on the way to a path are noted too.
        A path gone from the disk takes along everything the index holds under
        it. Then deletions are decided among the paths looked at only, by the
        rules of a full scan: ignore patterns, editors' rename-aside, the delete
        delay, and the mass-delete guard against the whole store.

        Raises NeedFullScan for what only a full scan handles: a changed
        ``.peersyncignore``, a name to normalise to NFC or not valid UTF-8.
        """
        result = ScanResult()
        look = _Look()
        result.scope = look.in_scope
        live_files = self.index.count_live_files()
        with self.index.tx():
            for rel in sorted(dirty):  # a folder before what it holds
                if self.stop():
                    result.stopped = True
                    return result
                if rel and not look.in_scope(rel):  # not inside a folder already walked whole
                    self._look_at(rel, dirty[rel], look, result)
            if result.stopped:
                return result  # in the middle of a folder's walk: what it did not reach is not deleted
            known = self.index.stat_rows(look.exact, look.trees)
            self._deletions(known, look.seen, look.skipped, allow_deletes, result, look.ignored_inodes,
                            in_scope=look.in_scope, live_files=live_files)
        return result

    def _look_at(self, rel: str, deep: bool, look: _Look, result: ScanResult) -> None:
        """Look at one reported path and the folders on the way to it."""
        if rel == IGNORE_FILE:
            raise NeedFullScan(f"{IGNORE_FILE} changed")
        parts = rel.split("/")
        folder, prefix = self.root, ""
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            here = prefix + name
            self._check_nfc(prefix, name)
            path = folder / name
            try:
                st = os.stat(path, follow_symlinks=False)
                if CASE_INSENSITIVE and name not in look.listing(folder):
                    raise FileNotFoundError(here)  # only another letter case of it is there
            except (FileNotFoundError, NotADirectoryError):
                look.gone(here)  # and so is everything the index holds under it
                return
            except OSError as exc:
                result.problems.append((here, f"the path cannot be read ({exc.strerror})", "check its permissions"))
                look.skipped.append(here + "/")
                look.exact.add(here)
                look.seen.add(here)  # unreadable is not deleted
                return
            is_dir = statmod.S_ISDIR(st.st_mode)
            if name.startswith(fsutil.TEMP_PREFIX):
                if last:
                    self._remove_stale_temp(path)
                return
            if self.ignore.ignored(here, is_dir):
                if not is_dir:
                    look.ignored_inodes.add(st.st_ino)
                return
            if statmod.S_ISLNK(st.st_mode):
                look.gone(here)  # never followed: nothing is seen through it, as in a full scan
                return
            if not paths.is_valid(here):
                result.problems.append((here, "this name cannot be synced to every system (reserved or "
                                              "invalid on Windows, or too long)", "rename it"))
                look.exact.add(here)
                look.skipped.append(here + "/")
                return
            look.exact.add(here)
            look.seen.add(here)
            if is_dir:
                self._note_dir(here)
                if last and deep:
                    look.trees.add(here)
                    self._walk(os.fspath(path), here + "/", functools.partial(self.index.stat_rows, set(), {here}),
                               look, result, rename_nfc=False)
                folder, prefix = path, here + "/"
                continue
            if not last:  # a file stands where a folder of the path was: nothing is under it any more
                look.gone(here)
                look.seen.add(here)
            if statmod.S_ISREG(st.st_mode):
                self._look_at_file(here, path, st, result)
            return

    def _note_dir(self, rel: str) -> None:
        entry = self.index.get(rel)
        if entry is None or entry.deleted or entry.kind != "dir":
            self._examine_dir(rel)

    def _look_at_file(self, rel: str, path: Path, st: os.stat_result, result: ScanResult) -> None:
        """A regular file a partial scan looks at: hashed unless its stat matches the index."""
        result.files += 1
        self.progress("scan", 1, 0)
        old = self.index.get(rel)
        mode_same = fsutil.IS_WINDOWS or (old is not None and old.mode == file_mode(st))
        if (old is not None and old.kind == "file" and old.live and mode_same
                and (old.size, old.mtime_ns, old.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)):
            return
        self._examine_file(rel, path, st, result, old)
        self.progress("hash", 1, st.st_size)

    @staticmethod
    def _check_nfc(prefix: str, name: str) -> None:
        """A partial scan cannot rename: a name not valid UTF-8 or not in NFC is for a full scan."""
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise NeedFullScan(f"{prefix}{name!r} is not valid UTF-8") from None
        if unicodedata.normalize("NFC", name) != name:
            raise NeedFullScan(f"{prefix}{name} is to be renamed to its NFC form")

    def _nfc_name(self, folder: Path, name: str, result: ScanResult) -> str | None:
        """The NFC form of a name on disk, renaming the file to it where that is safe."""
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            result.problems.append((name.encode("utf-8", "backslashreplace").decode(),
                                    "this name is not valid UTF-8 and cannot sync", "rename it"))
            return None
        nfc = unicodedata.normalize("NFC", name)
        if nfc == name:
            return name
        try:
            if not os.path.lexists(folder / nfc):
                os.rename(folder / name, folder / nfc)
                return nfc
        except OSError:
            pass
        result.problems.append((name, "two names here differ only in Unicode normalisation", "rename one of them"))
        return None

    @staticmethod
    def _remove_stale_temp(path: Path) -> None:
        """peersync's temporary files are its own: one left by a crash is removed."""
        try:
            if path.is_file():
                path.unlink()
        except OSError:
            pass


@dataclasses.dataclass
class _Look:
    """What a partial scan has looked at: paths, folders walked whole (or gone), and what it found."""

    exact: set[str] = dataclasses.field(default_factory=set)
    trees: set[str] = dataclasses.field(default_factory=set)
    seen: set[str] = dataclasses.field(default_factory=set)
    skipped: list[str] = dataclasses.field(default_factory=list)
    ignored_inodes: set[int] = dataclasses.field(default_factory=set)
    listings: dict[Path, set[str]] = dataclasses.field(default_factory=dict)
    # A full scan: folders found as their digests say (folder, prefix, marshalled listing, names that
    # never sync), and how many synced paths those hold: their rows were not read.
    clean: list[tuple[str, str, bytes, frozenset[str]]] = dataclasses.field(default_factory=list)
    unread: int = 0

    def listing(self, folder: Path) -> set[str]:
        if folder not in self.listings:
            self.listings[folder] = set(os.listdir(folder))
        return self.listings[folder]

    def gone(self, rel: str) -> None:
        self.exact.add(rel)
        self.trees.add(rel)

    def in_scope(self, rel: str) -> bool:
        rel = rel.rstrip("/")
        if rel in self.exact:
            return True
        parts = rel.split("/")
        return any("/".join(parts[:i]) in self.trees for i in range(1, len(parts)))


def _listing(folder: str, entries: list[os.DirEntry[str]], dir_fd: int) -> list[Listed] | None:
    """A folder's listing as its digest covers it: each entry's name and the stat fields a scan
    compares (a folder by name only: what it holds has a digest of its own). None if an entry is gone."""
    items: list[Listed] = []
    append = items.append
    try:
        for de in entries:
            # As the walk stats an entry: the DirEntry's cached lstat, or (no dir_fd: Windows, whose
            # DirEntry has no inode number) an lstat of the path.
            st = de.stat(follow_symlinks=False) if dir_fd >= 0 else os.lstat(os.path.join(folder, de.name))
            mode = st.st_mode
            if mode & 0o170000 == statmod.S_IFDIR:
                append((de.name, statmod.S_IFDIR))
            else:
                append((de.name, mode, st.st_size, st.st_mtime_ns, st.st_ino))
    except OSError:
        return None
    return items
