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
import mmap
import os
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastcdc.fastcdc_cy import fastcdc_cy

AVG_CHUNK = 64 * 1024  # min a quarter, max 8x: about 1.2 MB sent for 1 MiB changed
MAX_OPS = 1000  # more than this (changes scattered all over) and the file goes whole
_ENTRY = struct.Struct("<I8s")  # chunk length, first 8 bytes of its SHA-1
Ops = list[list[int]]


def _digest(view: memoryview) -> bytes:
    return hashlib.sha1(view, usedforsecurity=False).digest()[:8]


def hash_and_map(path: Path) -> tuple[str, int, bytes]:
    """SHA-256 hex digest, size and packed chunk map of a file, on two cores: a second thread runs the
    SHA-256 while this one finds the cuts, then both digest chunks, from either end (hashlib and
    fastcdc let go of the interpreter lock)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return hashlib.sha256(b"").hexdigest(), 0, b""
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                whole = hashlib.sha256()
                cuts: list[tuple[int, int]] = []
                digests: list[bytes] = []
                lock = threading.Lock()
                ready = threading.Event()
                ends = [0, 0]  # chunks digested from the front, from the back

                def take(front: bool) -> int | None:
                    with lock:
                        if ends[0] + ends[1] >= len(cuts):
                            return None
                        if front:
                            ends[0] += 1
                            return ends[0] - 1
                        ends[1] += 1
                        return len(cuts) - ends[1]

                def work(front: bool) -> None:
                    while (i := take(front)) is not None:
                        offset, length = cuts[i]
                        digests[i] = _digest(view[offset:offset + length])

                def second() -> None:
                    whole.update(view)
                    ready.wait()
                    work(False)

                worker = threading.Thread(target=second)
                worker.start()
                try:
                    cuts.extend((c.offset, c.length) for c in fastcdc_cy(view, avg_size=AVG_CHUNK))
                    digests.extend(b"" for _ in cuts)
                finally:
                    ready.set()
                try:
                    work(True)
                finally:
                    worker.join()
                out = b"".join(_ENTRY.pack(length, d) for (_, length), d in zip(cuts, digests))
                return whole.hexdigest(), len(view), out
            finally:
                view.release()


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
_SYNC_EVERY = 128 * 1024 * 1024  # flushed to disk behind the writer, so the final fsync finds little to do


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
    with mmap.mmap(out, size, access=mmap.ACCESS_READ) as mm, \
            ThreadPoolExecutor(1) as hasher, ThreadPoolExecutor(1) as syncer:
        view = memoryview(mm)
        try:
            pending = []
            at = pos = hashed = synced = 0

            def written(n: int) -> None:
                nonlocal at, hashed, synced
                at += n
                if at - hashed >= _SEGMENT:
                    pending.append(hasher.submit(whole.update, view[hashed:at]))
                    hashed = at
                if at - synced >= _SYNC_EVERY:
                    pending.append(syncer.submit(getattr(os, "fdatasync", os.fsync), out))
                    synced = at

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
                pending.append(hasher.submit(whole.update, view[hashed:at]))
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


def map_of(view: memoryview) -> bytes:
    """The packed chunk map of some content."""
    out = bytearray()
    for c in fastcdc_cy(view, avg_size=AVG_CHUNK):
        out += _ENTRY.pack(c.length, _digest(view[c.offset:c.offset + c.length]))
    return bytes(out)


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
        length = next(iter(fastcdc_cy(window, avg_size=AVG_CHUNK))).length
        out += _ENTRY.pack(length, _digest(new[p:p + length]))
        p += length
    return bytes(out)
