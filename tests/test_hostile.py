"""Hostile and damaged bundles (DESIGN.md invariants 2-4, 7).

Every case drops something bad into the relay, runs the receiver's real
``peersync sync`` and checks that the bad bundle is skipped and reported
(exit 1, a sentence on stderr, the error in ``status --json`` / ``peersync
errors``), that nothing of it is applied, that nothing is written outside the
store, and that the author's next good bundle still applies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
from pathlib import Path

import forge
import pytest
from conftest import Peer, tree

from peersync.relay import PeerRecord, Relay

# -- helpers -------------------------------------------------------------------------------


def grace0(peer: Peer) -> None:
    """Quarantine at once what does not verify, instead of waiting for the cloud to finish it."""
    peer.cli("config", "bundle_grace_seconds", "0", check=0)


def status(peer: Peer) -> dict:
    data = json.loads(peer.cli("status", "--json", check=0).out)
    (store,) = data["stores"]
    return store


def error_text(e: dict) -> str:
    return " ".join(str(e.get(k, "")) for k in ("key", "subject", "message"))


def reported(errors: list[dict], author: str, seq: int) -> bool:
    """Some error names this author's bundle ``seq``."""
    return any(author[:7] in error_text(e) and re.search(rf"\b0*{seq}\b", error_text(e)) for e in errors)


def stderr_names(err: str, author: str, seq: int) -> bool:
    """A line of stderr names this author's bundle ``seq``."""
    return any(author[:7] in line and re.search(rf"\b0*{seq}\b", line) for line in err.splitlines())


def outside_snapshot(tmp_path: Path, receiver: Peer) -> dict[str, bytes | None]:
    """Everything under tmp_path but the state folders, the receiver's store (checked on its own) and
    its own relay folder (which a sync legitimately rewrites): the other stores, the relay, and any
    folder beside them."""
    own = forge.relay(receiver).peer_dir(forge.peer_id(receiver))
    out = {}
    for rel, data in tree(tmp_path, ignore_marker=False).items():
        top = rel.split("/", 1)[0]
        if top.startswith("home-") or top == receiver.store.name:
            continue
        if (tmp_path / rel) == own or own in (tmp_path / rel).parents:
            continue
        out[rel] = data
    return out


def assert_rejected(receiver: Peer, result, author: str, seqs: list[int], *, listed: bool = False) -> None:
    """The sync failed, said why on stderr, and `status --json` (and, with ``listed``, `peersync
    errors`) names each bundle."""
    assert result.code == 1, f"sync should report the bad bundle(s) {seqs}:\n{result.out}\n{result.err}"
    errors = status(receiver)["errors"]
    text = receiver.cli("errors", check=0).out if listed else ""
    for seq in seqs:
        assert stderr_names(result.err, author, seq), f"no sentence about bundle {seq} on stderr:\n{result.err}"
        assert reported(errors, author, seq), f"bundle {seq} missing from status --json errors: {errors}"
        if listed:
            assert any(author[:7] in line and re.search(rf"\b0*{seq}\b", line) for line in text.splitlines()), text


@pytest.fixture
def pair(make_peers):
    """alice (the author whose relay folder is abused) and bob (the receiver, holding a file of his own)."""
    alice, bob = make_peers(2)
    bob.write("mine.txt", "bob's own work")
    return alice, bob


# -- damaged bundles ---------------------------------------------------------------------------


def test_bit_flip_in_ciphertext_waits_then_is_quarantined(pair, tmp_path):
    """A cloud client (or disk) flips one bit of a bundle: it is waited for, then quarantined; never applied."""
    alice, bob = pair
    a = forge.peer_id(alice)
    good = forge.forge_bytes(alice, [forge.put(a, "secret-plan.txt", "flipped")], seq=1)
    forge.write_raw(alice, 1, forge.flip_bit(good, forge.HEADER_SIZE + (len(good) - forge.HEADER_SIZE - 64) // 2, 3))
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=2)
    before = tree(bob.store)
    outside = outside_snapshot(tmp_path, bob)

    waiting = bob.sync(check=0)  # default grace: may still be uploading
    assert tree(bob.store) == before
    assert "waiting" in waiting.out, waiting.out

    grace0(bob)
    result = bob.sync(check=None)
    assert_rejected(bob, result, a, [1], listed=True)
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}
    assert outside_snapshot(tmp_path, bob) == outside
    assert forge.quarantined(bob), "the bad bundle should be kept in the quarantine folder"


