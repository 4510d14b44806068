"""Test-side tool: craft bundles as a given peer, with the package's own public pieces.

A forged bundle is what a trusted-but-hostile peer (or anyone holding the
store secret and a key) could drop into the relay. Every helper here uses
only the real format code (``peersync.bundle``), the real key derivation
(``peersync.store``) and the real identities in a peer's state folder, so a
bundle made by :func:`forge_bundle` with no overrides is byte-for-byte the
kind of bundle ``peersync sync`` itself publishes.

Records follow what ``peersync.engine.Engine._records`` produces::

    put     path vector by hash size mtime_ns mode content(inline|parts|ref) [from]   + data
    delete  path vector by kind(file|dir) hash mtime_ns
    mkdir   path vector by
    part    path hash offset final                                               + data
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
from pathlib import Path
from typing import Any

import zstandard

from peersync import bundle, crypto
from peersync.bundle import HEADER_SIZE, Header, Record
from peersync.relay import Relay, bundle_name
from peersync.state import Identity, State, StoreConfig
from peersync.store import bundle_key, roster_key

# Counters far above anything a real peer's clock reaches in a test, so a
# forged change dominates whatever the receiver holds for that path.
_CLOCK = itertools.count(1_000_000_000)


# -- who and where --------------------------------------------------------------------


def state_of(home: Path) -> State:
    return State(Path(home))


def identity(home: Path) -> Identity:
    """The peer identity kept in the state folder ``home``."""
    return state_of(home).identity()


def peer_id(peer: Any) -> str:
    return identity(peer.home).peer_id


def store_config(peer: Any, name: str | None = None) -> StoreConfig:
    """The peer's store named ``name`` (its only/first store when None)."""
    stores = state_of(peer.home).stores()
    if name is None:
        return stores[0]
    return next(s for s in stores if s.name == name)


def store_id_of(peer: Any, name: str | None = None) -> str:
    return store_config(peer, name).id


def secret(peer: Any, name: str | None = None) -> bytes:
    return state_of(peer.home).store_secret(store_id_of(peer, name))


def store_key(peer: Any, epoch: int = 0, name: str | None = None) -> bytes:
    """The bundle key of the peer's store (what every member holds)."""
    return bundle_key(secret(peer, name), epoch)


def store_roster_key(peer: Any, name: str | None = None) -> bytes:
    return roster_key(secret(peer, name))


def relay(peer: Any, name: str | None = None) -> Relay:
    """The store's relay as this peer's machine sees it."""
    cfg = store_config(peer, name)
    return Relay(Path(cfg.relay), cfg.id)


def bundles_dir(peer: Any, folder_of: str | None = None) -> Path:
    """``<relay>/<store>/peers/<id>/bundles`` in ``peer``'s relay; ``folder_of`` defaults to the peer's own id."""
    return relay(peer).bundles_dir(folder_of or peer_id(peer))


def bundle_path(peer: Any, seq: int, folder_of: str | None = None) -> Path:
    return bundles_dir(peer, folder_of) / bundle_name(seq)


def next_seq(peer: Any, folder_of: str | None = None) -> int:
    """The next free sequence number in that folder (what the author would use next)."""
    return relay(peer).next_seq(folder_of or peer_id(peer))


def quarantined(peer: Any) -> list[Path]:
    """Files the peer has set aside in its quarantine folder."""
    q = state_of(peer.home).store_dir(store_id_of(peer)) / "quarantine"
    return sorted(q.iterdir()) if q.is_dir() else []


# -- records ------------------------------------------------------------------------------


def clock() -> int:
    return next(_CLOCK)


def put(author: str, path: str, data: bytes | str, *, vector: dict[str, int] | None = None,
        mode: int = 0o644, mtime_ns: int | None = None) -> Record:
    """An inline put, as ``_records`` makes for a small file."""
    if isinstance(data, str):
        data = data.encode()
    return Record({
        "op": "put", "hash": hashlib.sha256(data).hexdigest(), "size": len(data),
        "mtime_ns": time.time_ns() if mtime_ns is None else mtime_ns, "mode": mode,
        "path": path, "vector": vector or {author: clock()}, "by": author, "content": "inline",
    }, data)


def ref_put(author: str, path: str, digest: str, size: int, source: str, *,
            vector: dict[str, int] | None = None) -> Record:
    """A put whose content the receiver is expected to have already (a rename from ``source``)."""
    return Record({
        "op": "put", "hash": digest, "size": size, "mtime_ns": time.time_ns(), "mode": 0o644,
        "path": path, "vector": vector or {author: clock()}, "by": author, "content": "ref", "from": source,
    })


