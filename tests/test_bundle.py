"""The bundle format (docs/bundle-format.md §5, §6, §11.2): round trips, byte layout, and every reader check.

A bundle comes out of a cloud folder, so the reader is tested as a parser of
hostile bytes: truncated files (a cloud client still downloading), flipped
bits (a bad disk, a meddling provider), bundles renamed or copied between
folders (a replay), and payloads built by a member to exhaust memory.

Several tests build bundles with ``forge`` below, an independent writer that
follows the spec's byte tables with ``struct`` directly rather than calling
``bundle.Header``, so the spec and the code are checked against each other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import tracemalloc
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peersync import bundle, crypto
from peersync.apply import check_record
from peersync.bundle import (
    HEADER_SIZE,
    MAX_CIPHERTEXT,
    MAX_META,
    MAX_PAYLOAD,
    SIGNATURE_SIZE,
    Header,
    Record,
    decode_payload,
    encode_payload,
    iter_batches,
    open_bundle,
    seal,
)
from peersync.errors import BadBundle, BundleError, IncompleteBundle
from peersync.state import peer_id_of

SECRET = bytes(range(32))
KEY = crypto.derive_key(SECRET, "bundle", 0)
SIGNER = crypto.SigningKey.from_bytes(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
AUTHOR = peer_id_of(SIGNER.public_bytes())
OTHER = crypto.SigningKey.from_bytes(bytes(32))
OTHER_ID = peer_id_of(OTHER.public_bytes())
STORE = base64.b32encode(bytes(range(100, 116))).decode().rstrip("=")
OTHER_STORE = base64.b32encode(bytes(16)).decode().rstrip("=")


def put(path: str, data: bytes, counter: int = 1, **extra: Any) -> Record:
    meta = {"op": "put", "path": path, "hash": hashlib.sha256(data).hexdigest(), "size": len(data),
            "mtime_ns": 1_700_000_000_123_456_789, "mode": 0o644, "vector": {AUTHOR: counter}, "by": AUTHOR,
            "content": "inline", **extra}
    return Record(meta, data)


RECORDS = [
    put("Angebote/Müller – Ö.docx", bytes(range(256)) * 3),
    put("日本語/ファイル.txt", b"\x00\xff\x00", 2),
    put("📁 Ordner/emoji 🎉.bin", b"", 3),
    Record({"op": "mkdir", "path": "Quotes/2024", "vector": {AUTHOR: 4}, "by": AUTHOR}),
    Record({"op": "delete", "path": "old.txt", "kind": "file", "hash": "a" * 64, "mtime_ns": 5,
            "vector": {AUTHOR: 5, OTHER_ID: 2}, "by": AUTHOR}),
    put("big.bin", b"\x01" * 100, 6, content="parts"),
    Record({"op": "part", "path": "big.bin", "hash": hashlib.sha256(b"\x01" * 100).hexdigest(), "offset": 100,
            "final": True}, b"\x02" * 7),
]


def make(records: list[Record] = RECORDS, seq: int = 1, **kw: Any) -> bytes:
    args: dict[str, Any] = dict(store_id=STORE, author=AUTHOR, epoch=0, seq=seq, key=KEY, signer=SIGNER)
    args.update(kw)
    return seal(records, **args)


def open_(raw: bytes, **kw: Any) -> tuple[Header, list[Record]]:
    args: dict[str, Any] = dict(store_id=STORE, author=AUTHOR, seq=1, author_key=SIGNER.public_bytes(),
                                keys={0: KEY})
    args.update(kw)
    return open_bundle(raw, **args)


def raw_id(ident: str) -> bytes:
    return base64.b32decode(ident + "=" * (-len(ident) % 8))


def forge(
    payload: bytes,
    *,
    declared: int | None = None,
    compressed: bytes | None = None,
    magic: bytes = b"PSYB",
    version: int = 2,
    flags: int = 0,
    store: str = STORE,
    author: str = AUTHOR,
    epoch: int = 0,
    seq: int = 1,
    csize: int | None = None,
    reserved: bytes = bytes(16),
    key: bytes = KEY,
    signer: crypto.SigningKey = SIGNER,
) -> bytes:
    """A bundle written from the spec's tables (§5.2, §5.3), with any field set at will."""
    if compressed is None:
        compressed = zstandard.ZstdCompressor().compress(payload)
    nonce = os.urandom(12)
    size = len(payload) if declared is None else declared
    ctsize = len(compressed) + 16 if csize is None else csize
    head = (
        magic
        + struct.pack("<H", version)
        + struct.pack("<H", flags)
        + raw_id(store)
        + raw_id(author)
        + struct.pack("<I", epoch)
        + struct.pack("<Q", seq)
        + struct.pack("<Q", size)
        + struct.pack("<Q", ctsize)
        + nonce
        + reserved
    )
    assert len(head) == 96
    ciphertext = crypto.seal(key, nonce, compressed, head)
    return head + ciphertext + signer.sign(spec_signed_message(head, ciphertext, version))