def test_bit_flip_in_each_header_field_is_quarantined(pair):
    """One flipped bit in any header field (magic, version, flags, ids, epoch, seq, sizes, nonce, reserved)."""
    alice, bob = pair
    a = forge.peer_id(alice)
    grace0(bob)
    seqs = {}
    for seq, (field, offset) in enumerate(forge.HEADER_FIELDS.items(), start=1):
        raw = forge.forge_bytes(alice, [forge.put(a, f"{field}.txt", f"header {field}")], seq=seq)
        forge.write_raw(alice, seq, forge.flip_bit(raw, offset, 0))
        seqs[field] = seq
    last = len(seqs) + 1
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=last)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, list(seqs.values()))
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}


def test_truncated_for_good_is_quarantined_with_no_grace(pair):
    """An upload that never completes: with no grace it is quarantined and the next bundle applies."""
    alice, bob = pair
    a = forge.peer_id(alice)
    grace0(bob)
    raw = forge.forge_bytes(alice, [forge.put(a, "half.txt", "x" * 5000)], seq=1)
    forge.write_raw(alice, 1, raw[: len(raw) // 2])
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=2)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, [1])
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}


def test_truncated_bundle_waits_with_default_grace_then_applies(pair):
    """A bundle the cloud client is still downloading: sync waits (exit 0), then applies it once complete."""
    alice, bob = pair
    a = forge.peer_id(alice)
    raw = forge.forge_bytes(alice, [forge.put(a, "slow.txt", "y" * 5000)], seq=1)
    path = forge.write_raw(alice, 1, raw[: len(raw) // 3])
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=2)
    before = tree(bob.store)

    result = bob.sync(check=0)
    assert "waiting" in result.out, result.out
    assert tree(bob.store) == before, "nothing may apply while bundle 1 is incomplete, not even bundle 2"
    assert not status(bob)["errors"]

    with open(path, "ab") as f:  # the rest of the bytes arrive
        f.write(raw[len(raw) // 3:])
    bob.sync(check=0)
    assert tree(bob.store) == {**before, "slow.txt": b"y" * 5000, "after.txt": b"next bundle"}
    assert not forge.quarantined(bob)


# -- bundles that are whole but not what they claim ----------------------------------------------


@pytest.mark.parametrize("how", ["same-key", "its-own-key", "copied"])
def test_bundle_from_another_store_is_quarantined(pair, how):
    """A bundle of another store (same author, same relay) lands in this store's folder."""
    alice, bob = pair
    a = forge.peer_id(alice)
    other_dir = alice.store.parent / "alice-other"
    alice.cli("init", str(other_dir), "--relay", str(alice.relay), "--name", "other", check=0)
    other_id = forge.store_id_of(alice, "other")
    if how == "copied":
        (other_dir / "other.txt").write_text("from the other store")
        alice.sync("other")
        src = Relay(alice.relay, other_id).bundles_dir(a) / "000000000001.psb"
        forge.write_raw(alice, 1, src.read_bytes())
    else:
        key = forge.store_key(alice) if how == "same-key" else forge.store_key(alice, name="other")
        forge.forge_bundle(alice, [forge.put(a, "other.txt", "from the other store")], seq=1,
                           store_id=other_id, key=key)
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=2)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, [1])
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}


def test_bundle_in_another_peers_folder_is_quarantined(make_peers):
    """A member writes into someone else's relay folder: a header naming itself (author mismatch, as a
    copied bundle) or naming the folder's owner (signature mismatch) -- either way it is rejected."""
    alice, bob, carol = make_peers(3)
    a = forge.peer_id(alice)
    grace0(bob)
    forge.forge_bundle(alice, [forge.put(forge.peer_id(carol), "impostor.txt", "carol as carol")], seq=1,
                       author_home=carol.home)
    forge.forge_bundle(alice, [forge.put(a, "impostor2.txt", "carol as alice")], seq=2,
                       author_home=carol.home, claim_author=a)
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=3)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, [1, 2])
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}


