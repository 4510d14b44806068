"""Issue 6, workload 3: a change inside a large file travels as a delta against the previous content.

Random content, so zstd cannot shrink a whole file below its size: relay bytes far below the
file size prove the file was not resent.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import forge
import pytest
from conftest import tree

from peersync import delta

MIB = 1024 * 1024
SIZE = 24 * MIB


def relay_bytes(peer) -> int:  # type: ignore[no-untyped-def]
    folder = forge.bundles_dir(peer)
    return sum(p.stat().st_size for p in folder.iterdir()) if folder.exists() else 0


def corrections(peer) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    (store,) = json.loads(peer.cli("status", "--json", check=0).out)["stores"]
    return store["corrections"]  # type: ignore[no-any-return]


def shared_big_file(make_peers, n: int = 2):  # type: ignore[no-untyped-def]
    peers = make_peers(n)
    content = random.Random(6).randbytes(SIZE)
    peers[0].write("video/raw.bin", content)
    peers[0].sync()
    for p in peers[1:]:
        p.sync()
        assert p.read("video/raw.bin") == content
    return peers, content


def test_overwrite_and_insertion_in_a_large_file_travel_as_deltas(make_peers):
    """1 MiB overwritten in the middle, then 1 MiB inserted (shifting the rest): each reaches the
    other peer byte-identical while the relay grows by about the change, not by the file."""
    (alice, bob), content = shared_big_file(make_peers)
    rng = random.Random(7)

    changed = content[:SIZE // 2] + rng.randbytes(MIB) + content[SIZE // 2 + MIB:]
    before = relay_bytes(alice)
    alice.write("video/raw.bin", changed)
    alice.sync()
    sent = relay_bytes(alice) - before
    assert sent < 2 * MIB, f"{sent} bytes in the relay for 1 MiB changed in a {SIZE}-byte file"
    bob.sync()
    assert bob.read("video/raw.bin") == changed

    inserted = changed[:5 * MIB] + rng.randbytes(MIB) + changed[5 * MIB:]
    before = relay_bytes(alice)
    alice.write("video/raw.bin", inserted)
    alice.sync()
    sent = relay_bytes(alice) - before
    assert sent < 2 * MIB, f"{sent} bytes in the relay for 1 MiB inserted in a {SIZE}-byte file"
    bob.sync()
    assert bob.read("video/raw.bin") == inserted

    # bob made the map of what he received: his own change goes back as a delta too
    back = inserted[:-MIB] + rng.randbytes(MIB)
    before = relay_bytes(bob)
    bob.write("video/raw.bin", back)
    bob.sync()
    assert relay_bytes(bob) - before < 2 * MIB
    alice.sync()
    assert alice.read("video/raw.bin") == back
    assert tree(alice.store) == tree(bob.store)


def test_a_receiver_whose_base_does_not_match_falls_back_to_a_full_copy(make_peers):
    """bob's copy changed behind the index's back (same size and mtime: the scan trusts them), so the
    delta does not rebuild the announced content: bob asks for the whole file and converges."""
    (alice, bob), content = shared_big_file(make_peers)
    target = bob.store / "video/raw.bin"
    st = target.stat()
    with open(target, "r+b") as f:
        f.seek(SIZE // 2 + 100)
        f.write(b"bit rot")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))

    changed = content[:MIB] + b"edited by alice" + content[MIB + 15:]
    alice.write("video/raw.bin", changed)
    alice.sync()
    for _ in range(3):
        bob.sync(check=None)
        alice.sync(check=None)
    bob.sync(check=None)
    assert bob.read("video/raw.bin") == changed
    assert any("full copy" in c["action"] for c in corrections(bob)), corrections(bob)


def test_concurrent_edits_of_a_large_file_lose_nothing(make_peers):
    """Both edit the large file before syncing: whoever wins, the other's delta has no base at the
    loser, and both versions end up on both peers (one as a conflict copy)."""
    (alice, bob), content = shared_big_file(make_peers)
    mine = content[:MIB] + b"alice" + content[MIB + 5:]
    theirs = content[:3 * MIB] + b"bob" + content[3 * MIB + 3:]
    alice.write("video/raw.bin", mine)
    bob.write("video/raw.bin", theirs)
    for _ in range(4):
        alice.sync(check=None)
        bob.sync(check=None)
    a, b = tree(alice.store), tree(bob.store)
    assert a == b
    assert mine in a.values() and theirs in a.values()
    # where the remote side won, its delta had no base there (a local edit is not archived)
    assert any("full copy" in c["action"] for p in (alice, bob) for c in corrections(p))


# -- hostile delta records -----------------------------------------------------------------------


def delta_put(author: str, path: str, base_content: bytes, ops: list, data: bytes, size: int,  # type: ignore[type-arg]
              **extra: object) -> forge.Record:
    import hashlib
    meta = {"op": "put", "hash": "ab" * 32, "size": size, "mtime_ns": 1,
            "mode": 0o644, "path": path, "vector": {author: forge.clock()}, "by": author, "content": "delta",
            "base": hashlib.sha256(base_content).hexdigest(), "base_size": len(base_content), "ops": ops}
    meta.update(extra)
    return forge.Record(meta, data)


@pytest.mark.parametrize("ops, data, size, extra", [
    ([[0, 11]], b"", 11, {}),                      # copies past the end of the 10-byte base
    ([[-1, 5]], b"", 5, {}),                       # negative offset
    ([[0, 0]], b"", 0, {}),                        # empty op
    ([[4]], b"abc", 4, {}),                        # literal sizes do not match the data
    ([[3]], b"abc", 9, {}),                        # ops do not add up to the size
    ([[0, 1, 2]], b"", 1, {}),                     # not an op
    ([[True]], b"a", 1, {}),                       # a boolean is no length
    ([[0, 2**62]], b"", 2**62, {}),               # huge
    ([[1]] * (delta.MAX_OPS + 1), b"a" * (delta.MAX_OPS + 1), delta.MAX_OPS + 1, {}),  # too many ops
    ("[[1]]", b"a", 1, {}),                        # ops not a list
    ([[1]], b"a", 1, {"base": "nothex"}),         # bad base hash
    ([[1]], b"a", 1, {"base_size": -1}),          # bad base size
])
def test_hostile_delta_records_are_rejected(make_peers, ops, data, size, extra):
    alice, bob = make_peers(2)
    a = forge.peer_id(alice)
    forge.forge_bundle(alice, [delta_put(a, "victim.bin", b"0123456789", ops, data, size, **extra)], seq=1)
    before = tree(bob.store)
    bob.cli("config", "bundle_grace_seconds", "0", check=0)
    result = bob.sync(check=None)
    assert result.code == 1, result.out
    assert tree(bob.store) == before


def test_a_delta_record_passes_check_record_when_well_formed() -> None:
    """The reader accepts what the writer makes (the hostile cases above fail for their reason)."""
    from peersync.apply import check_record
    rec = delta_put("A" * 26, "ok.bin", b"0123456789", [[0, 4], [2], [6, 4]], b"ab", 10)
    assert check_record(rec)["content"] == "delta"


def test_plan_rebuilds_an_insertion(tmp_path: Path) -> None:
    base = random.Random(1).randbytes(4 * MIB)
    new = base[:MIB] + b"inserted" * 1000 + base[MIB:]
    (tmp_path / "base").write_bytes(base)
    (tmp_path / "new").write_bytes(new)
    _, _, base_map = delta.hash_and_map(tmp_path / "base")
    _, _, new_map = delta.hash_and_map(tmp_path / "new")
    ops, literals = delta.plan(base_map, new_map)
    data = delta.literal_bytes(tmp_path / "new", literals)
    assert len(data) < MIB // 2
    delta.check_ops(ops, len(base), len(new), len(data))
    assert _rebuild(tmp_path, base, ops, data, base_map)[1:] == (len(new), new_map)
    assert (tmp_path / "out").read_bytes() == new


def _rebuild(tmp_path: Path, base: bytes, ops: list, data: bytes, base_map: bytes | None):  # type: ignore[no-untyped-def,type-arg]
    (tmp_path / "base").write_bytes(base)
    out_path = tmp_path / "out"
    out_path.unlink(missing_ok=True)
    src = os.open(tmp_path / "base", os.O_RDONLY)
    out = os.open(out_path, os.O_RDWR | os.O_CREAT | os.O_EXCL)
    try:
        return delta.rebuild(src, ops, data, out, base_map)
    finally:
        os.close(src)
        os.close(out)


def _edits(rng: random.Random, base: bytes) -> list[bytes]:
    """Overwrites, insertions, deletions, at the start, the middle and the end, and appends."""
    n = len(base)
    junk = rng.randbytes
    return [
        base[:n // 2] + junk(MIB) + base[n // 2 + MIB:],
        base[:3 * MIB] + junk(70_000) + base[3 * MIB:],
        base[:5 * MIB + 17] + base[5 * MIB + 300_017:],
        junk(5) + base,
        base[:-1],
        base[:-200_000] + junk(100),
        base + junk(9),
        base + base[:MIB],
        base[:MIB] + base[2 * MIB:3 * MIB] + junk(40_000) + base[MIB:2 * MIB],
        junk(1000),
    ]


def test_a_rebuilt_files_derived_chunk_map_is_the_map_of_the_whole_file(tmp_path: Path) -> None:
    """The receiver derives the new content's chunk map from the base's, chunking only around the
    literals; a later delta is planned against it, so it must be exactly what chunking the whole
    rebuilt file gives: every edit shape, including ones that end at the base's last (short) chunk."""
    rng = random.Random(7)
    base = rng.randbytes(8 * MIB)
    (tmp_path / "b").write_bytes(base)
    _, _, base_map = delta.hash_and_map(tmp_path / "b")
    for new in _edits(rng, base):
        (tmp_path / "n").write_bytes(new)
        digest, size, new_map = delta.hash_and_map(tmp_path / "n")
        ops, literals = delta.plan(base_map, new_map)
        data = delta.literal_bytes(tmp_path / "n", literals)
        assert _rebuild(tmp_path, base, ops, data, base_map) == (digest, size, new_map)
        assert (tmp_path / "out").read_bytes() == new
        assert _rebuild(tmp_path, base, ops, data, None) == (digest, size, new_map)


