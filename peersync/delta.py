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
from pathlib import Path
from typing import BinaryIO

from fastcdc.fastcdc_cy import fastcdc_cy

AVG_CHUNK = 64 * 1024  # min a quarter, max 8x: about 1.2 MB sent for 1 MiB changed
MAX_OPS = 1000  # more than this (changes scattered all over) and the file goes whole
_ENTRY = struct.Struct("<I8s")  # chunk length, first 8 bytes of its SHA-1
Ops = list[list[int]]


def _digest(view: memoryview) -> bytes:
    return hashlib.sha1(view, usedforsecurity=False).digest()[:8]


def hash_and_map(path: Path) -> tuple[str, int, bytes]:
    """SHA-256 hex digest, size and packed chunk map of a file; the SHA-256 runs in a second
    thread over the same mapping (hashlib lets go of the interpreter lock)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return hashlib.sha256(b"").hexdigest(), 0, b""
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                whole = hashlib.sha256()
                worker = threading.Thread(target=whole.update, args=(view,))
                worker.start()
                try:
                    out = bytearray()
                    for c in fastcdc_cy(view, avg_size=AVG_CHUNK):
                        out += _ENTRY.pack(c.length, _digest(view[c.offset:c.offset + c.length]))
                finally:
                    worker.join()
                return whole.hexdigest(), len(view), bytes(out)
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


def build(base: BinaryIO, ops: Ops, data: bytes, out: BinaryIO, block: int = 1024 * 1024) -> None:
    """Write the new content to ``out`` from ``base`` and the literal ``data``; a base shorter than
    a copy asks for raises ValueError."""
    pos = 0
    for op in ops:
        if len(op) == 1:
            out.write(data[pos:pos + op[0]])
            pos += op[0]
            continue
        base.seek(op[0])
        left = op[1]
        while left:
            piece = base.read(min(block, left))
            if not piece:
                raise ValueError("the base is shorter than the delta says")
            out.write(piece)
            left -= len(piece)