def spec_signed_message(head: bytes, ciphertext: bytes, version: int) -> bytes:
    """§5.3 step 5: version 1 signs header and ciphertext, version 2 a context and their SHA-256."""
    if version == 1:
        return head + ciphertext
    return b"peersync bundle signature v2\x00" + hashlib.sha256(head + ciphertext).digest()


# --------------------------------------------------------------------------- #
# Layout                                                                      #
# --------------------------------------------------------------------------- #


def test_header_is_exactly_96_bytes() -> None:
    assert HEADER_SIZE == bundle.HEADER.size == 96
    assert SIGNATURE_SIZE == 64
    h = Header(STORE, AUTHOR, 0, 1, 10, 26, bytes(12))
    assert len(h.pack()) == 96
    assert h.total_size == 96 + 26 + 64


def test_caps_are_the_documented_numbers() -> None:
    assert MAX_PAYLOAD == 75_497_472
    assert MAX_CIPHERTEXT == 76_681_216
    assert HEADER_SIZE + MAX_CIPHERTEXT + SIGNATURE_SIZE == 76_681_376
    assert MAX_META == 65_536


def test_sealed_bundle_matches_the_byte_table() -> None:
    """Read a bundle by the spec's offsets alone, decrypt and decompress it by hand."""
    raw = make(seq=0x0102030405)
    assert raw[0:4] == b"PSYB"
    assert struct.unpack_from("<H", raw, 4) == (2,)
    assert struct.unpack_from("<H", raw, 6) == (0,)
    assert raw[8:24] == raw_id(STORE)
    assert raw[24:40] == raw_id(AUTHOR)
    assert struct.unpack_from("<I", raw, 40) == (0,)
    assert struct.unpack_from("<Q", raw, 44) == (0x0102030405,)
    (payload_size,) = struct.unpack_from("<Q", raw, 52)
    (ciphertext_size,) = struct.unpack_from("<Q", raw, 60)
    nonce = raw[68:80]
    assert raw[80:96] == bytes(16)
    assert len(raw) == 96 + ciphertext_size + 64
    ciphertext, signature = raw[96 : 96 + ciphertext_size], raw[96 + ciphertext_size :]
    crypto.verify(SIGNER.public_bytes(), signature, spec_signed_message(raw[:96], ciphertext, 2))
    with pytest.raises(crypto.CryptoError):  # version 2 does not sign the bytes themselves
        crypto.verify(SIGNER.public_bytes(), signature, raw[:96] + ciphertext)
    compressed = crypto.open_sealed(KEY, nonce, ciphertext, raw[:96])
    assert ciphertext_size == len(compressed) + 16
    payload = zstandard.ZstdDecompressor().decompressobj().decompress(compressed)
    assert len(payload) == payload_size
    assert payload == encode_payload(RECORDS)
    # Framing, by §6.1.
    (mlen,) = struct.unpack_from("<I", payload, 0)
    meta = json.loads(payload[4 : 4 + mlen].decode("utf-8"))
    (dlen,) = struct.unpack_from("<Q", payload, 4 + mlen)
    assert meta == RECORDS[0].meta
    assert payload[12 + mlen : 12 + mlen + dlen] == RECORDS[0].data


def test_spec_example_record_bytes() -> None:
    """The example payload in docs/bundle-format.md §6.7 is byte for byte what the writer produces."""
    assert AUTHOR == "EH7DDX5BKSRGCYTL7BKAI36SE4"
    rec = Record({"op": "put", "hash": hashlib.sha256(b"hello").hexdigest(), "size": 5,
                  "mtime_ns": 1700000000000000000, "mode": 420, "path": "Quotes/Müller.txt",
                  "vector": {AUTHOR: 7}, "by": AUTHOR, "content": "inline"}, b"hello")
    mkdir = Record({"op": "mkdir", "path": "Quotes/2024", "vector": {AUTHOR: 8}, "by": AUTHOR})
    encoded = rec.encode()
    assert struct.unpack_from("<I", encoded) == (260,)
    assert encoded[4:264].decode() == (
        '{"op":"put","hash":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824","size":5,'
        '"mtime_ns":1700000000000000000,"mode":420,"path":"Quotes/Müller.txt",'
        '"vector":{"EH7DDX5BKSRGCYTL7BKAI36SE4":7},"by":"EH7DDX5BKSRGCYTL7BKAI36SE4","content":"inline"}'
    )
    assert encoded[264:] == struct.pack("<Q", 5) + b"hello"
    assert struct.unpack_from("<I", mkdir.encode()) == (111,)


