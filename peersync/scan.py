"""Scanner: walk a store against its index, hash only what changed, and guard against mass deletion.

A file is unchanged while its (size, mtime_ns, inode, exec bit) match the
index. Otherwise it is hashed, with a stat before and after: a file that
changed while being read is still being written and waits for a later scan.
A changed file gets a new version vector from this peer's clock and a
``local_seq`` that puts it in the outgoing queue.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat as statmod
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import fsutil, paths
from . import vector as vv
from .ignore import Ignore
from .index import Entry, Index

Progress = Callable[[str, int, int], None]  # (stage, items, bytes)


def _no_progress(stage: str, items: int, nbytes: int) -> None:
    pass


@dataclasses.dataclass
class ScanResult:
    files: int = 0
    changed: int = 0
    hashed_bytes: int = 0
    deleted: int = 0
    deferred_deletes: int = 0
    held_deletes: int = 0
    live_files: int = 0
    unstable: list[str] = dataclasses.field(default_factory=list)
    problems: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # (path, message, hint)


def file_mode(st: os.stat_result) -> int:
    """Only the executable bit syncs; Windows has none, so it keeps what the index says."""
    return 0o755 if st.st_mode & 0o100 else 0o644


class Scanner:
    def __init__(self, root: Path, index: Index, ignore: Ignore, peer: str, settings: dict[str, Any],
                 progress: Progress = _no_progress, missing_since: dict[str, float] | None = None,
                 delete_delay: float = 0.0) -> None:
        self.root = root
        # When each missing path was first seen missing: a deletion is sent only once the path
        # has stayed missing for ``delete_delay`` seconds (kept across cycles by the service).
        self.missing_since = missing_since if missing_since is not None else {}
        self.delete_delay = delete_delay
        self.index = index
        self.ignore = ignore
        self.peer = peer
        self.settings = settings
        self.progress = progress

    # -- one path ----------------------------------------------------------------

    def _new_version(self, base: Entry | None, **fields: Any) -> Entry:
        clock = self.index.next_clock()
        entry = Entry(
            path=fields.pop("path"),
            vector=vv.bump(base.vector if base else {}, self.peer, clock),
            modified_by=self.peer,
            local_seq=clock,
            **fields,
        )
        self.index.put(entry)
        return entry

    def _examine_file(self, rel: str, abspath: Path, st: os.stat_result, result: ScanResult) -> None:
        entry = self.index.get(rel)
        mode = entry.mode if (fsutil.IS_WINDOWS and entry) else file_mode(st)
        try:
            digest, size = fsutil.hash_file(abspath)
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
        if (after.st_size, after.st_mtime_ns) != (st.st_size, st.st_mtime_ns) or size != st.st_size:
            result.unstable.append(rel)  # still being written
            return
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

    def _examine_dir(self, rel: str) -> None:
        entry = self.index.get(rel)
        if entry is None or entry.deleted or entry.kind != "dir":
            self._new_version(entry, path=rel, kind="dir", mode=0o755)

    def _tombstone(self, entry: Entry) -> None:
        self._new_version(entry, path=entry.path, kind=entry.kind, deleted=True, hash=entry.hash,
                          size=entry.size, mtime_ns=entry.mtime_ns, mode=entry.mode)

    def refresh(self, rel: str) -> Entry | None:
        """Bring one path's index row up to date with the disk (the check before an apply)."""
        abspath = paths.join(self.root, rel)
        entry = self.index.get(rel)
        if not paths.inside_without_links(self.root, rel):
            return entry  # under a symbolic link: outside the store, never looked at
        try:
            st = os.stat(abspath, follow_symlinks=False)
        except FileNotFoundError:
            if entry and entry.live:
                self._tombstone(entry)
            return self.index.get(rel)
        except NotADirectoryError:
            return entry
        if statmod.S_ISDIR(st.st_mode):
            self._examine_dir(rel)
        elif statmod.S_ISREG(st.st_mode):
            if not (entry and entry.live and entry.kind == "file"
                    and (entry.size, entry.mtime_ns, entry.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)):
                self._examine_file(rel, abspath, st, ScanResult())
        return self.index.get(rel)

    # -- the whole store ------------------------------------------------------

    def scan(self, allow_deletes: bool = False) -> ScanResult:
        result = ScanResult()
        known = self.index.stat_map()
        seen: set[str] = set()
        skipped_dirs: list[str] = []  # unreadable: nothing under them counts as deleted
        # Inodes living on under ignored names: an editor saving renames the original to a
        # temporary name ("Quote.docx" -> "~WRL0001.tmp") for a moment. That is no deletion.
        ignored_inodes: set[int] = set()
        # This loop is the whole cost of a scan that finds nothing, so it runs on plain strings and
        # one stat per entry, relative to an open folder where the OS allows it (no lookup of the
        # whole path per file). One regex search tells that no ignore rule can match (the full
        # rules run only when one might), and each distinct name is validated once: a path is
        # valid when its folder is, its last name is, and it is not too long (validate checks no more).
        ignored = self.ignore.ignored
        shortcut = self.ignore.shortcut.search if self.ignore.shortcut is not None else None
        valid_names: dict[str, bool] = {}
        any_mode = fsutil.IS_WINDOWS  # Windows has no exec bit: the index's mode stands
        by_fd = os.scandir in os.supports_fd and os.stat in os.supports_dir_fd
        no_follow = getattr(os, "O_NOFOLLOW", 0)
        root = os.fspath(self.root)
        stack: list[tuple[str, str]] = [(root, "")]
        with self.index.tx():
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
                    counted = 0  # files found here and not yet reported to progress
                    for de in entries:
                        name = de.name
                        renamed = False
                        if not name.isascii():  # ASCII names are valid UTF-8 and NFC already
                            nfc = self._nfc_name(Path(folder), name, result)
                            if nfc is None:
                                continue
                            renamed = nfc != name  # renamed to NFC just now: not this entry any more
                            name = nfc
                        rel = prefix + name
                        try:
                            if dir_fd < 0:
                                st = os.lstat(os.path.join(folder, name))
                            elif renamed:
                                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                            else:
                                st = de.stat(follow_symlinks=False)
                        except OSError:
                            continue  # gone while we looked
                        kind = st.st_mode & 0o170000  # statmod.S_IFMT, without a call
                        is_dir = kind == statmod.S_IFDIR
                        if name.startswith(fsutil.TEMP_PREFIX):
                            self._remove_stale_temp(Path(folder, name))
                            continue
                        if ((shortcut is None or shortcut(rel + "/" if is_dir else rel) is not None)
                                and ignored(rel, is_dir)):
                            if not is_dir:
                                ignored_inodes.add(st.st_ino)
                            continue
                        if kind == statmod.S_IFLNK:
                            continue  # symlinks are never followed nor synced
                        valid = valid_names.get(name)
                        if valid is None:
                            valid = valid_names[name] = paths.is_valid(name)
                        if not valid or len(rel) > paths.MAX_PATH_CHARS:
                            result.problems.append((rel, "this name cannot be synced to every system (reserved "
                                                         "or invalid on Windows, or too long)", "rename it"))
                            if is_dir:
                                skipped_dirs.append(rel + "/")
                            continue
                        seen.add(rel)
                        old = known.get(rel)
                        if is_dir:
                            if old is None or old[1] or old[0] != "dir":
                                self._examine_dir(rel)
                            stack.append((os.path.join(folder, name), rel + "/"))
                            continue
                        if kind != statmod.S_IFREG:
                            continue  # sockets, fifos, devices
                        result.files += 1
                        counted += 1
                        if (old is not None and old[0] == "file" and not old[1] and old[2] == st.st_size
                                and old[3] == st.st_mtime_ns and old[4] == st.st_ino
                                and (any_mode or old[5] == file_mode(st))):
                            continue
                        self.progress("scan", counted, 0)
                        counted = 0
                        self._examine_file(rel, Path(folder, name), st, result)
                        self.progress("hash", 1, st.st_size)
                    if counted:
                        self.progress("scan", counted, 0)
                finally:
                    if dir_fd >= 0:
                        os.close(dir_fd)
            self._deletions(known, seen, skipped_dirs, allow_deletes, result, ignored_inodes)
        return result

    def _deletions(self, known: dict[str, tuple[str, bool, int, int, int, int]], seen: set[str],
                   skipped_dirs: list[str], allow_deletes: bool, result: ScanResult,
                   ignored_inodes: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        gone = {
            p for p, (kind, deleted, *_rest) in known.items()
            if not deleted and p not in seen and not any(p.startswith(s) for s in skipped_dirs)
            and not self.ignore.ignored(p, kind == "dir")
        }
        moved_aside = {p for p in gone if known[p][0] == "file" and known[p][4] in ignored_inodes}
        result.deferred_deletes += len(moved_aside)
        gone -= moved_aside
        result.live_files = sum(1 for kind, deleted, *_ in known.values() if kind == "file" and not deleted)
        # A held deletion stays held, cycle after cycle, until it is confirmed or the files are back:
        # files added meanwhile must not dilute the share and release it by themselves.
        held = set(json.loads(self.index.get_meta("held_deletes") or "[]")) & gone
        if allow_deletes:
            held = set()
        else:
            fresh = gone - held
            fresh_files = sum(1 for p in fresh if known[p][0] == "file")
            ratio = float(self.settings["mass_delete_ratio"])
            if fresh_files >= int(self.settings["mass_delete_min"]) and fresh_files > ratio * result.live_files:
                held |= fresh
        self.index.set_meta("held_deletes", json.dumps(sorted(held)))
        result.held_deletes = sum(1 for p in held if known[p][0] == "file")
        now = time.monotonic()
        for p in list(self.missing_since):
            if p not in gone:
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