def test_replayed_bundle_is_quarantined(pair):
    """An old valid bundle copied under a higher sequence number (a replay) is rejected."""
    alice, bob = pair
    a = forge.peer_id(alice)
    alice.write("quote.txt", "draft")
    alice.sync()
    alice.write("quote.txt", "final price")
    alice.sync()
    bob.sync()
    assert bob.read("quote.txt") == b"final price"
    shutil.copyfile(forge.bundle_path(alice, 1), forge.bundle_path(alice, 3))
    alice.write("order.txt", "order 17")
    alice.sync()
    assert forge.bundle_path(alice, 4).exists()
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, [3], listed=True)
    assert tree(bob.store) == {**before, "order.txt": b"order 17"}


@pytest.mark.parametrize("how", ["wrong-mac", "copied-peer-json"])
def test_unauthenticated_peer_folder_is_ignored_and_reported(pair, tmp_path, how):
    """Someone who is not in the roster (an ex-member still holding the bundle key) adds a peer folder
    with a peer.json the store secret does not authenticate; its valid-looking bundles are ignored."""
    alice, bob = pair
    a = forge.peer_id(alice)
    mallory = forge.new_outsider(tmp_path / "home-mallory")
    rel = forge.relay(alice)
    if how == "wrong-mac":
        rel.write_peer_record(PeerRecord(mallory.peer_id, mallory.public_key, "mallory", "evil", "mallory", 0.0),
                              os.urandom(32))
    else:
        folder = rel.peer_dir(mallory.peer_id)
        folder.mkdir(parents=True)
        shutil.copyfile(rel.peer_dir(a) / "peer.json", folder / "peer.json")
    forge.forge_bundle(alice, [forge.put(mallory.peer_id, "mallory.txt", "pay to mallory")], seq=1,
                       author_home=tmp_path / "home-mallory", folder_of=mallory.peer_id)
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "alice's bundle")], seq=1)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert result.code == 1, result.out + result.err
    assert any(mallory.peer_id[:7] in line for line in result.err.splitlines()), result.err
    st = status(bob)
    assert mallory.peer_id in st["unknown_peers"], st["unknown_peers"]
    assert any(mallory.peer_id[:7] in error_text(e) for e in st["errors"]), st["errors"]
    assert tree(bob.store) == {**before, "after.txt": b"alice's bundle"}


def test_peer_folder_without_peer_json_is_ignored(pair, tmp_path):
    """A peer folder whose peer.json has not arrived (or never will): its bundles are not used."""
    alice, bob = pair
    a = forge.peer_id(alice)
    mallory = forge.new_outsider(tmp_path / "home-mallory")
    forge.forge_bundle(alice, [forge.put(mallory.peer_id, "mallory.txt", "pay to mallory")], seq=1,
                       author_home=tmp_path / "home-mallory", folder_of=mallory.peer_id)
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "alice's bundle")], seq=1)
    before = tree(bob.store)

    result = bob.sync(check=0)
    assert tree(bob.store) == {**before, "after.txt": b"alice's bundle"}
    assert mallory.peer_id[:7] in result.out, "the folder should at least be shown as waiting"
    assert mallory.peer_id in status(bob)["unknown_peers"]


def test_bundle_sealed_with_a_wrong_key_is_quarantined(pair):
    """Signed by a real member but encrypted with a key that is not the store's."""
    alice, bob = pair
    a = forge.peer_id(alice)
    forge.forge_bundle(alice, [forge.put(a, "wrongkey.txt", "unreadable")], seq=1, key=os.urandom(32))
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=2)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, [1])
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}


def test_decompression_bomb_is_quarantined_without_inflating(pair):
    """A member's bundle declares 1 KiB of payload but inflates to 300 MiB (signature and AEAD pass)."""
    alice, bob = pair
    a = forge.peer_id(alice)
    lure = [forge.put(a, "bomb.txt", "boom")]
    forge.write_raw(alice, 1, forge.bomb(alice, 1, real_bytes=300 << 20, declared=1024, records=lure))
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=2)
    before = tree(bob.store)
    rss_before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss

    result = bob.sync(check=None)
    rss_after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    assert_rejected(bob, result, a, [1], listed=True)
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}
    assert rss_after <= max(rss_before, 200 * 1024), f"sync grew to {rss_after // 1024} MiB on a bomb"