def test_forged_bundle_following_the_spec_opens() -> None:
    header, records = open_(forge(encode_payload(RECORDS)))
    assert [(r.meta, r.data) for r in records] == [(r.meta, r.data) for r in RECORDS]
    assert (header.store_id, header.author, header.seq, header.epoch) == (STORE, AUTHOR, 1, 0)


def test_header_pack_unpack_round_trip() -> None:
    h = Header(STORE, AUTHOR, 7, 2**40, 123, 456, bytes(range(12)), 0)
    assert Header.unpack(h.pack()) == h


def test_ids_are_unpadded_base32_of_16_bytes() -> None:
    raw = bytes(range(16))
    ident = bundle.id_from_bytes(raw)
    assert len(ident) == 26 and "=" not in ident and ident.isupper()
    assert bundle.id_to_bytes(ident) == raw
    for bad in ("", "AAAA", "A" * 27, "a" * 26, "1" * 26):
        with pytest.raises(ValueError):
            bundle.id_to_bytes(bad)


# --------------------------------------------------------------------------- #
# Round trips                                                                 #
# --------------------------------------------------------------------------- #


def test_round_trip_binary_data_and_unicode_paths() -> None:
    raw = make(seq=42)
    header, records = open_(raw, seq=42)
    assert [(r.meta, r.data) for r in records] == [(r.meta, r.data) for r in RECORDS]
    assert header.seq == 42 and header.payload_size == len(encode_payload(RECORDS))
    for r in records:
        check_record(r)  # what the writer produces passes the reader's record validation


def test_round_trip_empty_bundle() -> None:
    _, records = open_(make([]))
    assert records == []


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.dictionaries(st.text(max_size=10), st.text(max_size=20) | st.integers(), max_size=4),
                          st.binary(max_size=300)), max_size=6))
def test_round_trip_any_records(items: list[tuple[dict[str, Any], bytes]]) -> None:
    records = [Record(dict(m), d) for m, d in items]
    _, out = open_(make(records))
    assert [(r.meta, r.data) for r in out] == items


def test_every_seal_uses_a_fresh_nonce() -> None:
    a, b = make(), make()
    assert a[68:80] != b[68:80]
    assert a[96:] != b[96:]


def test_seal_refuses_a_payload_over_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle, "MAX_PAYLOAD", 1000)
    with pytest.raises(ValueError):
        make([put("a", b"x" * 1000)])


# --------------------------------------------------------------------------- #
# Truncation and extra bytes                                                  #
# --------------------------------------------------------------------------- #

SAMPLE = make()


@given(st.integers(min_value=0, max_value=len(SAMPLE) - 1))
def test_any_truncation_is_incomplete(cut: int) -> None:
    """A cloud client writes a download in place: every prefix must read as 'still arriving'."""
    with pytest.raises(IncompleteBundle):
        open_(SAMPLE[:cut])


def test_every_truncation_is_incomplete_exhaustively() -> None:
    small = make([put("a.txt", b"hi")])
    for cut in range(len(small)):
        with pytest.raises(IncompleteBundle):
            open_(small[:cut])


def test_extra_bytes_are_bad_but_retryable() -> None:
    """Longer than declared: a cloud client may still be rewriting the file, so it is waited for."""
    for extra in (b"\x00", b"x" * 1000, SAMPLE):
        with pytest.raises(BadBundle) as info:
            open_(SAMPLE + extra)
        assert info.value.retryable


# --------------------------------------------------------------------------- #
# Header checks                                                               #
# --------------------------------------------------------------------------- #


def test_wrong_store_is_bad() -> None:
    with pytest.raises(BadBundle, match="store"):
        open_(SAMPLE, store_id=OTHER_STORE)


def test_wrong_author_is_bad() -> None:
    """A bundle copied into another peer's folder."""
    with pytest.raises(BadBundle, match="author"):
        open_(SAMPLE, author=OTHER_ID, author_key=OTHER.public_bytes())


