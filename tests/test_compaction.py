"""A relay that stays small: acknowledged bundles go, snapshots let late and long-absent peers catch up."""

from __future__ import annotations

import json
import random

from conftest import tree


def _relay_bytes(relay):
    return sum(f.stat().st_size for f in relay.rglob("*") if f.is_file())


def _store_bytes(store):
    return sum(len(v) for v in tree(store).values() if v)


def _bundles(relay):
    return sorted(relay.rglob("bundles/*.psb"))


def _configure(*peers, **settings):
    """Set settings on each peer. Tests of catching up from a snapshot in a store that only grows set
    ``snapshot_ratio`` low: by default no snapshot is worth writing until overwritten content piles up."""
    for p in peers:
        for key, value in settings.items():
            p.cli("config", key, str(value), check=0)


def test_churn_keeps_the_relay_near_the_store_size(make_peers):
    """Thousands of edits over many cycles: the relay holds about one copy of the store, not its history."""
    alice, bob = make_peers(2)
    _configure(alice, bob, snapshot_min_bytes=20_000)
    rng = random.Random(5)
    edits = 0
    for _cycle in range(25):
        for _ in range(40):
            who = rng.choice((alice, bob))
            who.write(f"f{rng.randrange(30):02d}.txt", rng.randbytes(rng.randrange(200, 3000)))
            edits += 1
        alice.sync()
        bob.sync()
    for _ in range(2):
        alice.sync()
        bob.sync()
    assert edits >= 1000
    assert tree(alice.store) == tree(bob.store)
    store = _store_bytes(alice.store)
    # Everything both have applied is gone but for what the latest snapshot holds (about one store),
    # plus bundles not yet acknowledged, plus headers, peer records and heartbeats.
    assert _relay_bytes(alice.relay) <= 2 * store + 64_000, (_relay_bytes(alice.relay), store)
    # About 54 bundles were published. Those a snapshot covers are gone; what stays is less than one
    # store's worth of acknowledged ones (snapshot_ratio 2) and the last unacknowledged ones.
    remaining = _bundles(alice.relay)
    assert len(remaining) <= 25, len(remaining)
    assert min(int(b.stem) for b in remaining) > 1


def test_bundles_stay_until_every_peer_has_applied_them(make_peers):
    """A laptop that has not synced yet still finds every bundle it needs."""
    alice, bob, carol = make_peers(3)
    _configure(alice, bob, carol, snapshot_min_bytes=1000, snapshot_ratio=0.1)
    for round_ in range(5):
        alice.write(f"a{round_}.txt", f"round {round_} " * 200)
        alice.sync()
        bob.sync()
    # carol never synced: alice's bundles are all still there for her.
    alice_id = json.loads((alice.home / "identity.json").read_text())["peer_id"]
    assert len([b for b in _bundles(alice.relay) if f"/{alice_id}/" in str(b)]) >= 5
    carol.sync()
    assert tree(carol.store) == tree(alice.store)
    for _ in range(2):
        for p in (alice, bob, carol):
            p.sync()
    assert len(_bundles(alice.relay)) <= 3


def test_a_late_joiner_bootstraps_from_a_snapshot(make_peers, tmp_path):
    """A peer that joins after the early bundles were removed catches up from a snapshot."""
    alice, bob = make_peers(2)
    _configure(alice, bob, snapshot_min_bytes=1000, snapshot_ratio=0.1)
    for i in range(10):
        alice.write(f"doc{i}.txt", f"version {i} " * 300)
        bob.write(f"sub/b{i}.txt", f"bob {i} " * 300)
        alice.sync()
        bob.sync()
    alice.sync()
    bob.sync()
    assert list(alice.relay.rglob("snapshots/*/manifest.psb")), "a snapshot was written"
    first_seqs = [int(b.stem) for b in _bundles(alice.relay)]
    assert not first_seqs or min(first_seqs) > 1, "early bundles were removed"

    from conftest import Peer

    code = alice.cli("invite", check=0).last_line
    carol = Peer("carol", tmp_path / "home-carol", tmp_path / "carol", alice.relay)
    carol.cli("join", code, str(carol.store), "--relay", str(carol.relay), check=0)
    carol.sync()
    assert tree(carol.store) == tree(alice.store) == tree(bob.store)
    assert "caught up from it" in carol.cli("errors", check=0).out