def test_bundle_declaring_more_than_the_cap_is_quarantined(pair):
    """A header declaring a payload above the format's cap is refused before anything is allocated."""
    alice, bob = pair
    a = forge.peer_id(alice)
    from peersync.bundle import MAX_PAYLOAD

    forge.write_raw(alice, 1, forge.bomb(alice, 1, real_bytes=1 << 20, declared=MAX_PAYLOAD + 1,
                                         records=[forge.put(a, "big.txt", "big")]))
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=2)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, [1])
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}


def test_numbers_out_of_range_reject_the_bundle(pair):
    """A trusted peer's bundle carries a timestamp no index or filesystem can hold (2**63 ns and up):
    it is rejected like any malformed bundle, not a crash that blocks every later bundle."""
    alice, bob = pair
    a = forge.peer_id(alice)
    forge.forge_bundle(alice, [forge.put(a, "future.txt", "from the year 2262", mtime_ns=2**63)], seq=1)
    gone = forge.delete(a, "never-there.txt")
    gone.meta["mtime_ns"] = 2**70
    forge.forge_bundle(alice, [gone], seq=2)
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=3)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, [1, 2])
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}


# -- hostile paths from a trusted peer ----------------------------------------------------------

HOSTILE_PATHS = {
    "dotdot": "../escape.txt",
    "dotdot-nested": "sub/../../escape.txt",
    "dotdot-deep": "../../escape-deep.txt",
    "absolute-etc": "/etc/x",
    "absolute-tmp": "ABS/outside/abs.txt",  # ABS: tmp_path, filled in by the test
    "drive-backslash": "C:\\x",
    "drive-relative": "C:x",
    "unc": "\\\\server\\share\\x",
    "reserved-con": "CON",
    "reserved-nul-ext": "nul.txt",
    "reserved-in-folder": "sub/com1.log",
    "stream": "a:b",
    "long-name": "n" * 5000,
    "control-nul": "nul\x00byte.txt",
    "control-newline": "two\nlines.txt",
    "control-escape": "esc\x1b[31m.txt",
    "trailing-dot": "invoice.",
}


def test_hostile_paths_reject_the_whole_bundle(pair, tmp_path):
    """A trusted peer's correctly signed bundles, each carrying one hostile path beside a good record
    (one bundle per path, so each is judged alone): every one is rejected whole."""
    alice, bob = pair
    a = forge.peer_id(alice)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "keep.txt").write_text("not peersync's")
    etc_x = os.path.lexists("/etc/x")
    cases = {}
    for seq, (name, path) in enumerate(HOSTILE_PATHS.items(), start=1):
        hostile = path.replace("ABS", str(tmp_path))
        forge.forge_bundle(alice, [forge.put(a, f"good-{name}.txt", "innocent"), forge.put(a, hostile, "pwned")],
                           seq=seq)
        cases[name] = seq
    last = len(cases) + 1
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=last)
    before = tree(bob.store)
    outside = outside_snapshot(tmp_path, bob)

    result = bob.sync(check=None)
    assert result.code == 1, result.out + result.err
    errors = status(bob)["errors"]
    unreported = [n for n, seq in cases.items()
                  if not (stderr_names(result.err, a, seq) and reported(errors, a, seq))]
    assert not unreported, f"hostile paths not reported as rejected bundles: {unreported}\n{result.err}"
    applied = sorted(set(tree(bob.store)) - set(before))
    assert applied == ["after.txt"], f"only the last good bundle may apply, got {applied}"
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}
    assert outside_snapshot(tmp_path, bob) == outside
    assert not (tmp_path.parent / "escape-deep.txt").exists()
    assert os.path.lexists("/etc/x") == etc_x