def test_wrong_seq_is_a_replay() -> None:
    """An old bundle renamed to the next sequence number (the seq is signed, the name is not)."""
    for seq in (0, 2, 2**40):
        with pytest.raises(BadBundle, match="replay"):
            open_(SAMPLE, seq=seq)


def test_bad_magic() -> None:
    with pytest.raises(BadBundle, match="magic"):
        open_(b"PK\x03\x04" + SAMPLE[4:])
    with pytest.raises(BadBundle, match="magic"):
        open_(forge(b"", magic=b"PSYb"))
    with pytest.raises(BadBundle, match="magic"):
        open_(bytes(200))


def test_version_1_bundles_are_still_read() -> None:
    """Relays written before format version 2 (the signature covered header and ciphertext themselves)."""
    header, records = open_(forge(encode_payload(RECORDS), version=1))
    assert header.version == 1
    assert [(r.meta, r.data) for r in records] == [(r.meta, r.data) for r in RECORDS]


def test_signature_of_the_other_version_does_not_verify() -> None:
    """The version field is signed and picks what the signature covers: a bundle cannot be passed off
    as the other version, and a version-1-style signature on a version-2 header fails (and back)."""
    payload = encode_payload(RECORDS)
    for version, other in ((1, 2), (2, 1)):
        raw = forge(payload, version=version)
        head, ciphertext = raw[:96], raw[96:-64]
        swapped = head + ciphertext + SIGNER.sign(spec_signed_message(head, ciphertext, other))
        with pytest.raises(BadBundle, match="signature"):
            open_(swapped)
        relabelled = head[:4] + struct.pack("<H", other) + head[6:] + raw[96:]
        with pytest.raises(BadBundle):
            open_(relabelled)


@pytest.mark.parametrize("version", [0, 3, 0xFFFF])
def test_unsupported_version(version: int) -> None:
    with pytest.raises(BadBundle, match="version") as info:
        open_(forge(b"", version=version))
    assert "upgrade" in info.value.hint


def test_declared_payload_above_cap_is_bad() -> None:
    for declared in (MAX_PAYLOAD + 1, 2**64 - 1):
        with pytest.raises(BadBundle, match="declares"):
            open_(forge(b"", declared=declared))


def test_declared_ciphertext_above_cap_is_bad() -> None:
    """Refused from the header alone, before the reader waits for (or reads) 2**63 bytes."""
    head = bytearray(SAMPLE[:96])
    struct.pack_into("<Q", head, 60, MAX_CIPHERTEXT + 1)
    with pytest.raises(BadBundle):
        open_(bytes(head))


def test_declared_payload_at_cap_passes_the_header_check() -> None:
    h = Header(STORE, AUTHOR, 0, 1, MAX_PAYLOAD, MAX_CIPHERTEXT, bytes(12))
    assert Header.unpack(h.pack()).payload_size == MAX_PAYLOAD


def test_unknown_epoch_is_bad() -> None:
    raw = forge(encode_payload(RECORDS), epoch=1, key=crypto.derive_key(SECRET, "bundle", 1))
    with pytest.raises(BadBundle, match="epoch"):
        open_(raw)
    _, records = open_(raw, keys={0: KEY, 1: crypto.derive_key(SECRET, "bundle", 1)})
    assert len(records) == len(RECORDS)


def test_ciphertext_shorter_than_a_tag_is_bad() -> None:
    head = forge(b"", compressed=b"")[:96]
    head = head[:60] + struct.pack("<Q", 0) + head[68:]
    with pytest.raises(BadBundle):
        open_(head + SIGNER.sign(head))


# --------------------------------------------------------------------------- #
# Signature and decryption                                                    #
# --------------------------------------------------------------------------- #


def test_signature_by_another_member_is_bad_and_retryable() -> None:
    raw = forge(encode_payload(RECORDS), signer=OTHER)
    with pytest.raises(BadBundle, match="signature") as info:
        open_(raw)
    assert info.value.retryable


def test_wrong_store_key_is_bad_and_final() -> None:
    """Signed by the author but sealed with another key: the author really wrote it, so it is final."""
    raw = forge(encode_payload(RECORDS), key=crypto.derive_key(bytes(32), "bundle", 0))
    with pytest.raises(BadBundle, match="decrypt") as info:
        open_(raw)
    assert not info.value.retryable


