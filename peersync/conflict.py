"""Concurrent changes: which version wins, and the name a losing one is kept under.

A peer keeps, per path, every version no other version it knows supersedes
(see ``siblings`` in :mod:`index`). Which of them is on disk is decided by a
total order over versions, the same on every peer, so peers that know the
same versions show the same one whatever order the versions came in:
a modification beats a deletion; between two modifications the newer mtime
wins; on equal mtimes the smaller peer id wins, then the smaller content
hash, then the smaller version vector.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

from . import fsutil, paths
from . import vector as vv
from .index import Entry

MAX_NAME_BYTES = 255
CONFLICT_RE = re.compile(r"\.sync-conflict-\d{8}-\d{6}-[A-Z2-7]{7}(?:-\d+)?(?=\.|$)")


def rank(e: Entry) -> tuple[bool, int, str, str, str]:
    """Smaller ranks first: the version among concurrent ones that is kept under the path's name."""
    return (e.deleted, -e.mtime_ns, e.modified_by, e.hash, vv.dumps(e.vector))


def winner(versions: list[Entry]) -> Entry:
    return min(versions, key=rank)


def remote_wins(local: Entry, remote: Entry) -> bool:
    return rank(remote) < rank(local)


def conflict_name(path: str, mtime_ns: int, peer: str, n: int = 0) -> str:
    """``dir/name.sync-conflict-YYYYMMDD-HHMMSS-<peer>.ext`` for the losing version of ``path``."""
    folder, _, name = path.rpartition("/")
    stamp = datetime.datetime.fromtimestamp(mtime_ns // 1_000_000_000, datetime.timezone.utc).strftime(
        "%Y%m%d-%H%M%S")
    stem, dot, ext = name.rpartition(".")
    if not stem:  # no extension, or a dotfile such as ".profile"
        stem, dot, ext = name, "", ""
    if len(ext) > 16:  # not really an extension: keep the whole name as the stem
        stem, dot, ext = name, "", ""
    suffix = f".sync-conflict-{stamp}-{peer[:7]}" + (f"-{n}" if n else "")
    room = MAX_NAME_BYTES - len((suffix + dot + ext).encode())
    while len(stem.encode()) > room:  # a long name is shortened, never made invalid
        stem = stem[:-1]
    new = f"{stem.rstrip(' .')}{suffix}{dot}{ext}"
    return f"{folder}/{new}" if folder else new


def conflict_copy_target(root: Path, path: str, mtime_ns: int, peer: str, digest: str) -> tuple[str, bool]:
    """Where the losing version (content ``digest``) of ``path`` is kept: the first conflict name that is
    free or already holds that content; and whether it already does (another peer's copy of it)."""
    n = 0
    while True:
        rel = conflict_name(path, mtime_ns, peer, n)
        dest = paths.join(root, rel)
        if not dest.exists():
            return rel, False
        if fsutil.hash_file(dest)[0] == digest:
            return rel, True
        n += 1


def is_conflict_copy(path: str) -> bool:
    return bool(CONFLICT_RE.search(path.rpartition("/")[2]))
