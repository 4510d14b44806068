"""Deltas of large files: content-defined chunk maps, the operations that rebuild a file from a base, and the rebuild.

A chunk map cuts a file at content-defined boundaries (FastCDC), so an insertion moves
only the chunks around it; each chunk is recorded by its length and a short digest. A
sender that has the map of the content its receivers hold (the base) and the map of the
new content describes the new content as ``ops``: ``[offset, length]`` copies that many
bytes of the base from ``offset``, ``[length]`` takes the next ``length`` literal bytes,
which travel as the record's data. The receiver checks the result against the whole
file's hash, so a wrong digest match costs a full copy, never a wrong file.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import mmap
import os
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import fsutil

AVG_CHUNK = 64 * 1024  # min a quarter, max 8x: about 1.2 MB sent for 1 MiB changed
MAX_OPS = 1000  # more than this (changes scattered all over) and the file goes whole
_ENTRY = struct.Struct("<I8s")  # chunk length, first 8 bytes of its SHA-1
Ops = list[list[int]]


def _cuts(view: memoryview) -> Any:
    """FastCDC's chunks of ``view`` (its compiled chunker), imported on first use: the package's
    ``__init__`` loads its command line's dependencies, which a cycle with no large file need not."""
    from fastcdc.fastcdc_cy import fastcdc_cy

    return fastcdc_cy(view, avg_size=AVG_CHUNK)


def _digest(view: memoryview) -> bytes:
    return hashlib.sha1(view, usedforsecurity=False).digest()[:8]


def hash_and_map(path: str | Path, window: int = 0) -> tuple[str, int, bytes]:
    """SHA-256 hex digest, size and packed chunk map of a file, reading it once in windows so memory stays
    two windows whatever the file's size. A second thread runs the SHA-256 of each window while this one
    finds the cuts; then both digest the window's chunks, from either end (hashlib and fastcdc let go of
    the interpreter lock).

    Chunks are cut window by window: fastcdc decides a cut at ``p`` from ``p .. p + MAX_CHUNK`` only
    (see ``derive_map``), so a cut whose chunk starts at least MAX_CHUNK before the end of what was read
    is final; the rest is carried into the next window, at the start of its buffer (two buffers take
    turns, so a window is read in place and never copied). The map is that of the whole file."""
    window = window or _WINDOW
    if window <= MAX_CHUNK:
        raise ValueError("a window must hold more than the largest chunk")
    whole = hashlib.sha256()
    out = bytearray()
    size = 0
    carried = 0  # bytes at the start of the buffer, carried from the previous window
    buffers = [bytearray(window), bytearray(window)]
    with open(path, "rb", buffering=0) as f, ThreadPoolExecutor(1) as helper:
        hashing = None
        for turn in itertools.count():
            buf = memoryview(buffers[turn % 2])
            try:
                got = _read_into(f, buf[carried:])
                last = carried + got < window  # a short read: the end of the file
                if hashing is not None:
                    hashing.result()  # the SHA-256 goes in order; and the other buffer is free again
                if got:
                    hashing = helper.submit(whole.update, buf[carried:carried + got])
                    size += got
                view = buf[:carried + got]
                cuts: list[tuple[int, int]] = []
                if view:
                    for c in _cuts(view):
                        if not last and c.offset + MAX_CHUNK > len(view):
                            break  # not final yet: it may end elsewhere once more is read
                        cuts.append((c.offset, c.length))
                half = len(cuts) // 2
                theirs = helper.submit(_digests, view, cuts[half:])  # after this window's SHA-256
                out += b"".join(_digests(view, cuts[:half])) + b"".join(theirs.result())
                start = cuts[-1][0] + cuts[-1][1] if cuts else 0
                if last:
                    break
                carried = len(view) - start
                memoryview(buffers[(turn + 1) % 2])[:carried] = view[start:]
            finally:
                buf.release()
        if hashing is not None:
            hashing.result()
    return whole.hexdigest(), size, bytes(out)


def _digests(view: memoryview, cuts: list[tuple[int, int]]) -> list[bytes]:
    return [_ENTRY.pack(length, _digest(view[offset:offset + length])) for offset, length in cuts]


def _read_into(f: io.RawIOBase, buf: memoryview) -> int:
    """Fill ``buf`` from ``f`` up to its end or the end of the file; how many bytes were read."""
    done = 0
    while done < len(buf) and (n := f.readinto(buf[done:])):
        done += n
    return done


