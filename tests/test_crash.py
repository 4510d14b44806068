"""Crash safety (DESIGN Invariant 1), proven by killing real processes with SIGKILL.

A peer is killed at random instants while it publishes or applies a large
batch. After every kill: each file in the store is byte for byte an old or a
new version (never partial), every bundle file in the relay verifies or is a
temporary name, and once the peers are let finish, the stores converge and
the index agrees with the disk. CI runs a short form; `-m slow` runs hundreds
of kill points (docs/testing.md).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Peer, tree

from peersync import bundle
from peersync.relay import BUNDLE_RE


def _versions(n_files: int, version: int) -> dict[str, bytes]:
    rng = random.Random(version)
    out = {}
    for i in range(n_files):
        size = rng.choice([1, 100, 4096, 70_000, 300_000])
        out[f"d{i % 7}/f{i:03d}.bin"] = f"v{version} {i} ".encode() + rng.randbytes(size)
    out["big.bin"] = f"v{version} big ".encode() + rng.randbytes(9_000_000)  # travels as parts
    return out


def _write_all(peer: Peer, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        peer.write(rel, data)


def _kill_during(peer: Peer, delay: float, *args: str) -> bool:
    """Start `peersync sync` and SIGKILL it after ``delay`` s; True if it was killed before finishing."""
    proc = peer.popen("sync", *args)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        return True
    finally:
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def _assert_whole(store: Path, written: dict[str, set[bytes]]) -> None:
    """Every synced file holds, byte for byte, one of the versions ever written to it."""
    for rel, data in tree(store).items():
        if data is None or Path(rel).name.startswith(".peersync-tmp-"):
            continue  # folders; temporary files a crash left (never a synced name)
        assert data in written[rel], f"{rel} holds content that was never written whole"


def _assert_relay_bundles_whole(relay: Path) -> None:
    for f in relay.rglob("*.psb"):
        if BUNDLE_RE.match(f.name):
            raw = f.read_bytes()
            header = bundle.read_header(raw)
            assert len(raw) == header.total_size, f"{f} is a partial bundle under its final name"


def _contents(store: Path) -> set[bytes]:
    """What the store's files hold (peersync's temporary files are not store files)."""
    return {v for rel, v in tree(store).items() if v and not Path(rel).name.startswith(".peersync-tmp-")}


def _timed_sync(peer: Peer) -> float:
    t0 = time.perf_counter()
    peer.sync()
    return time.perf_counter() - t0


def _crash_campaign(make_peers, kills: int, seed: int) -> None:
    alice, bob = make_peers(2)
    written: dict[str, set[bytes]] = {}

    def new_version(k: int) -> None:
        files = _versions(40, k)
        for rel, data in files.items():
            written.setdefault(rel, set()).add(data)
        _write_all(alice, files)

    new_version(1)
    span = _timed_sync(alice)
    span = max(span, _timed_sync(bob))
    rng = random.Random(seed)
    killed = 0
    # The sender dies while scanning, packing and publishing a fresh batch each time.
    for k in range(2, 2 + kills):
        new_version(k)
        killed += _kill_during(alice, rng.uniform(0.1, span))
        _assert_relay_bundles_whole(alice.relay)
        _assert_whole(alice.store, written)
    # The receiver dies while fetching, verifying and applying a fresh batch each time.
    ever_on_bob: set[bytes] = set()
    for k in range(2 + kills, 2 + 2 * kills):
        new_version(k)
        alice.sync()
        ever_on_bob |= _contents(bob.store)
        killed += _kill_during(bob, rng.uniform(0.1, span))
        _assert_whole(bob.store, written)
        ever_on_bob |= _contents(bob.store)
    assert killed >= kills, "most kills must land while a sync is still running, or this proves nothing"
    bob.sync()
    alice.sync()
    bob.sync()
    assert tree(bob.store) == tree(alice.store)
    assert {k: v for k, v in tree(bob.store).items() if v is not None} == _versions(40, 1 + 2 * kills)
    # The index agrees with the disk: a fresh scan finds nothing to send on either side.
    for peer in (alice, bob):
        assert "0 changes to send" in peer.cli("queue", check=0).out
    # Nothing peersync replaced on bob is lost: it is in his store or his versions archive.
    kept = _contents(bob.store)
    archived = {f.name for f in (bob.home / "versions").rglob("*") if f.is_file()}
    lost = [v[:20] for v in ever_on_bob if v not in kept and hashlib.sha256(v).hexdigest() not in archived]
    assert not lost, f"{len(lost)} contents that were on bob's disk are gone: {lost[:3]}"


def test_kill_9_during_publish_and_apply_loses_nothing(make_peers):
    """Laptops lose power mid-sync: files stay old or new, nothing is lost, and everything converges.

    50 kill points: 25 while publishing, 25 while applying.
    """
    _crash_campaign(make_peers, kills=25, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(20))
def test_kill_9_long_form(make_peers, seed):
    """The long form: 20 campaigns of 25 kills on each side (see docs/testing.md)."""
    _crash_campaign(make_peers, kills=25, seed=seed)


def test_kill_9_during_conflict_keeps_both_sides(make_peers):
    """A crash while a concurrent edit is resolved still leaves both versions somewhere."""
    alice, bob = make_peers(2)
    alice.write("quote.txt", "base")
    alice.sync()
    bob.sync()
    alice.write("quote.txt", "alice's edit " * 1000)
    bob.write("quote.txt", "bob's edit " * 1000)
    os.utime(alice.store / "quote.txt", ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    alice.sync()
    rng = random.Random(7)
    for _ in range(5):
        _kill_during(bob, rng.uniform(0.15, 0.8))
    bob.sync()
    alice.sync()
    bob.sync()
    assert tree(alice.store) == tree(bob.store)
    contents = {v for v in tree(bob.store).values() if v is not None}
    assert ("alice's edit " * 1000).encode() in contents
    assert ("bob's edit " * 1000).encode() in contents


def test_kill_9_while_a_peer_joins_with_a_copy_of_the_files(make_peers):
    """A second PC joins holding a copy of the folder; both peers then adopt each other's identical
    versions, whose rows are committed once per batch rather than once per file. Killed at random
    instants on both sides, they still converge with no conflict copy, and a scan afterwards finds
    nothing to send: the disk (mtimes included) and the index agree."""
    alice, bob = make_peers(2, join=False)
    rng = random.Random(11)
    files = {f"d{i % 9}/f{i:03d}.txt": f"file {i} ".encode() + rng.randbytes(rng.choice([10, 3000]))
             for i in range(300)}
    t0 = 1_700_000_000
    for i, (rel, data) in enumerate(files.items()):
        os.utime(alice.write(rel, data), (t0, t0))
        later = t0 + (3600 if i % 2 else -3600)  # half of bob's copies are newer, half older
        os.utime(bob.write(rel, data), (later, later))
    span = _timed_sync(alice)
    code = alice.cli("invite", check=0).last_line
    bob.cli("join", code, str(bob.store), "--relay", str(bob.relay), check=0)
    killed = 0
    for _ in range(5):
        killed += _kill_during(bob, rng.uniform(0.1, 2 * span))
        _assert_whole(bob.store, {rel: {data} for rel, data in files.items()})
    bob.sync()
    for _ in range(5):
        killed += _kill_during(alice, rng.uniform(0.1, 2 * span))
        _assert_whole(alice.store, {rel: {data} for rel, data in files.items()})
    assert killed >= 5, "most kills must land while a sync is still running, or this proves nothing"
    for _ in range(2):
        alice.sync()
        bob.sync()
    assert tree(alice.store) == tree(bob.store)
    assert {k: v for k, v in tree(bob.store).items() if v is not None} == files
    for peer in (alice, bob):
        assert "0 changes to send" in peer.cli("queue", check=0).out


def _kill_when_queued(peer: Peer, count: int, folders: list[Path], timeout: float = 60) -> bool:
    """Start `peersync sync` and SIGKILL it once ``count`` files wait under temporary names in
    ``folders`` (written, not yet renamed into place); True if that happened before it finished."""
    proc = peer.popen("sync")
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            waiting = sum(1 for d in folders if d.is_dir()
                          for name in os.listdir(d) if name.startswith(".peersync-tmp-"))
            if waiting >= count:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            time.sleep(0.002)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def test_kill_9_while_the_files_of_several_bundles_wait_to_be_put_in_place(make_peers):
    """Bob puts the files of consecutive bundles in place together and marks those bundles applied
    in the commit that records them. Killed while the files of several bundles wait under temporary
    names, he must not have marked any of them: once let finish, he holds every file. (Were a bundle
    marked as it is read, its files would be lost with the kill and never read again.)"""
    alice, bob = make_peers(2)
    alice.cli("config", "bundle_max_bytes", "65536", check=0)  # about 20 files a bundle
    rng = random.Random(5)
    files = {f"d{i % 8}/f{i:04d}.bin": f"{i} ".encode() + rng.randbytes(3000) for i in range(1200)}
    _write_all(alice, files)
    alice.sync()
    assert len(list(alice.relay.rglob("*.psb"))) > 30
    folders = [bob.store / f"d{i}" for i in range(8)]
    killed = [_kill_when_queued(bob, count, folders) for count in (100, 400, 900)]
    assert sum(killed) >= 2, "the kills must land while files wait, or this proves nothing"
    _assert_whole(bob.store, {rel: {data} for rel, data in files.items()})
    bob.sync()
    assert {k: v for k, v in tree(bob.store).items() if v is not None} == files
    assert "0 changes to send" in bob.cli("queue", check=0).out