def test_hostile_paths_in_every_operation_are_rejected(pair, tmp_path):
    """The same escape in a delete, a mkdir, a part, a rename source (`from`) and a large-file start."""
    alice, bob = pair
    a = forge.peer_id(alice)
    victim = tmp_path / "victim.txt"
    victim.write_text("a file next to the store")
    digest = hashlib.sha256(victim.read_bytes()).hexdigest()
    bad = {
        1: forge.delete(a, "../victim.txt", digest=digest),
        2: forge.mkdir(a, "../made-by-peersync"),
        3: forge.part("../victim.txt", digest, 0, b"overwritten", True),
        4: forge.ref_put(a, "stolen.txt", digest, victim.stat().st_size, "../victim.txt"),
        5: forge.ref_put(a, "../victim-copy.txt", digest, victim.stat().st_size, "stolen.txt"),
        6: forge.delete(a, "../outside", kind="dir"),
    }
    for seq, rec in bad.items():
        forge.forge_bundle(alice, [forge.put(a, f"good{seq}.txt", "innocent"), rec], seq=seq)
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=len(bad) + 1)
    (tmp_path / "outside").mkdir()
    before = tree(bob.store)
    outside = outside_snapshot(tmp_path, bob)

    result = bob.sync(check=None)
    assert_rejected(bob, result, a, list(bad))
    assert tree(bob.store) == {**before, "after.txt": b"next bundle"}
    assert outside_snapshot(tmp_path, bob) == outside
    assert victim.read_text() == "a file next to the store"


# -- case clashes and symlinks -------------------------------------------------------------------


def test_names_differing_only_in_case_are_a_reported_conflict(pair):
    """A Linux peer makes Quote.txt and quote.txt; a receiver reports the second, keeps the first."""
    alice, bob = pair
    alice.write("Quote.txt", "the real quote")
    alice.sync()
    bob.sync()
    assert bob.read("Quote.txt") == b"the real quote"
    alice.write("quote.txt", "a different file")
    alice.sync(check=None)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert result.code == 1, result.out + result.err
    assert "quote.txt" in result.err, result.err
    errors = status(bob)["errors"]
    assert any("quote.txt" in error_text(e) and e["kind"] == "conflict" for e in errors), errors
    assert tree(bob.store) == before
    assert bob.read("Quote.txt") == b"the real quote"


def test_case_clash_with_a_local_file_keeps_the_local_file(pair):
    """A trusted bundle sends quote.txt where the receiver already has its own Quote.txt."""
    alice, bob = pair
    a = forge.peer_id(alice)
    bob.write("Quote.txt", "bob's quote")
    bob.sync()
    forge.forge_bundle(alice, [forge.put(a, "quote.txt", "alice's quote")], seq=1)
    before = tree(bob.store)

    result = bob.sync(check=None)
    assert result.code == 1, result.out + result.err
    assert "quote.txt" in result.err, result.err
    assert any("quote.txt" in error_text(e) for e in status(bob)["errors"])
    assert tree(bob.store) == before


SYMLINK_ATTACKS = {
    "new-file": lambda a, d: forge.put(a, "link/evil.txt", "planted"),
    "overwrite": lambda a, d: forge.put(a, "link/existing.txt", "overwritten"),
    "delete": lambda a, d: forge.delete(a, "link/existing.txt", digest=d),
    "mkdir": lambda a, d: forge.mkdir(a, "link/newdir"),
}


@pytest.mark.parametrize("attack", list(SYMLINK_ATTACKS))
def test_symlink_out_of_the_store_is_never_followed(pair, tmp_path, attack):
    """The receiver has store/link -> a folder outside the store; a trusted bundle writes through it.
    Nothing changes outside, it is reported, and nothing from outside leaks to the other peers."""
    alice, bob = pair
    a = forge.peer_id(alice)
    outside = tmp_path / "outside_dir"
    outside.mkdir()
    (outside / "existing.txt").write_text("private, outside the store")
    os.symlink(outside, bob.store / "link", target_is_directory=True)
    bob.sync()
    digest = hashlib.sha256(b"private, outside the store").hexdigest()
    forge.forge_bundle(alice, [SYMLINK_ATTACKS[attack](a, digest)], seq=1)
    forge.forge_bundle(alice, [forge.put(a, "after.txt", "next bundle")], seq=2)
    outside_before = tree(outside)

    result = bob.sync(check=None)
    assert tree(outside) == outside_before, "peersync wrote through a symlink out of the store"
    alice.sync(check=None)
    leaked = {p: v for p, v in tree(alice.store).items() if p.startswith("link")}
    assert not leaked, f"content from outside bob's store reached alice: {leaked}"
    assert result.code == 1, result.out + result.err
    assert "link/" in result.err, result.err
    assert any("link/" in error_text(e) for e in status(bob)["errors"])
    assert bob.read("after.txt") == b"next bundle"
