"""Roster management: listing peers, and revoking a lost machine (its later bundles rejected, the key rotated)."""

from __future__ import annotations

import json

from conftest import Peer, tree


def _peer_id(peer: Peer) -> str:
    return json.loads((peer.home / "identity.json").read_text())["peer_id"]


def _sync_all(*peers: Peer) -> None:
    for p in peers:
        p.sync(check=None)


def test_peers_lists_names_machines_users_last_seen_and_acknowledgements(make_peers):
    alice, bob, carol = make_peers(3)
    alice.write("a.txt", "a")
    _sync_all(alice, bob, carol)
    out = alice.cli("peers", check=0).out
    for p in (alice, bob, carol):
        assert _peer_id(p)[:7] in out
    assert "(this peer)" in out
    assert "has applied 1 of this peer's 1 bundles" in out
    assert "last seen" in out


def test_a_removed_laptop_can_neither_write_nor_read_and_the_others_carry_on(make_peers):
    """A sales rep's laptop is stolen: the office removes it; the thief gets nothing new and changes nothing."""
    alice, bob, lost = make_peers(3)
    alice.write("quote.txt", "v1")
    _sync_all(alice, bob, lost)
    assert lost.read("quote.txt") == b"v1"

    result = alice.cli("peers", "remove", _peer_id(lost)[:7], "--yes", check=0)
    assert "Removed" in result.out
    # The thief keeps using the laptop.
    lost.write("evil.txt", "planted")
    lost.write("quote.txt", "overwritten by the thief")
    lost.sync(check=None)
    # The office and the other rep carry on, without a pause.
    alice.write("new-order.txt", "order 42")
    bob.write("bob.txt", "from bob")
    _sync_all(alice, bob, alice, bob)
    assert tree(alice.store) == tree(bob.store)
    assert not (alice.store / "evil.txt").exists() and not (bob.store / "evil.txt").exists()
    assert alice.read("quote.txt") == bob.read("quote.txt") == b"v1"
    assert "rejected its bundles" in bob.cli("errors", check=0).out
    # The lost laptop cannot read what was written after its removal.
    lost.sync(check=None)
    assert not (lost.store / "new-order.txt").exists()
    assert not (lost.store / "bob.txt").exists()
    assert "removed" in alice.cli("peers", check=0).out


def test_after_a_removal_new_peers_need_a_new_invite(make_peers, tmp_path):
    """An invite made before the key rotation no longer lets anyone in; a new one does."""
    alice, bob, lost = make_peers(3)
    old_code = alice.cli("invite", check=0).last_line
    _sync_all(alice, bob, lost)
    alice.cli("peers", "remove", _peer_id(lost), "--yes", check=0)
    alice.write("after.txt", "written after the removal")
    _sync_all(alice, bob)

    late = Peer("late", tmp_path / "home-late", tmp_path / "late", alice.relay)
    late.cli("join", old_code, str(late.store), "--relay", str(late.relay), check=0)
    late.write("late.txt", "from an old invite")
    late.sync(check=None)
    _sync_all(alice, bob)
    assert not (alice.store / "late.txt").exists()
    assert "needs a new invite" in alice.cli("status", check=0).out
    assert not (late.store / "after.txt").exists()

    new_code = alice.cli("invite", check=0).last_line
    fresh = Peer("fresh", tmp_path / "home-fresh", tmp_path / "fresh", alice.relay)
    fresh.cli("join", new_code, str(fresh.store), "--relay", str(fresh.relay), check=0)
    fresh.write("fresh.txt", "welcome")
    _sync_all(fresh, alice, bob, fresh)
    assert tree(fresh.store) == tree(alice.store) == tree(bob.store)
    assert fresh.read("after.txt") == b"written after the removal"


def test_remove_refuses_what_it_cannot_do(make_peers):
    alice, bob = make_peers(2)
    _sync_all(alice, bob)
    assert alice.cli("peers", "remove", _peer_id(alice), "--yes").code == 2
    assert alice.cli("peers", "remove", "NOSUCHPEER", "--yes").code == 2
    result = alice.cli("peers", "remove", _peer_id(bob))  # no --yes, no terminal
    assert result.code == 2 and "--yes" in result.err
    assert "removed" not in alice.cli("peers", check=0).out


def test_a_removed_peer_does_not_hold_back_compaction(make_peers):
    """A lost laptop never acknowledges anything again; the relay must still shrink."""
    alice, bob, lost = make_peers(3)
    for p in (alice, bob):  # snapshots as soon as a little has piled up, in a store that only grows
        p.cli("config", "snapshot_min_bytes", "1000", check=0)
        p.cli("config", "snapshot_ratio", "0.1", check=0)
    _sync_all(alice, bob, lost)
    alice.cli("peers", "remove", _peer_id(lost), "--yes", check=0)
    for i in range(6):
        alice.write(f"f{i}.txt", f"content {i} " * 300)
        _sync_all(alice, bob)
    _sync_all(alice, bob)
    seqs = [int(b.stem) for b in alice.relay.rglob(f"peers/{_peer_id(alice)}/bundles/*.psb")]
    assert not seqs or min(seqs) > 1
