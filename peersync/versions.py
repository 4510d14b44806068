"""The versions archive: every file content peersync overwrites or deletes, kept in the state folder.

Objects are stored by content hash under ``versions/<store-id>/<h[:2]>/<h>``,
so keeping the same content twice costs nothing; the index's ``versions``
table says which path held which content when. Archiving links the old file
where the filesystem allows it (no copy), else copies it durably.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import fsutil
from .index import Index


class Archive:
    def __init__(self, folder: Path, index: Index) -> None:
        self.folder = folder
        self.index = index

    def object_path(self, digest: str) -> Path:
        return self.folder / digest[:2] / digest

    def keep(self, source: Path, rel: str, digest: str, size: int, mtime_ns: int, reason: str) -> bool:
        """Keep ``source``'s current content; return True if a new object was made for it."""
        obj = self.object_path(digest)
        created = False
        if not obj.exists():
            obj.parent.mkdir(parents=True, exist_ok=True)
            tmp = fsutil.temp_name(obj)
            try:
                fsutil.link_or_copy(source, tmp)
                os.replace(tmp, obj)
                created = True
            finally:
                tmp.unlink(missing_ok=True)
        self.index.add_version(rel, digest, size, mtime_ns, reason)
        return created

    def keep_bytes(self, data: bytes, rel: str, digest: str, size: int, mtime_ns: int, reason: str) -> None:
        """Keep content that is in memory (a version that never was on this disk)."""
        obj = self.object_path(digest)
        if not obj.exists():
            obj.parent.mkdir(parents=True, exist_ok=True)
            fsutil.atomic_write(obj, data)
        self.index.add_version(rel, digest, size, mtime_ns, reason)

    def undo(self, rel: str, digest: str, created: bool) -> None:
        """Take back a ``keep`` whose overwrite did not happen (the file stays as it was).

        A linked object shares the live file's inode, so it must not outlive
        the failed overwrite: a later in-place edit would change it.
        """
        if created:
            self.object_path(digest).unlink(missing_ok=True)
        self.index.db.execute(
            "DELETE FROM versions WHERE id=(SELECT MAX(id) FROM versions WHERE path=? AND hash=?)", (rel, digest)
        )

    def has(self, digest: str) -> bool:
        return self.object_path(digest).exists()