def test_a_derived_chunk_map_holds_for_ops_no_planner_would_write(tmp_path: Path) -> None:
    """Copies from offsets that are not cuts of the base, out of order, split in two: still exact."""
    rng = random.Random(8)
    base = rng.randbytes(4 * MIB)
    (tmp_path / "b").write_bytes(base)
    _, _, base_map = delta.hash_and_map(tmp_path / "b")
    ops = [[1234, MIB], [2 * MIB, 777_000], [2 * MIB + 777_000, MIB], [5], [0, 4 * MIB], [3 * MIB, MIB]]
    new = (base[1234:1234 + MIB] + base[2 * MIB:2 * MIB + 777_000 + MIB] + b"hello" + base + base[3 * MIB:])
    (tmp_path / "n").write_bytes(new)
    expected = delta.hash_and_map(tmp_path / "n")
    assert _rebuild(tmp_path, base, ops, b"hello", base_map) == expected
    assert (tmp_path / "out").read_bytes() == new


def test_rebuild_refuses_a_base_shorter_than_its_copies(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        _rebuild(tmp_path, b"x" * 100, [[50, 51]], b"", None)


def test_the_windowed_scan_map_is_the_plain_map(tmp_path: Path) -> None:
    """hash_and_map reads a file in windows (memory stays a window whatever the file's size) and cuts
    chunks window by window; the map must be the whole content's, wherever the windows end."""
    import hashlib
    rng = random.Random(9)
    for n in (0, 1, 20_000, 600_000, 5 * MIB + 3):
        content = rng.randbytes(n)
        (tmp_path / "f").write_bytes(content)
        expected = (hashlib.sha256(content).hexdigest(), n, delta.map_of(memoryview(content)) if n else b"")
        for window in (delta.MAX_CHUNK + 1, MIB, 3 * MIB + 17, 0):
            assert delta.hash_and_map(tmp_path / "f", window) == expected, (n, window)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_a_rebuild_starts_writing_back_behind_itself_on_linux(tmp_path: Path) -> None:
    """A rebuilt large file is written to disk segment by segment while later ones are copied
    (sync_file_range), so the fsync that makes it durable does not wait for all of it at once, and
    the copy is not held up by flushes either (issue 6, workload 3: 1 GiB applied in about the time
    of one durable write). The seam must find the call, or it silently does nothing."""
    from peersync import fsutil

    assert fsutil._sync_file_range is not None
    target = tmp_path / "f.bin"
    data = random.Random(2).randbytes(3 << 20)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        fsutil.start_writeback(fd, 0, len(data))
        fsutil.start_writeback(fd, len(data), 0)  # nothing to do
        os.fsync(fd)
    finally:
        os.close(fd)
    assert target.read_bytes() == data