def test_a_peer_back_after_a_long_absence_catches_up_and_keeps_its_edits(make_peers):
    """A laptop off for months: its missed bundles are gone; a snapshot brings it back, its edits survive."""
    alice, bob = make_peers(2)
    alice.write("quote.txt", "v1")
    alice.sync()
    bob.sync()
    # Bob goes away. Alice stops waiting for him at once (normally after 30 days).
    _configure(alice, silent_peer_seconds=0, snapshot_min_bytes=1000, snapshot_ratio=0.1)
    bob.write("offline-notes.txt", "written on the plane")
    for i in range(6):
        alice.write("quote.txt", f"v{i + 2} " * 400)
        alice.write(f"new{i}.txt", f"new {i} " * 400)
        alice.sync()
    alice.sync()
    seqs = [int(b.stem) for b in alice.relay.rglob("bundles/*.psb")]
    assert not seqs or min(seqs) > 1, "the bundles bob missed were removed"
    bob.sync()
    alice.sync()
    bob.sync()
    assert tree(alice.store) == tree(bob.store)
    assert alice.read("offline-notes.txt") == b"written on the plane"
    assert bob.read("quote.txt") == ("v7 " * 400).encode()


def test_compaction_never_removes_what_a_snapshot_does_not_cover(make_peers):
    """Without any snapshot, acknowledged bundles stay: a future joiner would need them."""
    alice, bob = make_peers(2)
    _configure(alice, bob, snapshot_min_bytes=10**12)  # never due
    for i in range(4):
        alice.write(f"x{i}.txt", "x" * 100)
        alice.sync()
        bob.sync()
    alice.sync()
    assert not list(alice.relay.rglob("snapshots/*/manifest.psb"))
    seqs = sorted(int(b.stem) for b in alice.relay.rglob("bundles/*.psb"))
    assert seqs[:1] == [1]
    state = json.loads((alice.home / "config.json").read_text())
    assert state["settings"]["snapshot_min_bytes"] == 10**12


def test_a_late_joiner_learns_the_versions_a_conflict_left(make_peers, tmp_path):
    """Alice's and bob's concurrent edits of a.txt: bob's (newer) is on disk everywhere, alice's is kept as a
    conflict copy and every peer still knows her version. Carol joins from a snapshot, then edits a.txt;
    her save carries an older date than alice's version (a file copied in with its date). Her edit
    supersedes everything she saw, so a.txt must be hers on every peer. Had the snapshot left out
    alice's version, carol's edit would be concurrent with it on alice and bob, and lose to its newer date
    there while winning on carol: the stores would stay different for good."""
    import os

    from conftest import Peer

    alice, bob = make_peers(2)
    _configure(alice, bob, snapshot_min_bytes=1000, snapshot_ratio=0.1)
    t0 = 1_700_000_000
    os.utime(alice.write("a.txt", "alice"), (t0 + 5, t0 + 5))
    os.utime(bob.write("a.txt", "bob"), (t0 + 10, t0 + 10))
    alice.sync()
    bob.sync()
    alice.sync()
    assert alice.read("a.txt") == bob.read("a.txt") == b"bob"
    for i in range(6):  # enough traffic for a snapshot, and for the early bundles to be removed
        alice.write(f"doc{i}.txt", f"version {i} " * 300)
        alice.sync()
        bob.sync()
    alice.sync()
    bob.sync()
    first_seqs = [int(b.stem) for b in _bundles(alice.relay)]
    assert not first_seqs or min(first_seqs) > 1, "early bundles were removed"

    code = alice.cli("invite", check=0).last_line
    carol = Peer("carol", tmp_path / "home-carol", tmp_path / "carol", alice.relay)
    carol.cli("join", code, str(carol.store), "--relay", str(carol.relay), check=0)
    carol.sync()
    assert "caught up from it" in carol.cli("errors", check=0).out
    assert tree(carol.store) == tree(alice.store)

    os.utime(carol.write("a.txt", "carol"), (t0, t0))
    for _ in range(2):
        for p in (carol, alice, bob):
            p.sync()
    assert alice.read("a.txt") == bob.read("a.txt") == carol.read("a.txt") == b"carol"
    assert tree(alice.store) == tree(bob.store) == tree(carol.store)