def chunks(packed: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(offset, length, digest) of each chunk of a packed map."""
    offset = 0
    for length, digest in _ENTRY.iter_unpack(packed[:len(packed) - len(packed) % _ENTRY.size]):
        yield offset, length, digest
        offset += length


def plan(base_map: bytes, new_map: bytes) -> tuple[Ops, list[tuple[int, int]]]:
    """The ops that build the new content from the base, and the (offset, length) ranges of the
    new content that travel as literals, in order."""
    where: dict[tuple[int, bytes], int] = {}
    for offset, length, digest in chunks(base_map):
        where.setdefault((length, digest), offset)
    ops: Ops = []
    literals: list[tuple[int, int]] = []
    for offset, length, digest in chunks(new_map):
        found = where.get((length, digest))
        if found is not None:
            last = ops[-1] if ops else None
            if last is not None and len(last) == 2 and last[0] + last[1] == found:
                last[1] += length
            else:
                ops.append([found, length])
        elif ops and len(ops[-1]) == 1:
            ops[-1][0] += length
            literals[-1] = (literals[-1][0], literals[-1][1] + length)
        else:
            ops.append([length])
            literals.append((offset, length))
    return ops, literals


def literal_bytes(path: Path, literals: list[tuple[int, int]]) -> bytes:
    out = bytearray()
    with open(path, "rb") as f:
        for offset, length in literals:
            f.seek(offset)
            piece = f.read(length)
            if len(piece) != length:
                raise ValueError("changed since scanned")
            out += piece
    return bytes(out)


def check_ops(ops: object, base_size: int, size: int, data_len: int) -> None:
    """Raise ValueError unless ``ops`` is a well-formed op list for these sizes (hostile input)."""
    if not isinstance(ops, list) or len(ops) > MAX_OPS:
        raise ValueError("bad delta ops")
    total = literal = 0
    for op in ops:
        if not isinstance(op, list) or len(op) not in (1, 2):
            raise ValueError("bad delta op")
        for n in op:
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**63:
                raise ValueError("bad delta op")
        if op[-1] == 0:
            raise ValueError("empty delta op")
        if len(op) == 2 and op[0] + op[1] > base_size:
            raise ValueError("delta copies past the end of its base")
        if len(op) == 1:
            literal += op[0]
        total += op[-1]
    if literal != data_len:
        raise ValueError("delta literals do not match the data")
    if total != size:
        raise ValueError("delta does not add up to the size")


MIN_CHUNK, MAX_CHUNK = AVG_CHUNK // 4, AVG_CHUNK * 8  # fastcdc's defaults for AVG_CHUNK
_SEGMENT = 32 * 1024 * 1024  # hashed and written back per step while rebuilding
_WINDOW = 16 * 1024 * 1024  # read at a time when hashing and chunking a file


def _copy(src: int, dst: int, offset: int, length: int, at: int) -> None:
    """Copy ``length`` bytes of ``src`` from ``offset`` to ``dst`` at ``at``: in the kernel where it can,
    else through a buffer."""
    while length:
        n = 0
        if hasattr(os, "copy_file_range"):
            try:
                n = os.copy_file_range(src, dst, length, offset, at)
            except OSError:
                n = 0  # another filesystem, or none of the kernel's: read and write instead
        if not n:
            piece = os.pread(src, min(length, 1024 * 1024), offset)
            if not piece:
                raise ValueError("the base is shorter than the delta says")
            n = os.pwrite(dst, piece, at)
        offset += n
        at += n
        length -= n


def rebuild(base: int, ops: Ops, data: bytes, out: int, base_map: bytes | None) -> tuple[str, int, bytes]:
    """Write the content ``ops`` describe to the empty file ``out`` (opened for reading and writing) from
    the file ``base`` and the literal ``data``, fsync it; return its SHA-256 hex digest, size and chunk
    map. The digest is of what was written, read back from the page cache segment by segment while
    later segments are written; the map is derived from ``base_map`` (see ``derive_map``). A base
    shorter than a copy asks for raises ValueError."""
    size = sum(op[-1] for op in ops)
    base_size = os.fstat(base).st_size
    if any(len(op) == 2 and op[0] + op[1] > base_size for op in ops):
        raise ValueError("the base is shorter than the delta says")
    if size == 0:
        os.fsync(out)
        return hashlib.sha256(b"").hexdigest(), 0, b""
    os.ftruncate(out, size)
    whole = hashlib.sha256()
    with mmap.mmap(out, size, access=mmap.ACCESS_READ) as mm, ThreadPoolExecutor(1) as hasher:
        view = memoryview(mm)
        try:
            pending = []
            at = pos = hashed = 0

            def hash_segment(start: int, end: int) -> None:
                whole.update(view[start:end])
                _release(mm, start, end)  # hashed: its pages need not count in this process's memory

            def written(n: int) -> None:
                nonlocal at, hashed
                at += n
                if at - hashed >= _SEGMENT:  # a segment is whole: hash it, and start writing it to disk
                    fsutil.start_writeback(out, hashed, at - hashed)
                    pending.append(hasher.submit(hash_segment, hashed, at))
                    hashed = at

            for op in ops:
                if len(op) == 1:
                    piece = data[pos:pos + op[0]]
                    pos += op[0]
                    done = 0
                    while done < len(piece):
                        done += os.pwrite(out, piece[done:], at + done)
                    written(len(piece))
                    continue
                offset, left = op
                while left:
                    n = min(left, _SEGMENT - (at - hashed))
                    _copy(base, out, offset, n, at)
                    offset += n
                    left -= n
                    written(n)
            if hashed < at:
                pending.append(hasher.submit(hash_segment, hashed, at))
            if base_map is not None and sum(n for _, n, _ in chunks(base_map)) == base_size:
                chunk_map = derive_map(base_map, base_size, ops, view)
            else:  # no map of this base (or not of this size): chunk the whole content
                chunk_map = map_of(view)
            for f in pending:
                f.result()
            os.fsync(out)
            return whole.hexdigest(), size, chunk_map
        finally:
            view.release()


def _release(mm: mmap.mmap, start: int, end: int) -> None:
    """Let go of a read range of a file mapping (Linux and macOS): the pages stay in the page cache,
    and are read again from there if the range is looked at later."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is None or not hasattr(mm, "madvise"):
        return
    start -= start % mmap.PAGESIZE
    if end > start:
        mm.madvise(advice, start, end - start)


def map_of(view: memoryview) -> bytes:
    """The packed chunk map of some content."""
    return b"".join(_digests(view, [(c.offset, c.length) for c in _cuts(view)]))


def derive_map(base_map: bytes, base_size: int, ops: Ops, new: memoryview) -> bytes:
    """The chunk map of the content ``new`` that ``ops`` built from a base whose map is ``base_map``,
    exactly as ``map_of(new)`` would give it, chunking anew only around the literals.

    fastcdc cuts a chunk starting at ``p`` by looking only at ``new[p:p + min(MAX_CHUNK, rest)]``:
    the cut comes where a rolling hash of the bytes from ``p + MIN_CHUNK`` on matches, else at
    MAX_CHUNK, else at the end. So a base chunk ``[q, q + length)`` is also the new content's chunk
    at ``p`` when ``p`` is a cut, one copy op maps ``[p, p + length)`` onto it, and it did not end
    only because the base ended (or the new content ends there as well)."""
    starts: dict[int, tuple[int, bytes]] = {}
    for offset, length, digest in chunks(base_map):
        starts[offset] = (length, digest)
    # (new start, new end, base offset or -1 for literals), in order
    spans: list[tuple[int, int, int]] = []
    at = 0
    for op in ops:
        spans.append((at, at + op[-1], op[0] if len(op) == 2 else -1))
        at += op[-1]
    size = len(new)
    out = bytearray()
    p = k = 0
    while p < size:
        while spans[k][1] <= p:
            k += 1
        start, end, boff = spans[k]
        if boff >= 0:
            q = boff + p - start
            hit = starts.get(q)
            if hit is not None:
                length, digest = hit
                if p + length <= end and (q + length < base_size or length == MAX_CHUNK or p + length == size):
                    out += _ENTRY.pack(length, digest)
                    p += length
                    continue
        window = new[p:p + min(MAX_CHUNK, size - p)]
        length = next(iter(_cuts(window))).length
        out += _ENTRY.pack(length, _digest(new[p:p + length]))
        p += length
    return bytes(out)