def delete(author: str, path: str, *, kind: str = "file", digest: str = "",
           vector: dict[str, int] | None = None) -> Record:
    return Record({"op": "delete", "kind": kind, "hash": digest, "mtime_ns": time.time_ns(), "path": path,
                   "vector": vector or {author: clock()}, "by": author})


def mkdir(author: str, path: str, *, vector: dict[str, int] | None = None) -> Record:
    return Record({"op": "mkdir", "path": path, "vector": vector or {author: clock()}, "by": author})


def part(path: str, digest: str, offset: int, data: bytes, final: bool) -> Record:
    return Record({"op": "part", "path": path, "hash": digest, "offset": offset, "final": final}, data)


# -- bundles ---------------------------------------------------------------------------------


def forge_bytes(peer: Any, records: list[Record], *, seq: int | None = None, store_id: str | None = None,
                author_home: Path | None = None, claim_author: str | None = None, key: bytes | None = None,
                epoch: int = 0, folder_of: str | None = None) -> bytes:
    """A sealed bundle, by default exactly as ``peer`` would publish it as its next bundle.

    ``author_home``: whose identity signs (default ``peer.home``); ``claim_author``:
    the author written in the header (default the signer); ``store_id``: the store
    written in the header; ``key``: the sealing key (default the store's).
    """
    signer = identity(Path(author_home) if author_home else peer.home)
    return bundle.seal(
        records,
        store_id=store_id or store_id_of(peer),
        author=claim_author or signer.peer_id,
        epoch=epoch,
        seq=next_seq(peer, folder_of) if seq is None else seq,
        key=store_key(peer) if key is None else key,
        signer=signer.key,
    )


def write_raw(peer: Any, seq: int, data: bytes, *, folder_of: str | None = None) -> Path:
    """Put ``data`` at ``peers/<folder_of or peer>/bundles/<seq>.psb`` in ``peer``'s relay."""
    folder = bundles_dir(peer, folder_of)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / bundle_name(seq)
    target.write_bytes(data)
    return target


def forge_bundle(peer: Any, records: list[Record], seq: int | None = None, store_id: str | None = None,
                 author_home: Path | None = None, key: bytes | None = None, *, claim_author: str | None = None,
                 epoch: int = 0, folder_of: str | None = None) -> Path:
    """Seal ``records`` (see :func:`forge_bytes`) and write the bundle into ``peer``'s own relay folder
    (or the folder of ``folder_of``), at the next free sequence unless ``seq`` is given."""
    if seq is None:
        seq = next_seq(peer, folder_of)
    data = forge_bytes(peer, records, seq=seq, store_id=store_id, author_home=author_home,
                       claim_author=claim_author, key=key, epoch=epoch, folder_of=folder_of)
    return write_raw(peer, seq, data, folder_of=folder_of)


def seal_raw_payload(peer: Any, compressed: bytes, *, seq: int, declared_payload: int,
                     key: bytes | None = None) -> bytes:
    """A bundle around an arbitrary compressed payload, with any declared payload size, sealed with
    the store key and signed by ``peer``: signature and AEAD pass, only the contents lie."""
    ident = identity(peer.home)
    nonce = crypto.random_bytes(crypto.NONCE_BYTES)
    header = Header(store_id_of(peer), ident.peer_id, 0, seq, declared_payload,
                    len(compressed) + crypto.TAG_BYTES, nonce)
    head = header.pack()
    ciphertext = crypto.seal(store_key(peer) if key is None else key, nonce, compressed, head)
    return head + ciphertext + ident.key.sign(bundle.signed_message(head, ciphertext))


def bomb(peer: Any, seq: int, *, real_bytes: int, declared: int, records: list[Record] | None = None) -> bytes:
    """A decompression bomb: a valid payload start (``records``) then ``real_bytes`` of zeros, declared
    as ``declared`` bytes, compressed in a stream so the test never holds the inflated payload."""
    cctx = zstandard.ZstdCompressor(level=3)
    out = io.BytesIO()
    with cctx.stream_writer(out, closefd=False) as w:
        if records:
            w.write(bundle.encode_payload(records))
        chunk = b"\0" * (1 << 20)
        left = real_bytes
        while left > 0:
            w.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
    return seal_raw_payload(peer, out.getvalue(), seq=seq, declared_payload=declared)


def flip_bit(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


# Byte offsets of the header fields (``bundle.HEADER``: <4sHH16s16sIQQQ12s16s).
HEADER_FIELDS = {
    "magic": 0, "version": 4, "flags": 6, "store": 8, "author": 24, "epoch": 40, "seq": 44,
    "payload_size": 52, "ciphertext_size": 60, "nonce": 68, "reserved": 80,
}
assert HEADER_SIZE == 96


def new_outsider(home: Path) -> Identity:
    """A fresh identity in its own state folder: someone who is not in the store's roster."""
    return State(Path(home)).identity(create=True)