def test_reserved_and_flags_are_authenticated() -> None:
    """Changing them after signing breaks the signature; the reader never interprets them."""
    for offset in (6, 80, 95):
        raw = bytearray(SAMPLE)
        raw[offset] ^= 1
        with pytest.raises(BadBundle):
            open_(bytes(raw))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(SAMPLE) * 8 - 1))
def test_any_flipped_bit_is_refused(bit: int) -> None:
    """A flipped bit anywhere yields BadBundle or IncompleteBundle (a size field grew), never records."""
    raw = bytearray(SAMPLE)
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises((BadBundle, IncompleteBundle)):
        open_(bytes(raw))


def test_every_flipped_byte_is_refused_exhaustively() -> None:
    small = make([put("a.txt", b"hi")])
    for i in range(len(small)):
        raw = bytearray(small)
        raw[i] ^= 0xFF
        try:
            open_(bytes(raw))
        except BundleError as exc:
            assert isinstance(exc, (BadBundle, IncompleteBundle))
        else:
            pytest.fail(f"a bundle with byte {i} changed was accepted")


def test_spliced_bundles_are_refused() -> None:
    """Header of one bundle with the ciphertext and signature of another, both genuine."""
    a, b = make(seq=1), make([put("x", b"other")], seq=1)
    ha, hb = Header.unpack(a), Header.unpack(b)
    spliced = a[:96] + b[96:]
    with pytest.raises((BadBundle, IncompleteBundle)):
        open_(spliced)
    assert ha.nonce != hb.nonce


# --------------------------------------------------------------------------- #
# Bounded decompression                                                       #
# --------------------------------------------------------------------------- #


