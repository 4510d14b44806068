"""Selective sync with a per-store `exclude` setting, and the self-correction of content that arrives damaged.

A "without attachments" profile: a sales rep's small laptop drive keeps the
quotes and orders but none of the PDFs the office files beside them. The
office PC and the other reps keep syncing the PDFs among themselves.

Staged content (a remote change waiting to be applied, kept in the state
folder) can be damaged on the receiving disk: a failing drive, an
antivirus "cleaning" it, a user tidying up. peersync tries it again on the
next cycles; once it has failed three times it drops it, asks its author
to send it again through the heartbeat, and records what it did.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Peer, tree
from test_service import hold, services, wait_until  # noqa: F401  (fixtures)

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 40


def sync_all(*peers: Peer) -> None:
    for _ in range(2):
        for p in peers:
            p.sync()


# -- the per-store exclude setting ---------------------------------------------------------------------


def test_a_without_attachments_profile_neither_sends_nor_applies_pdfs_on_that_peer(make_peers):
    alice, bob, carol = make_peers(3)
    alice.write("old-offer.pdf", PDF)
    alice.write("old-offer.txt", "the offer, in words\n")
    sync_all(alice, bob, carol)
    assert bob.read("old-offer.pdf") == PDF

    # Bob chooses the profile for this store only, and frees his drive of the PDF he has.
    r = bob.cli("config", "exclude", "*.pdf", "--store", "docs", check=0)
    assert 'exclude = ["*.pdf"]' in r.out
    (bob.store / "old-offer.pdf").unlink()
    sync_all(alice, bob, carol)
    assert alice.read("old-offer.pdf") == PDF and carol.read("old-offer.pdf") == PDF, \
        "removing an excluded file on one peer deleted it on the others"

    # New attachments from the office reach carol, not bob; the rest reaches everyone.
    alice.write("quotes/q-7.txt", "quote 7\n")
    alice.write("quotes/q-7-spec.pdf", PDF + b"spec")
    alice.write("old-offer.pdf", PDF + b"revised")
    # Bob's own PDFs stay on his laptop; his other files are sent.
    bob.write("visit-report.txt", "visited ACME\n")
    bob.write("visit-photos.pdf", PDF + b"photos")
    sync_all(alice, bob, carol)

    assert bob.read("quotes/q-7.txt") == b"quote 7\n"
    assert not (bob.store / "quotes/q-7-spec.pdf").exists()
    assert not (bob.store / "old-offer.pdf").exists(), "an edit of an excluded file was applied"
    assert bob.read("visit-photos.pdf") == PDF + b"photos"
    for p in (alice, carol):
        assert p.read("quotes/q-7-spec.pdf") == PDF + b"spec"
        assert p.read("old-offer.pdf") == PDF + b"revised"
        assert p.read("visit-report.txt") == b"visited ACME\n"
        assert not (p.store / "visit-photos.pdf").exists(), f"{p.name} got a file bob excludes"
    assert tree(alice.store) == tree(carol.store)
    assert "pdf" not in bob.cli("queue", check=0).out
    assert json.loads(bob.cli("status", "--json", check=0).out)["stores"][0]["errors"] == []

    # Without the profile, bob's own PDFs are sent again; what he skipped comes when it changes.
    bob.cli("config", "exclude", "", "--store", "docs", check=0)
    alice.write("quotes/q-7-spec.pdf", PDF + b"spec v2")
    sync_all(alice, bob, carol)
    assert alice.read("visit-photos.pdf") == PDF + b"photos"
    assert bob.read("quotes/q-7-spec.pdf") == PDF + b"spec v2"


def test_a_running_service_follows_a_changed_exclude_setting(make_peers, services):  # noqa: F811
    """The sysadmin sets the profile while the service runs: it applies from the next cycle, no restart."""
    alice, bob = make_peers(2)
    services(alice)
    services(bob)
    alice.write("first.txt", "first\n")
    wait_until(lambda: (bob.store / "first.txt").exists(), timeout=30, what="the first file on bob")

    bob.cli("config", "exclude", "*.pdf", "--store", "docs", check=0)
    alice.write("manual.pdf", PDF)
    alice.write("after.txt", "written with the pdf\n")
    wait_until(lambda: (bob.store / "after.txt").exists(), timeout=30, what="the text file on bob")
    assert not (bob.store / "manual.pdf").exists(), "the running service ignored the new exclude setting"
    bob.write("mine.pdf", PDF + b"bob")
    bob.write("mine.txt", "bob's\n")
    wait_until(lambda: (alice.store / "mine.txt").exists(), timeout=30, what="bob's text file on alice")
    assert not (alice.store / "mine.pdf").exists()


# -- content damaged while it waited, fetched again ---------------------------------------------------------


def staged_files(peer: Peer) -> list[Path]:
    return [p for p in (peer.home / "stores").glob("*/staging/*") if p.is_file()]


def damaged_while_held(alice: Peer, bob: Peer, hold) -> bytes:  # noqa: F811
    """Alice's edit reaches bob while he holds the file; his kept copy is damaged; then he releases it."""
    alice.write("price-list.txt", "prices v1\n")
    sync_all(alice, bob)
    release = hold(bob.store / "price-list.txt")
    new = b"prices v2, from alice\n" * 10
    alice.write("price-list.txt", new)
    alice.sync()
    bob.sync(check=1)
    assert bob.read("price-list.txt") == b"prices v1\n"
    (staged,) = staged_files(bob)
    assert staged.read_bytes() == new
    staged.write_bytes(b"prices v2, from alice\n" * 9 + b"prices v9, from nobody\n")
    release()
    return new


def corrections(peer: Peer) -> list[str]:
    return [line for line in peer.cli("errors", check=0).out.splitlines() if line.startswith("↻")]


def test_staged_content_that_keeps_failing_its_hash_is_dropped_and_fetched_again(make_peers, hold):  # noqa: F811
    """Bob's copy of Alice's edit waits for a held file and is damaged meanwhile: peersync gets it again."""
    alice, bob = make_peers(2)
    new = damaged_while_held(alice, bob, hold)
    for _ in range(4):
        bob.sync(check=None)
        assert bob.read("price-list.txt") == b"prices v1\n", "damaged content was applied"
        if corrections(bob):
            break
    assert any("price-list.txt" in line and "send it again" in line for line in corrections(bob)), \
        bob.cli("errors", check=0).out
    assert not [p for p in staged_files(bob) if p.read_bytes() != new], "the damaged copy was kept"
    status = json.loads(bob.cli("status", "--json", check=0).out)["stores"][0]
    assert any(c["subject"] == "price-list.txt" and "send it again" in c["action"] for c in status["corrections"])
    assert "↻ price-list.txt" in bob.cli("status", check=0).out

    # Its author answers the request from the heartbeat: the edit arrives whole.
    sync_all(alice, bob)
    assert bob.read("price-list.txt") == new
    assert bob.cli("errors", check=0).out.splitlines()[0] == "✓ docs: no errors."
    assert tree(alice.store) == tree(bob.store)


def test_damaged_content_is_tried_three_cycles_before_it_is_fetched_again(make_peers, hold):  # noqa: F811
    """The correction says the content "did not match its hash three times": it should have."""
    alice, bob = make_peers(2)
    damaged_while_held(alice, bob, hold)
    damaged_cycles = 0
    for _ in range(5):
        bob.sync(check=None)
        if corrections(bob):
            break
        damaged_cycles += "does not match its hash" in bob.cli("errors", check=0).out
    assert damaged_cycles >= 3, f"fetched again after {damaged_cycles} cycle(s) with damaged content"