def test_no_snapshot_of_what_the_same_cycle_just_published(make_peers):
    """A store alone in its relay counts its own bundles as acknowledged at once. A snapshot in the
    cycle that published them would write the same content into the relay a second time (issue 6:
    half of a 4 GiB ingest was that snapshot); it waits for a later cycle."""
    (alice,) = make_peers(1)
    _configure(alice, snapshot_min_bytes=1000, snapshot_ratio=0.1)
    alice.write("data.bin", random.Random(1).randbytes(300_000))
    alice.write("notes.txt", "notes " * 1000)
    alice.sync()
    assert not list(alice.relay.rglob("snapshots/*/*.psb"))
    assert _relay_bytes(alice.relay) < 300_000 + 64_000
    alice.sync()  # nothing new: now the pile counts, and compaction goes on as before
    assert list(alice.relay.rglob("snapshots/*/manifest.psb"))
    assert not _bundles(alice.relay), "bundles the snapshot covers were removed"


def test_a_first_full_transfer_is_not_uploaded_a_second_time(make_peers):
    """A snapshot is a full copy of the store. Right after a first transfer the relay holds one copy
    already, as bundles; a snapshot then would upload the whole store again and free nothing (issue 6:
    applying 10,000 new files spent a third of its time re-packing them, and a 1 MiB change to a 1 GiB
    file could cost a 1 GiB snapshot)."""
    alice, bob = make_peers(2)
    _configure(alice, bob, snapshot_min_bytes=1000)
    rng = random.Random(3)
    for i in range(20):
        alice.write(f"docs/f{i:02d}.bin", rng.randbytes(5000))
    for _ in range(3):
        alice.sync()
        bob.sync()
    assert tree(bob.store) == tree(alice.store)
    assert not list(alice.relay.rglob("snapshots/*/*.psb"))
    assert _relay_bytes(alice.relay) < _store_bytes(alice.store) + 64_000


def test_a_snapshot_is_written_once_overwritten_content_piles_up(make_peers):
    """The same files rewritten again and again: once the acknowledged bundles reach twice the
    store, one snapshot replaces them and the relay shrinks back to about one copy."""
    alice, bob = make_peers(2)
    _configure(alice, bob, snapshot_min_bytes=1000)
    rng = random.Random(4)

    def rewrite_all_then_sync(times: int) -> None:
        for name in (f"f{i}.bin" for i in range(10)):
            alice.write(name, rng.randbytes(4000))
        for _ in range(times):
            alice.sync()
            bob.sync()

    rewrite_all_then_sync(2)
    store = _store_bytes(alice.store)
    assert not list(alice.relay.rglob("snapshots/*/manifest.psb")), "one copy in the relay: nothing to gain"
    for _round in range(3):
        rewrite_all_then_sync(1)
    alice.sync()
    bob.sync()
    alice.sync()
    assert list(alice.relay.rglob("snapshots/*/manifest.psb")), "four copies of history: a snapshot pays"
    assert tree(bob.store) == tree(alice.store)
    assert _relay_bytes(alice.relay) <= 2 * store + 64_000, (_relay_bytes(alice.relay), store)
