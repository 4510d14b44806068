"""Bundle format: encode and decode one immutable batch of operations (docs/bundle-format.md).

    header (96 bytes) | ciphertext | signature (64 bytes)

The payload (a sequence of records) is zstd-compressed, then sealed with the
store key (ChaCha20-Poly1305, the header as associated data), then the author
signs (Ed25519) the SHA-256 of header and ciphertext under a fixed context
(format version 2; version 1 signed the whole of header and ciphertext, which
costs two SHA-512 passes over 8 MiB per bundle, and is still read). A reader checks, in
this order: magic and version, store, author, sequence, declared sizes
against the hard caps, the file's size, the signature, the decryption, and a
bounded decompression that must produce exactly the declared size.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

import zstandard

from . import crypto
from .errors import BadBundle, CryptoError, IncompleteBundle

MAGIC = b"PSYB"
# Header flags: what kind of file this is. A reader checks it is the kind it expects.
FLAG_BUNDLE = 0
FLAG_SNAPSHOT_PART = 1
FLAG_SNAPSHOT_MANIFEST = 2
FORMAT_VERSION = 2  # what this implementation writes
READ_VERSIONS = (1, 2)  # what it reads: version 1 differs only in what the signature covers
# Version 2 signs this context followed by SHA-256(header || ciphertext). No version-1 message
# starts with it (they start with the magic), nor does any other signed object of the format.
SIGNATURE_CONTEXT = b"peersync bundle signature v2\0"
HEADER = struct.Struct("<4sHH16s16sIQQQ12s16s")
HEADER_SIZE = HEADER.size  # 96
SIGNATURE_SIZE = crypto.SIGNATURE_BYTES
# No bundle, whatever it declares, may make a reader hold more than this.
MAX_PAYLOAD = 72 * 1024 * 1024
MAX_CIPHERTEXT = MAX_PAYLOAD + MAX_PAYLOAD // 64 + 4096
MAX_META = 64 * 1024
RECORD_META = struct.Struct("<I")
RECORD_DATA = struct.Struct("<Q")
ZSTD_LEVEL = 3
# zstd compresses a large payload in jobs of this size on every core (its own threads, outside
# the GIL): a bundle of text compresses ~1.4x faster on two cores. The output is one ordinary
# zstd frame, whatever the number of threads.
ZSTD_JOB_BYTES = 4 * 1024 * 1024
ZSTD_THREADS = -1 if (os.cpu_count() or 1) > 1 else 0


def _compressor() -> zstandard.ZstdCompressor:
    params = zstandard.ZstdCompressionParameters.from_level(ZSTD_LEVEL, threads=ZSTD_THREADS,
                                                            job_size=ZSTD_JOB_BYTES)
    return zstandard.ZstdCompressor(compression_params=params)


def id_to_bytes(ident: str) -> bytes:
    """Store and peer ids are 16 bytes written in unpadded RFC 4648 base32."""
    raw = base64.b32decode(ident + "=" * (-len(ident) % 8))
    if len(raw) != 16:
        raise ValueError(f"bad id {ident!r}")
    return raw


def id_from_bytes(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


@dataclasses.dataclass(frozen=True)
class Header:
    store_id: str
    author: str
    epoch: int
    seq: int
    payload_size: int
    ciphertext_size: int
    nonce: bytes
    flags: int = 0
    version: int = FORMAT_VERSION

    def pack(self) -> bytes:
        return HEADER.pack(
            MAGIC,
            self.version,
            self.flags,
            id_to_bytes(self.store_id),
            id_to_bytes(self.author),
            self.epoch,
            self.seq,
            self.payload_size,
            self.ciphertext_size,
            self.nonce,
            b"\0" * 16,
        )

    @property
    def total_size(self) -> int:
        return HEADER_SIZE + self.ciphertext_size + SIGNATURE_SIZE

    @classmethod
    def unpack(cls, raw: bytes) -> Header:
        if len(raw) < HEADER_SIZE:
            raise IncompleteBundle("bundle is shorter than its header")
        magic, version, flags, store, author, epoch, seq, psize, csize, nonce, _ = HEADER.unpack(
            raw[:HEADER_SIZE]
        )
        if magic != MAGIC:
            raise BadBundle("not a peersync bundle (bad magic)")
        if version not in READ_VERSIONS:
            raise BadBundle(f"bundle format version {version} is not supported", "upgrade peersync")
        if psize > MAX_PAYLOAD or csize > MAX_CIPHERTEXT:
            raise BadBundle(f"bundle declares {psize} bytes, more than the {MAX_PAYLOAD} allowed")
        return cls(id_from_bytes(store), id_from_bytes(author), epoch, seq, psize, csize, nonce, flags, version)


def signed_message(head: bytes, ciphertext: bytes) -> bytes:
    """What the author's signature covers, by the header's format version (docs/bundle-format.md 5.3)."""
    if head[4:6] == b"\x01\x00":  # version 1: the whole of header and ciphertext
        return head + ciphertext
    digest = hashlib.sha256(head)
    digest.update(ciphertext)
    return SIGNATURE_CONTEXT + digest.digest()


# -- records ------------------------------------------------------------------


# One encoder for every record: ``json.dumps`` with options builds a new one per call.
_encode_meta = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclasses.dataclass
class Record:
    """One operation: ``meta`` is a JSON object, ``data`` the content bytes it carries.
    ``meta`` is encoded once, when the record is first sized or encoded: it is not changed after."""

    meta: dict[str, Any]
    data: bytes = b""
    _meta_json: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def _meta_bytes(self) -> bytes:
        if self._meta_json is None:
            self._meta_json = _encode_meta(self.meta).encode()
        return self._meta_json

    def encode(self) -> bytes:
        meta = self._meta_bytes()
        return RECORD_META.pack(len(meta)) + meta + RECORD_DATA.pack(len(self.data)) + self.data

    @property
    def encoded_size(self) -> int:
        """The exact number of bytes ``encode`` produces."""
        return RECORD_META.size + len(self._meta_bytes()) + RECORD_DATA.size + len(self.data)


def encode_payload(records: list[Record]) -> bytes:
    pieces: list[bytes] = []
    for r in records:  # one join, so a record's content is copied once, not twice
        meta = r._meta_bytes()
        pieces += (RECORD_META.pack(len(meta)), meta, RECORD_DATA.pack(len(r.data)), r.data)
    return b"".join(pieces)


def decode_payload(payload: bytes | bytearray) -> list[Record]:
    out: list[Record] = []
    view = memoryview(payload)
    pos = 0
    while pos < len(view):
        if pos + RECORD_META.size > len(view):
            raise BadBundle("payload ends inside a record")
        (mlen,) = RECORD_META.unpack_from(view, pos)
        pos += RECORD_META.size
        if mlen > MAX_META or pos + mlen + RECORD_DATA.size > len(view):
            raise BadBundle("payload record header is out of bounds")
        try:
            meta = json.loads(bytes(view[pos : pos + mlen]).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise BadBundle("payload record is not valid JSON") from exc
        if not isinstance(meta, dict):
            raise BadBundle("payload record is not a JSON object")
        pos += mlen
        (dlen,) = RECORD_DATA.unpack_from(view, pos)
        pos += RECORD_DATA.size
        if pos + dlen > len(view):
            raise BadBundle("payload record data is out of bounds")
        out.append(Record(meta, bytes(view[pos : pos + dlen])))
        pos += dlen
    return out


# -- sealing ------------------------------------------------------------------


def seal(
    records: list[Record],
    *,
    store_id: str,
    author: str,
    epoch: int,
    seq: int,
    key: bytes,
    signer: crypto.SigningKey,
    flags: int = FLAG_BUNDLE,
) -> bytes:
    payload = encode_payload(records)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("bundle payload exceeds the format's cap")
    compressed = _compressor().compress(payload)
    nonce = crypto.random_bytes(crypto.NONCE_BYTES)
    header = Header(store_id, author, epoch, seq, len(payload), len(compressed) + crypto.TAG_BYTES, nonce, flags)
    head = header.pack()
    ciphertext = crypto.seal(key, nonce, compressed, head)
    signature = signer.sign(signed_message(head, ciphertext))
    return b"".join((head, ciphertext, signature))


def read_header(raw: bytes) -> Header:
    return Header.unpack(raw)


def open_bundle(
    raw: bytes,
    *,
    store_id: str,
    author: str,
    seq: int,
    author_key: bytes,
    keys: dict[int, bytes] | dict[int, list[bytes]],
    flags: int = FLAG_BUNDLE,
) -> tuple[Header, list[Record]]:
    """Verify and decode a bundle read from ``peers/<author>/bundles/<seq>.psb``.

    Raises IncompleteBundle when the file is shorter than it declares (it may
    still be uploading) and BadBundle when any check fails for good.
    """
    header = Header.unpack(raw)
    if header.store_id != store_id:
        raise BadBundle(f"bundle belongs to store {header.store_id}, not {store_id}")
    if header.author != author:
        raise BadBundle(f"bundle in {author}'s folder claims author {header.author}")
    if header.seq != seq:
        raise BadBundle(f"bundle named {seq} carries sequence {header.seq} (a replay)")
    if header.flags != flags:
        raise BadBundle(f"file carries kind {header.flags}, not the {flags} expected here")
    if len(raw) < header.total_size:
        raise IncompleteBundle(f"bundle has {len(raw)} of its {header.total_size} bytes")
    if len(raw) > header.total_size:
        longer = BadBundle(f"bundle has {len(raw)} bytes, more than the {header.total_size} it declares")
        longer.retryable = True
        raise longer
    head = raw[:HEADER_SIZE]
    ciphertext = raw[HEADER_SIZE : HEADER_SIZE + header.ciphertext_size]
    signature = raw[HEADER_SIZE + header.ciphertext_size :]
    try:
        crypto.verify(author_key, signature, signed_message(head, ciphertext))
    except CryptoError as exc:
        bad = BadBundle("bundle signature does not match its author")
        bad.retryable = True  # a cloud client may still be rewriting it
        raise bad from exc
    candidates = keys.get(header.epoch)
    if not candidates:
        raise BadBundle(f"bundle is sealed with store key epoch {header.epoch}, which this peer does not hold")
    compressed = b""
    for key in [candidates] if isinstance(candidates, bytes) else candidates:
        try:
            compressed = crypto.open_sealed(key, header.nonce, ciphertext, head)
            break
        except CryptoError:
            continue
    else:
        raise BadBundle("bundle does not decrypt with the store key")
    payload = bounded_decompress(compressed, header.payload_size)
    return header, decode_payload(payload)


def bounded_decompress(data: bytes, declared: int) -> bytearray:
    """Decompress at most ``declared`` bytes; anything else is a bad bundle. Read straight into a
    buffer of the declared size (``declared`` is at most MAX_PAYLOAD, checked before): a third of the
    time of growing one chunk by chunk."""
    buf = bytearray(declared + 1)  # one byte more, to see a payload larger than declared
    pos = 0
    with memoryview(buf) as view:
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
            while pos <= declared:
                n = reader.readinto(view[pos:min(pos + (1 << 20), declared + 1)])
                if not n:
                    break
                pos += n
        except zstandard.ZstdError as exc:
            raise BadBundle(f"bundle payload does not decompress ({exc})") from exc
    if pos > declared:
        raise BadBundle(f"bundle payload is larger than the {declared} bytes it declares")
    if pos != declared:
        raise BadBundle(f"bundle payload is {pos} bytes, not the {declared} it declares")
    del buf[declared:]
    return buf


def iter_batches(records: Iterator[Record], max_bytes: int) -> Iterator[list[Record]]:
    """Group records into bundles of at most ``max_bytes`` payload (one record at least)."""
    batch: list[Record] = []
    size = 0
    for rec in records:
        if batch and size + rec.encoded_size > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(rec)
        size += rec.encoded_size
    if batch:
        yield batch