def test_decompression_bomb_is_refused_within_declared_memory() -> None:
    """A member declares 4 MiB and packs 64 MiB: the reader must stop after declared+1 bytes."""
    real = bytes(64 * 1024 * 1024)
    compressed = zstandard.ZstdCompressor(level=1).compress(real)
    declared = 4 * 1024 * 1024
    raw = forge(b"", compressed=compressed, declared=declared)
    del real
    assert len(raw) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(BadBundle, match="larger"):
            open_(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < declared + 1024 * 1024 + 512 * 1024, f"peak {peak} bytes"


def test_tiny_declared_size_bomb() -> None:
    compressed = zstandard.ZstdCompressor().compress(bytes(10 * 1024 * 1024))
    tracemalloc.start()
    try:
        with pytest.raises(BadBundle):
            open_(forge(b"", compressed=compressed, declared=10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_payload_one_byte_over_declared_is_bad() -> None:
    payload = encode_payload(RECORDS)
    with pytest.raises(BadBundle):
        open_(forge(payload, declared=len(payload) - 1))


def test_payload_shorter_than_declared_is_bad() -> None:
    payload = encode_payload(RECORDS)
    with pytest.raises(BadBundle, match="not the"):
        open_(forge(payload, declared=len(payload) + 1))


def test_payload_that_is_not_zstd_is_bad() -> None:
    payload = encode_payload(RECORDS)
    for compressed in (payload, zstandard.ZstdCompressor().compress(payload)[:-3], b"\x28\xb5\x2f\xfd" + bytes(20)):
        with pytest.raises(BadBundle):
            open_(forge(payload, compressed=compressed))


def test_several_zstd_frames_are_one_payload() -> None:
    """§5.3: one or more frames. A writer streaming a large batch may close a frame per part."""
    payload = encode_payload(RECORDS)
    half = len(payload) // 2
    c = zstandard.ZstdCompressor()
    _, records = open_(forge(payload, compressed=c.compress(payload[:half]) + c.compress(payload[half:])))
    assert [r.meta for r in records] == [r.meta for r in RECORDS]


def test_bounded_decompress_directly() -> None:
    data = zstandard.ZstdCompressor().compress(b"abc" * 1000)
    assert bundle.bounded_decompress(data, 3000) == b"abc" * 1000
    assert bundle.bounded_decompress(zstandard.ZstdCompressor().compress(b""), 0) == b""
    for declared in (0, 2999, 3001):
        with pytest.raises(BadBundle):
            bundle.bounded_decompress(data, declared)


# --------------------------------------------------------------------------- #
# Payload framing                                                             #
# --------------------------------------------------------------------------- #


def frame(meta: bytes, data: bytes = b"", dlen: int | None = None, mlen: int | None = None) -> bytes:
    return (struct.pack("<I", len(meta) if mlen is None else mlen) + meta
            + struct.pack("<Q", len(data) if dlen is None else dlen) + data)


GOOD = frame(b'{"op":"mkdir"}')

FRAMING_ERRORS = [
    pytest.param(b"\x01", id="fewer than 4 bytes of meta length"),
    pytest.param(GOOD + b"\x00\x00\x00", id="trailing partial length"),
    pytest.param(struct.pack("<I", 10) + b"{}", id="meta runs past the end"),
    pytest.param(struct.pack("<I", 2) + b"{}" + b"\x00" * 7, id="data length cut short"),
    pytest.param(frame(b"{}", b"abc", dlen=4), id="data runs past the end"),
    pytest.param(frame(b"{}", b"", dlen=2**64 - 1), id="huge data length"),
    pytest.param(frame(b"{}", mlen=MAX_META + 1), id="meta length above MAX_META"),
    pytest.param(frame(b"{" + b" " * MAX_META + b"}"), id="meta longer than MAX_META"),
    pytest.param(frame(b'{"op":"put",'), id="truncated JSON"),
    pytest.param(frame(b"\xff\xfe{}"), id="not UTF-8"),
    pytest.param(frame('{"p":"\u00e9"}'.encode("latin-1")), id="latin-1, not UTF-8"),
    pytest.param(frame(b"[1,2]"), id="JSON array"),
    pytest.param(frame(b'"put"'), id="JSON string"),
    pytest.param(frame(b"42"), id="JSON number"),
    pytest.param(frame(b"null"), id="JSON null"),
    pytest.param(frame(b""), id="empty meta"),
    pytest.param(GOOD + frame(b"[]"), id="second record bad"),
]


@pytest.mark.parametrize("payload", FRAMING_ERRORS)
def test_framing_errors(payload: bytes) -> None:
    with pytest.raises(BadBundle):
        decode_payload(payload)


@pytest.mark.parametrize("payload", FRAMING_ERRORS)
def test_framing_errors_reject_the_whole_sealed_bundle(payload: bytes) -> None:
    with pytest.raises(BadBundle):
        open_(forge(GOOD + payload))


def test_meta_of_exactly_max_meta_is_accepted() -> None:
    meta = b'{"x":"' + b"a" * (MAX_META - 8) + b'"}'
    assert len(meta) == MAX_META
    assert decode_payload(frame(meta))[0].meta == {"x": "a" * (MAX_META - 8)}


def test_decode_empty_payload() -> None:
    assert decode_payload(b"") == []


def test_deeply_nested_meta_is_bad() -> None:
    meta = b"[" * 30_000 + b"]" * 30_000
    assert len(meta) <= MAX_META
    with pytest.raises(BadBundle):
        decode_payload(frame(meta))


@given(st.binary(max_size=300))
def test_decode_payload_never_raises_anything_else(payload: bytes) -> None:
    try:
        records = decode_payload(payload)
    except BadBundle:
        return
    assert all(isinstance(r.meta, dict) and isinstance(r.data, bytes) for r in records)


# --------------------------------------------------------------------------- #
# Batching                                                                    #
# --------------------------------------------------------------------------- #


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=40), st.integers(min_value=1, max_value=20_000))
def test_iter_batches_respects_max_bytes(sizes: list[int], max_bytes: int) -> None:
    records = [Record({"op": "put", "i": i}, b"x" * n) for i, n in enumerate(sizes)]
    batches = list(iter_batches(iter(records), max_bytes))
    assert [r for b in batches for r in b] == records  # nothing lost, nothing reordered
    for b in batches:
        assert b
        assert len(b) == 1 or sum(r.encoded_size for r in b) <= max_bytes
    for b, nxt in zip(batches, batches[1:]):  # a batch closes only when the next record would not fit
        assert sum(r.encoded_size for r in b) + nxt[0].encoded_size > max_bytes


def test_iter_batches_gives_an_oversized_record_its_own_batch() -> None:
    small, big = Record({"op": "a"}, b"x"), Record({"op": "b"}, b"y" * 10_000)
    assert list(iter_batches(iter([small, big, small]), 1000)) == [[small], [big], [small]]
    assert list(iter_batches(iter([]), 1000)) == []


def test_iter_batches_bounds_the_real_payload() -> None:
    records = [put("Ordner/" + "ü" * 250 + f"/{i}.txt", b"") for i in range(200)]
    max_bytes = 64 * 1024
    for b in iter_batches(iter(records), max_bytes):
        assert len(b) == 1 or len(encode_payload(b)) <= max_bytes
