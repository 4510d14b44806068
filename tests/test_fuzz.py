"""Fuzzing the bundle reader: whatever bytes arrive, it rejects them with BadBundle or waits, never crashes.

A signature keeps strangers' bytes away from the payload decoder, but a
member of the store (a trusted but malicious peer) can sign anything, so the
payload decoder and the record validation are fuzzed behind a valid seal too.

CI runs a short form. The long form: PEERSYNC_LONG=1 pytest -m slow tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peersync import bundle, crypto
from peersync.apply import check_record
from peersync.bundle import Record
from peersync.errors import BadBundle, IncompleteBundle

LONG = os.environ.get("PEERSYNC_LONG") == "1"
SIGNER = crypto.SigningKey.from_bytes(bytes(range(32)))
AUTHOR = "A" * 26
STORE = "B" * 26
KEY = bytes(32)


def _read(raw: bytes) -> None:
    """What the engine does with a bundle file: open it, then validate every record."""
    _, records = bundle.open_bundle(raw, store_id=STORE, author=AUTHOR, seq=1, author_key=SIGNER.public_bytes(),
                                    keys={0: KEY})
    for r in records:
        check_record(r)


def _sealed_payload(payload: bytes, declared: int | None = None) -> bytes:
    """A validly signed and sealed bundle around an arbitrary payload (a malicious member's)."""
    import zstandard

    compressed = zstandard.ZstdCompressor().compress(payload)
    nonce = bytes(12)
    header = bundle.Header(STORE, AUTHOR, 0, 1, len(payload) if declared is None else declared,
                           len(compressed) + crypto.TAG_BYTES, nonce)
    head = header.pack()
    ct = crypto.seal(KEY, nonce, compressed, head)
    return head + ct + SIGNER.sign(bundle.signed_message(head, ct))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
metas = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from(["put", "part", "delete", "mkdir", "rename", "snapshot", ""]) | st.text(max_size=5),
        "path": st.text(max_size=40) | json_values,
        "vector": st.dictionaries(st.text(max_size=30), st.integers(), max_size=3) | json_values,
        "by": st.sampled_from(["A" * 26, "not-a-peer"]) | json_values,
        "hash": st.sampled_from(["0" * 64, "xyz"]) | json_values,
        "size": st.integers() | json_values,
        "mtime_ns": st.integers() | json_values,
        "mode": st.sampled_from([0o644, 0o755, 0o777]) | json_values,
        "content": st.sampled_from(["inline", "parts", "ref", "bogus"]) | json_values,
        "kind": st.sampled_from(["file", "dir", "link"]) | json_values,
        "offset": st.integers() | json_values,
        "final": st.booleans() | json_values,
        "from": st.text(max_size=40) | json_values,
    },
)


def _fuzz(n: int):  # type: ignore[no-untyped-def]
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_raw(raw: bytes) -> None:
    try:
        _read(raw)
    except (BadBundle, IncompleteBundle):
        pass


def _check_records(items: list[tuple[dict[str, object], bytes]]) -> None:
    payload = b"".join(Record(m, d).encode() for m, d in items)
    try:
        _read(_sealed_payload(payload))
    except BadBundle:
        pass


def _check_payload(payload: bytes, declared_delta: int) -> None:
    try:
        _read(_sealed_payload(payload, max(0, len(payload) + declared_delta)))
    except BadBundle:
        pass


@_fuzz(300)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_reader(raw: bytes) -> None:
    _check_raw(raw)


@_fuzz(300)
@given(st.lists(st.tuples(metas, st.binary(max_size=64)), max_size=5))
def test_a_members_arbitrary_records_never_crash_the_reader(items: list[tuple[dict[str, object], bytes]]) -> None:
    _check_records(items)


@_fuzz(200)
@given(st.binary(max_size=400), st.integers(min_value=-50, max_value=50))
def test_a_members_arbitrary_payload_bytes_never_crash_the_reader(payload: bytes, declared_delta: int) -> None:
    _check_payload(payload, declared_delta)


def test_a_members_hostile_json_is_rejected() -> None:
    deep = b"[" * 20_000 + b"]" * 20_000
    for meta in (deep, b'{"op": "put", "path": "' + b"a" * 70_000 + b'"}', json.dumps([1, 2]).encode()):
        payload = bundle.RECORD_META.pack(len(meta)) + meta + bundle.RECORD_DATA.pack(0)
        with pytest.raises(BadBundle):
            _read(_sealed_payload(payload))


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="the long fuzz runs with PEERSYNC_LONG=1")
@_fuzz(20_000)
@given(st.binary(max_size=2000))
def test_long_fuzz_arbitrary_bytes(raw: bytes) -> None:
    _check_raw(raw)


@pytest.mark.slow
@pytest.mark.skipif(not LONG, reason="the long fuzz runs with PEERSYNC_LONG=1")
@_fuzz(20_000)
@given(st.lists(st.tuples(metas, st.binary(max_size=256)), max_size=8))
def test_long_fuzz_members_records(items: list[tuple[dict[str, object], bytes]]) -> None:
    _check_records(items)
