"""Small filesystem primitives: atomic writes, durable renames, private files, streamed hashing.

Platform differences live here and only here: directory fsync (POSIX only),
owner-only permissions (chmod on POSIX; on Windows the per-user profile
folders already carry owner-only ACLs), and how a locked file shows up.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import itertools
import os
import secrets
import stat
import sys
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

CHUNK = 1024 * 1024
TEMP_PREFIX = ".peersync-tmp-"
IS_WINDOWS = sys.platform == "win32"


def fsync_dir(path: str | Path) -> None:
    """Make a rename or create inside ``path`` durable (a no-op where unsupported)."""
    if IS_WINDOWS:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _syncfs(path: str | Path) -> bool:
    """Linux: write back every dirty file of the filesystem holding ``path`` at once (syncfs(2))."""
    if _libc_syncfs is None:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc_syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)
    return True


def _linux_libc_function(name: str) -> Any:
    """A function of the C library on Linux, or None elsewhere (or when it has no such function)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


_libc_syncfs = _linux_libc_function("syncfs")
_sync_file_range = _linux_libc_function("sync_file_range")
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a just-written range of a file to disk without waiting for it (Linux's
    sync_file_range), so that the fsync that makes the file durable finds little left to do and the
    writer is not held up meanwhile. Elsewhere nothing: that fsync writes it all. Never a guarantee
    of durability by itself; errors are the fsync's to report."""
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def _devices(paths: Iterable[str | Path]) -> dict[int, str | Path]:
    """One path per filesystem among ``paths``."""
    out: dict[int, str | Path] = {}
    for p in paths:
        out.setdefault(os.stat(p).st_dev, p)
    return out


def sync_files(files: Sequence[str | Path], devices: Mapping[int, str | Path] | None = None) -> None:
    """Make the content of many just-written files durable: one syncfs per filesystem on Linux, where
    an fsync per file would cost a journal commit each; an fsync per file elsewhere. ``devices``:
    one of the files per filesystem they are on (st_dev), when the caller has them from a stat."""
    if not files:
        return
    if all(_syncfs(p) for p in (devices or _devices(set(files))).values()):
        return
    for p in files:
        with open(p, "rb+") as f:
            os.fsync(f.fileno())


def sync_folders(folders: Collection[str | Path]) -> None:
    """Make renames into many folders durable (see ``sync_files``)."""
    if IS_WINDOWS or not folders:
        return
    if all(_syncfs(p) for p in _devices(folders).values()):
        return
    for folder in folders:
        fsync_dir(folder)


# Temporary names: a token (random, and the process id) drawn at import and again in a forked child,
# and a counter. Unique within a process by the counter, across processes by the token. A name drawn
# from the OS's random source each time cost a system call for every file a batch writes.
_temp_count = itertools.count()
_temp_token = ""


def _new_temp_token() -> None:
    global _temp_token
    _temp_token = f"{secrets.token_hex(4)}{os.getpid():x}"


_new_temp_token()
if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_new_temp_token)


P = TypeVar("P", str, Path)


def temp_name(target: P) -> P:
    """A temporary name beside ``target``, of the same type (``str`` on the hot paths: no Path to parse)."""
    if isinstance(target, Path):
        return target.with_name(f"{TEMP_PREFIX}{_temp_token}-{next(_temp_count):x}-{target.name[:60]}")
    folder, name = os.path.split(target)
    return os.path.join(folder, f"{TEMP_PREFIX}{_temp_token}-{next(_temp_count):x}-{name[:60]}")


def remove(path: str | Path) -> None:
    """Remove a file if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def atomic_write(target: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` to ``target`` so a reader sees the old or the new file, never a part."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def make_private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if not IS_WINDOWS:
        os.chmod(path, 0o700)


def write_private(path: Path, data: bytes) -> None:
    """Write a key or secret readable by its owner only."""
    atomic_write(path, data, mode=0o600)


def is_private(path: Path) -> bool:
    if IS_WINDOWS:
        return True
    return stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def hash_stream(f: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := f.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)


def read_head(path: str | Path, limit: int) -> tuple[bytes, os.stat_result]:
    """Up to ``limit`` bytes from the start of a file, in one read, and the file's stat after it: for
    small files whose size is known, asked with one byte to spare so that a file that grew meanwhile
    shows it. No buffered file object, no second lookup of the path. The last part of the path is
    not followed if it is a link (OSError ELOOP where the OS can say so: a file the caller saw was
    replaced by a link), and a FIFO put there meanwhile reads as empty instead of blocking."""
    fd = os.open(path, os.O_RDONLY | NO_FOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        return os.read(fd, limit), os.fstat(fd)
    finally:
        os.close(fd)


def hash_file(path: str | Path) -> tuple[str, int]:
    """SHA-256 hex digest and size of a file, read in bounded chunks."""
    with open(path, "rb") as f:
        return hash_stream(f)


def read_chunks(path: Path, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        left = length
        while left is None or left > 0:
            chunk = f.read(CHUNK if left is None else min(CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


def copy_durable(src: str | Path, dst: str | Path) -> str:
    """Copy ``src`` to a new file ``dst`` (fsync'd); return the content hash."""
    h = hashlib.sha256()
    with open(src, "rb") as fi, open(dst, "xb") as fo:
        while chunk := fi.read(CHUNK):
            h.update(chunk)
            fo.write(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    return h.hexdigest()


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Give ``dst`` the content of ``src``: a hard link where possible, else a durable copy."""
    try:
        os.link(src, dst)
    except OSError:
        copy_durable(src, dst)


def is_locked_error(exc: OSError) -> bool:
    """True when another program holds the file (Windows sharing violation, EBUSY...)."""
    if getattr(exc, "winerror", None) in (32, 33):  # ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION
        return True
    return exc.errno in (errno.EBUSY, errno.ETXTBSY, errno.EAGAIN) or (
        IS_WINDOWS and exc.errno == errno.EACCES
    )


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT) or getattr(exc, "winerror", None) == 112
