"""End-to-end sync through the real CLI: two and three peers sharing one relay folder.

Every test drives ``python -m peersync`` in subprocesses (conftest's ``Peer``)
and compares whole store folders byte for byte with ``tree()``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import stat
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from conftest import Peer, tree

T0 = 1_700_000_000_123_456_789  # a fixed mtime (ns) with a sub-second part


def sync_all(*peers: Peer, rounds: int = 2) -> None:
    for _ in range(rounds):
        for p in peers:
            p.sync()


def converged(*peers: Peer) -> dict[str, bytes | None]:
    """Assert every store holds the same tree; return it."""
    first = tree(peers[0].store)
    for p in peers[1:]:
        assert tree(p.store) == first, f"{p.name} differs from {peers[0].name}"
    return first


def set_mtime(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns))


_IDS: dict[Path, tuple[str, str]] = {}


def ids(peer: Peer) -> tuple[str, str]:
    """(peer id, store id) as `status --json` reports them."""
    if peer.home not in _IDS:
        data = json.loads(peer.cli("status", "--json", check=0).out)
        _IDS[peer.home] = data["peer"], data["stores"][0]["id"]
    return _IDS[peer.home]


def bundles_of(peer: Peer) -> list[Path]:
    peer_id, store_id = ids(peer)
    folder = peer.relay / store_id / "peers" / peer_id / "bundles"
    return sorted(folder.glob("*.psb")) if folder.exists() else []


def conflict_re(stem: str, ext: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(stem)}\.sync-conflict-\d{{8}}-\d{{6}}-[A-Za-z0-9]{{7}}{re.escape(ext)}$")


def conflict_copies(t: dict[str, bytes | None]) -> list[str]:
    return sorted(p for p in t if ".sync-conflict-" in p)


def one_sentence(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# -- basic flow -------------------------------------------------------------------------


def test_create_edit_delete_flow_both_ways(peers):
    """Office PC and laptop each create, edit and delete files; both folders end identical."""
    alice, bob = peers
    alice.write("quote.txt", "v1")
    alice.write("orders/2024/order-1.csv", "a,b\n1,2\n")
    alice.sync()
    bob.sync()
    assert converged(alice, bob) == {"quote.txt": b"v1", "orders": None, "orders/2024": None,
                                     "orders/2024/order-1.csv": b"a,b\n1,2\n"}

    set_mtime(bob.write("quote.txt", "v2 from bob"), T0)
    bob.write("notes.md", "# notes")
    bob.sync()
    alice.sync()
    assert alice.read("quote.txt") == b"v2 from bob"
    assert alice.read("notes.md") == b"# notes"
    converged(alice, bob)

    (alice.store / "orders/2024/order-1.csv").unlink()
    set_mtime(alice.write("notes.md", "# notes\nmore"), T0 + 10**9)
    alice.sync()
    bob.sync()
    assert converged(alice, bob) == {"quote.txt": b"v2 from bob", "notes.md": b"# notes\nmore",
                                     "orders": None, "orders/2024": None}

    (bob.store / "quote.txt").unlink()
    bob.sync()
    alice.sync()
    assert "quote.txt" not in converged(alice, bob)
    assert not list(alice.store.rglob("*sync-conflict*"))


def test_renames_of_files_and_folders_flow_both_ways(peers):
    """A rep renames a quote; the office renames a client folder; both sides follow."""
    alice, bob = peers
    alice.write("Quote draft.txt", "draft content")
    alice.write("Clients/ACME/contract.txt", "contract")
    alice.write("Clients/ACME/sub/annex.txt", "annex")
    alice.write("Clients/Other/x.txt", "x")
    alice.sync()
    bob.sync()
    converged(alice, bob)

    (alice.store / "Quote draft.txt").rename(alice.store / "Quote final.txt")
    alice.sync()
    bob.sync()
    t = converged(alice, bob)
    assert t["Quote final.txt"] == b"draft content"
    assert "Quote draft.txt" not in t

    (bob.store / "Clients/ACME").rename(bob.store / "Clients/ACME Corp")
    bob.sync()
    alice.sync()
    t = converged(alice, bob)
    assert t["Clients/ACME Corp/contract.txt"] == b"contract"
    assert t["Clients/ACME Corp/sub/annex.txt"] == b"annex"
    assert not any(p.startswith("Clients/ACME/") or p == "Clients/ACME" for p in t), sorted(t)
    assert t["Clients/Other/x.txt"] == b"x"


def test_three_peers_creates_edits_deletes_renames_converge(make_peers):
    """Three machines each change something different; after syncing all hold the same folder."""
    alice, bob, carol = make_peers(3)
    alice.write("a.txt", "alice 1")
    alice.write("shared/plan.txt", "plan 1")
    alice.write("shared/old.txt", "old")
    sync_all(alice, bob, carol, rounds=1)
    converged(alice, bob, carol)

    set_mtime(bob.write("shared/plan.txt", "plan 2 by bob"), T0)
    bob.write("b.txt", "bob 1")
    (carol.store / "shared/old.txt").unlink()
    (carol.store / "a.txt").rename(carol.store / "a-renamed.txt")
    carol.write("c/deep/c.txt", "carol 1")
    sync_all(alice, bob, carol)
    t = converged(alice, bob, carol)
    assert t == {
        "a-renamed.txt": b"alice 1",
        "b.txt": b"bob 1",
        "shared": None,
        "shared/plan.txt": b"plan 2 by bob",
        "c": None,
        "c/deep": None,
        "c/deep/c.txt": b"carol 1",
    }


# -- special files and metadata ----------------------------------------------------------------


def test_folders_empty_files_and_non_ascii_names(peers):
    """Empty folders, empty files and French names sync; deleting a whole folder tree deletes it there."""
    alice, bob = peers
    (alice.store / "empty").mkdir()
    (alice.store / "Projects/2024/Q1/empty-leaf").mkdir(parents=True)
    alice.write("Projects/2024/Q1/report.txt", "r")
    alice.write("Projects/2024/budget.txt", "b")
    alice.write("Devis été.docx", b"PK\x03\x04 devis")
    alice.write("Übersicht/Straße 日本.txt", "unicode")
    alice.write("empty.txt", b"")
    alice.sync()
    bob.sync()
    t = converged(alice, bob)
    assert t["empty"] is None and t["Projects/2024/Q1/empty-leaf"] is None
    assert t["Projects/2024/Q1/report.txt"] == b"r"
    assert t["Devis été.docx"] == b"PK\x03\x04 devis"
    assert t["Übersicht/Straße 日本.txt"] == b"unicode"
    assert t["empty.txt"] == b""

    shutil.rmtree(bob.store / "Projects")
    (bob.store / "empty").rmdir()
    set_mtime(bob.write("Devis été.docx", b"PK\x03\x04 devis v2"), T0)
    bob.sync()
    alice.sync()
    assert converged(alice, bob) == {"Devis été.docx": b"PK\x03\x04 devis v2", "Übersicht": None,
                                     "Übersicht/Straße 日本.txt": b"unicode", "empty.txt": b""}


def test_nfd_name_created_on_disk_arrives_as_nfc(peers):
    """A file and a folder named on macOS (decomposed accents, NFD) arrive, in one sync, under NFC names."""
    alice, bob = peers
    nfd = unicodedata.normalize("NFD", "Facture réglée.pdf")
    nfc = unicodedata.normalize("NFC", nfd)
    assert nfd != nfc
    folder_nfd = unicodedata.normalize("NFD", "Réunion")
    (alice.store / nfd).write_bytes(b"%PDF-1.4 facture")
    (alice.store / folder_nfd).mkdir()
    (alice.store / folder_nfd / "ordre.txt").write_bytes(b"ordre du jour")
    alice.sync()
    bob.sync()
    names = os.listdir(bob.store)
    assert nfc in names and nfd not in names, names
    assert (bob.store / nfc).read_bytes() == b"%PDF-1.4 facture"
    assert (bob.store / "Réunion" / "ordre.txt").read_bytes() == b"ordre du jour"
    assert folder_nfd not in names, names
    # Whatever names the sender's disk ends with, nothing is lost or duplicated there.
    alice_names = [n for n in os.listdir(alice.store) if n != ".peersync"]
    assert sorted(unicodedata.normalize("NFC", n) for n in alice_names) == sorted([nfc, "Réunion"])


def test_executable_bit_and_mtimes_are_preserved(peers):
    """A script stays executable and every file keeps its modification time on the other machine."""
    alice, bob = peers
    script = alice.write("bin/run.sh", "#!/bin/sh\necho hi\n")
    os.chmod(script, 0o755)
    set_mtime(script, T0)
    doc = alice.write("doc.txt", "text")
    os.chmod(doc, 0o644)
    set_mtime(doc, T0 + 5 * 10**9)
    alice.sync()
    bob.sync()
    converged(alice, bob)
    b_script, b_doc = os.stat(bob.store / "bin/run.sh"), os.stat(bob.store / "doc.txt")
    assert b_script.st_mode & 0o111, oct(b_script.st_mode)
    assert not b_doc.st_mode & 0o111, oct(b_doc.st_mode)
    assert b_script.st_mtime_ns == T0
    assert b_doc.st_mtime_ns == T0 + 5 * 10**9

    # An edit made on bob keeps its mtime on alice; a mode-only change (chmod -x) also syncs.
    set_mtime(bob.write("doc.txt", "text v2"), T0 + 7 * 10**9)
    os.chmod(bob.store / "bin/run.sh", 0o644)
    set_mtime(bob.store / "bin/run.sh", T0)
    bob.sync()
    alice.sync()
    converged(alice, bob)
    assert os.stat(alice.store / "doc.txt").st_mtime_ns == T0 + 7 * 10**9
    assert not os.stat(alice.store / "bin/run.sh").st_mode & 0o111


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
def test_applied_files_get_their_exact_mode_whatever_the_umask(peers):
    """Files are made with their mode at creation; a umask that takes bits away (077, a private
    account) must not leave them 0600 or 0700 on the reading peer: the mode is set again."""
    alice, bob = peers
    os.chmod(alice.write("bin/run.sh", "#!/bin/sh\n"), 0o755)
    os.chmod(alice.write("doc.txt", "text"), 0o644)
    alice.sync()
    old = os.umask(0o077)
    try:
        bob.sync()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(bob.store / "bin/run.sh").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(bob.store / "doc.txt").st_mode) == 0o644


def test_rename_sends_no_content_again(peers):
    """Renaming a big file does not upload it again: the new bundle is tiny."""
    alice, bob = peers
    big = random.Random(42).randbytes(3 * 1024 * 1024)
    set_mtime(alice.write("video/big.bin", big), T0)
    alice.sync()
    bob.sync()
    assert bob.read("video/big.bin") == big
    before = bundles_of(alice)
    assert before and max(p.stat().st_size for p in before) > 2 * 1024 * 1024  # the content went once

    (alice.store / "video/big.bin").rename(alice.store / "video/renamed.bin")
    alice.sync()
    after = bundles_of(alice)
    new = [p for p in after if p not in before]
    assert new, "the rename wrote no bundle"
    assert sum(p.stat().st_size for p in new) < 100 * 1024, [(p.name, p.stat().st_size) for p in new]
    assert max(after, key=lambda p: p.stat().st_mtime_ns).stat().st_size < 100 * 1024

    bob.sync()
    t = converged(alice, bob)
    assert t["video/renamed.bin"] == big
    assert "video/big.bin" not in t
    assert os.stat(bob.store / "video/renamed.bin").st_mtime_ns == T0


# -- conflicts --------------------------------------------------------------------------------


def test_concurrent_edits_keep_both_newer_mtime_wins(peers):
    """Office and laptop edit the same files offline: the newer edit keeps the name, the other a conflict copy."""
    alice, bob = peers
    alice.write("quote.txt", "original")
    alice.write("order.csv", "original")
    alice.write("price-list.csv", "old")
    alice.write("NOTES", "original")
    alice.sync()
    bob.sync()

    # quote.txt: alice's edit is older (the loser syncs first); order.csv: bob's is older (the winner syncs first).
    set_mtime(alice.write("quote.txt", "alice's older edit"), T0)
    set_mtime(bob.write("quote.txt", "bob's newer edit!"), T0 + 60 * 10**9)
    set_mtime(alice.write("order.csv", "alice's newer order"), T0 + 120 * 10**9)
    set_mtime(bob.write("order.csv", "bob's older order"), T0 + 3 * 10**9)
    # price-list.csv: both saved the very same corrected file: no conflict.
    set_mtime(alice.write("price-list.csv", "new prices"), T0)
    set_mtime(bob.write("price-list.csv", "new prices"), T0 + 10**9)
    # NOTES: a name without extension.
    set_mtime(alice.write("NOTES", "alice notes"), T0 + 50 * 10**9)
    set_mtime(bob.write("NOTES", "bob notes"), T0 + 40 * 10**9)
    sync_all(alice, bob)

    t = converged(alice, bob)
    assert t["quote.txt"] == b"bob's newer edit!"
    assert t["NOTES"] == b"alice notes"
    notes_copy = [c for c in conflict_copies(t) if conflict_re("NOTES", "").match(c)]
    assert len(notes_copy) == 1 and t[notes_copy[0]] == b"bob notes", conflict_copies(t)
    assert t["order.csv"] == b"alice's newer order"
    assert t["price-list.csv"] == b"new prices"
    copies = conflict_copies(t)
    assert len(copies) == 3, copies
    quote_copy = [c for c in copies if conflict_re("quote", ".txt").match(c)]
    order_copy = [c for c in copies if conflict_re("order", ".csv").match(c)]
    assert len(quote_copy) == 1 and len(order_copy) == 1, copies
    assert t[quote_copy[0]] == b"alice's older edit"
    assert t[order_copy[0]] == b"bob's older order"
    for p in (alice, bob):
        listed = p.cli("conflicts", check=0).out
        assert quote_copy[0] in listed and order_copy[0] in listed, (p.name, listed)
        assert "price-list" not in listed, listed


def test_three_peers_with_a_concurrent_edit_converge(make_peers):
    """Two reps edit the same order while a third machine only watches: all three end identical."""
    alice, bob, carol = make_peers(3)
    alice.write("orders/o-17.txt", "order 17")
    sync_all(alice, bob, carol, rounds=1)

    set_mtime(alice.write("orders/o-17.txt", "order 17 - alice"), T0 + 30 * 10**9)
    set_mtime(carol.write("orders/o-17.txt", "order 17 - carol"), T0)
    sync_all(carol, bob, alice)

    t = converged(alice, bob, carol)
    assert t["orders/o-17.txt"] == b"order 17 - alice"
    copies = conflict_copies(t)
    assert len(copies) == 1, copies
    assert re.match(r"^orders/o-17\.sync-conflict-\d{8}-\d{6}-[A-Za-z0-9]{7}\.txt$", copies[0]), copies
    assert t[copies[0]] == b"order 17 - carol"


def test_modify_beats_delete(peers):
    """One machine deletes a file while the other edits it offline: the edit survives everywhere, both ways."""
    alice, bob = peers
    alice.write("contract.txt", "v1")
    alice.write("other.txt", "o")
    alice.write("keep.txt", "k")
    alice.write("Projects/p1/report.txt", "report v1")
    alice.write("Projects/p1/notes.txt", "notes")
    alice.sync()
    bob.sync()

    (alice.store / "contract.txt").unlink()  # alice deletes, bob edits (the deleter syncs first)
    set_mtime(bob.write("contract.txt", "v2 edited by bob"), T0)
    (bob.store / "other.txt").unlink()  # bob deletes, alice edits (the editor syncs first)
    set_mtime(alice.write("other.txt", "o2 edited by alice"), T0)
    shutil.rmtree(bob.store / "Projects")  # bob deletes a folder tree in which alice edited one file
    set_mtime(alice.write("Projects/p1/report.txt", "report v2 by alice"), T0)
    sync_all(alice, bob)
    t = converged(alice, bob)
    assert t["contract.txt"] == b"v2 edited by bob"
    assert t["other.txt"] == b"o2 edited by alice"
    assert t["Projects/p1/report.txt"] == b"report v2 by alice"
    assert "Projects/p1/notes.txt" not in t
    assert t["keep.txt"] == b"k"


# -- versions archive ---------------------------------------------------------------------------


def test_versions_and_restore_after_remote_overwrite_and_delete(peers):
    """A colleague overwrote one quote and deleted another: both come back from the archive."""
    alice, bob = peers
    old_a, old_b = b"quote A, first version\n", b"quote B, only version\n"
    alice.write("A.txt", old_a)
    alice.write("old/B.txt", old_b)
    alice.sync()
    bob.sync()

    set_mtime(alice.write("A.txt", "quote A, overwritten"), T0)
    shutil.rmtree(alice.store / "old")
    alice.sync()
    bob.sync()
    assert tree(bob.store) == {"A.txt": b"quote A, overwritten"}

    for rel, old in (("A.txt", old_a), ("old/B.txt", old_b)):
        listing = bob.cli("versions", str(bob.store / rel), check=0).out
        assert hashlib.sha256(old).hexdigest()[:12] in listing, listing
        assert str(len(old)) in listing, listing
        bob.cli("restore", str(bob.store / rel), check=0)
        assert bob.read(rel) == old

    bob.sync()
    alice.sync()
    assert converged(alice, bob) == {"A.txt": old_a, "old": None, "old/B.txt": old_b}

    r = bob.cli("restore", str(bob.store / "A.txt"), "--version", "9", check=2)
    one_sentence(r.err)
    assert bob.read("A.txt") == old_a


# -- what never syncs ---------------------------------------------------------------------------


def test_peersyncignore_and_editor_lock_files_never_sync(peers):
    """Build output, logs and Office/LibreOffice lock files stay on the machine that made them."""
    alice, bob = peers
    alice.write(".peersyncignore", "*.log\nbuild/\n")
    alice.write("Quote.docx", "docx")
    alice.write("Quote.odt", "odt")
    alice.write("src/main.c", "int main;")
    alice.write("app.log", "log")
    alice.write("src/deep/debug.log", "log")
    alice.write("build/out.bin", "bin")
    alice.write("src/build/obj.o", "obj")
    alice.write("~$Quote.docx", "owner file")
    alice.write(".~lock.Quote.odt#", "lock")
    alice.sync()
    bob.sync()
    files = {p: c for p, c in tree(bob.store).items() if c is not None}
    assert files == {
        ".peersyncignore": b"*.log\nbuild/\n",
        "Quote.docx": b"docx",
        "Quote.odt": b"odt",
        "src/main.c": b"int main;",
    }
    assert not (bob.store / "build").exists() and not (bob.store / "src/build").exists()

    bob.write("bob.log", "bob log")
    bob.write("build/bob.bin", "bin")
    bob.write("~$Quote.docx", "bob owner file")
    bob.write("src/.~lock.main.c#", "lock")
    bob.write("real.txt", "real")
    bob.sync()
    alice.sync()
    assert alice.read("~$Quote.docx") == b"owner file"
    assert not (alice.store / "bob.log").exists()
    assert not (alice.store / "build/bob.bin").exists()
    assert not (alice.store / "src/.~lock.main.c#").exists()
    assert alice.read("real.txt") == b"real"


# -- mass deletion guard --------------------------------------------------------------------


def test_mass_delete_is_held_until_allowed(peers):
    """Most files vanish at once (a bad drag-and-drop): nothing is deleted elsewhere until confirmed."""
    alice, bob = peers
    for i in range(22):
        alice.write(f"docs/f{i:02}.txt", f"file {i}")
    alice.sync()
    bob.sync()
    converged(alice, bob)

    # Deleting 2 of 22 is ordinary work and syncs at once.
    (alice.store / "docs/f20.txt").unlink()
    (alice.store / "docs/f21.txt").unlink()
    alice.sync(check=0)
    bob.sync(check=0)
    full = converged(alice, bob)
    assert len([p for p in full if p.startswith("docs/")]) == 20

    for i in range(15):
        (alice.store / f"docs/f{i:02}.txt").unlink()
    r = alice.sync(check=1)
    assert "15" in r.err and "held" in r.err.lower(), r.err
    alice.sync(check=1)  # still held on the next cycle, not quietly accepted
    bob.sync()
    assert tree(bob.store) == full

    alice.sync("--allow-deletes", check=0)
    bob.sync()
    t = converged(alice, bob)
    assert sorted(p for p in t if p.startswith("docs/")) == [f"docs/f{i:02}.txt" for i in range(15, 20)]


def test_held_mass_delete_stays_held_when_files_were_also_added(peers):
    """15 of 20 files vanish while 10 new ones appear: the hold must not lift itself on the next cycle."""
    alice, bob = peers
    for i in range(20):
        alice.write(f"docs/f{i:02}.txt", f"file {i}")
    alice.sync()
    bob.sync()
    for i in range(15):
        (alice.store / f"docs/f{i:02}.txt").unlink()
    for i in range(10):
        alice.write(f"new/n{i:02}.txt", f"new {i}")
    alice.sync(check=1)
    alice.sync(check=1)  # nothing changed on disk: the deletion is still unconfirmed
    bob.sync()
    assert all((bob.store / f"docs/f{i:02}.txt").read_bytes() == f"file {i}".encode() for i in range(20))


# -- absent store folders ---------------------------------------------------------------------


def test_absent_store_is_paused_not_emptied(peers):
    """The marker is gone (wrong folder mounted) or the drive is unplugged: the store pauses and nothing is lost."""
    alice, bob = peers
    for i in range(4):
        alice.write(f"f{i}.txt", f"{i}")
    alice.sync()
    bob.sync()
    full = converged(alice, bob)
    before = bundles_of(alice)

    (alice.store / ".peersync").unlink()
    (alice.store / "f0.txt").unlink()  # a small deletion that would otherwise sync
    r = alice.sync(check=1)
    assert "paused" in r.err, r.err
    assert bundles_of(alice) == before
    bob.sync()
    assert tree(bob.store) == full

    shutil.rmtree(alice.store)  # now the whole folder is gone
    r = alice.sync(check=1)
    assert "paused" in r.err, r.err
    assert not alice.store.exists(), "sync must not recreate an absent store folder"
    assert bundles_of(alice) == before
    bob.sync()
    assert tree(bob.store) == full


# -- joining with files already there --------------------------------------------------------------


def test_join_into_a_folder_with_existing_files(make_peers):
    """A laptop joins with an old copy of the folder: same files merge, differing one conflicts, nothing is deleted."""
    alice, bob, carol = make_peers(3, join=False)
    alice.write("same1.txt", "same one")
    alice.write("dir/same2.txt", "same two")
    alice.write("differs.txt", "store version")
    alice.write("only-in-store.txt", "store only")
    alice.sync()
    code = alice.cli("invite", check=0).last_line
    carol.cli("join", code, str(carol.store), "--relay", str(carol.relay), check=0)
    carol.sync()

    bob.write("same1.txt", "same one")
    bob.write("dir/same2.txt", "same two")
    set_mtime(bob.write("differs.txt", "laptop version"), T0)
    bob.write("only-on-laptop.txt", "laptop only")
    bob.cli("join", code, str(bob.store), "--relay", str(bob.relay), check=0)
    sync_all(bob, alice, carol)

    t = converged(alice, bob, carol)
    assert t["same1.txt"] == b"same one"
    assert t["dir/same2.txt"] == b"same two"
    assert t["only-in-store.txt"] == b"store only"
    assert t["only-on-laptop.txt"] == b"laptop only"
    copies = conflict_copies(t)
    assert len(copies) == 1 and conflict_re("differs", ".txt").match(copies[0]), copies
    assert {t["differs.txt"], t[copies[0]]} == {b"store version", b"laptop version"}


def test_joining_with_a_copy_of_the_files_archives_none_of_them(make_peers):
    """A second office PC joins holding a copy of the folder (a USB disk, a restored backup), saved
    later than the originals: its versions win, and the others' identical versions lose. The content
    that lost is the very file on disk, so nothing goes to the versions archive (issue 6: joining
    with 100,000 such files wrote each one to the archive, with an fsync and a commit apiece)."""
    alice, bob = make_peers(2, join=False)
    for i in range(12):
        set_mtime(alice.write(f"dir{i % 3}/f{i}.txt", f"content {i}"), T0)
    alice.sync()
    for i in range(12):
        set_mtime(bob.write(f"dir{i % 3}/f{i}.txt", f"content {i}"), T0 + 3600)
    code = alice.cli("invite", check=0).last_line
    bob.cli("join", code, str(bob.store), "--relay", str(bob.relay), check=0)
    sync_all(bob, alice, bob, alice)

    t = converged(alice, bob)
    assert not conflict_copies(t) and len(t) == 12 + 3
    for peer in (alice, bob):
        archived = [f for f in (peer.home / "versions").rglob("*") if f.is_file()]
        assert not archived, (peer.name, archived)


# -- ownership, init, join, invite ------------------------------------------------------------


def test_ownership_and_refusals(make_peers, tmp_path):
    """A second user pointing peersync at a colleague's store is refused and told whose it is."""
    alice, bob = make_peers(2, join=False)
    marker = json.loads((alice.store / ".peersync").read_text("utf-8"))
    code = alice.cli("invite", check=0).last_line
    assert code and " " not in code

    for args in (("init", str(alice.store), "--relay", str(bob.relay), "--name", "mine"),
                 ("join", code, str(alice.store), "--relay", str(bob.relay))):
        r = bob.cli(*args, check=2)
        line = one_sentence(r.err)
        for field in ("peer_name", "user", "machine"):
            assert str(marker[field]) in line, (field, line)
        assert marker["peer_id"][:7] in line, line  # the owner, not the caller
    assert json.loads((alice.store / ".peersync").read_text("utf-8")) == marker

    one_sentence(alice.cli("init", str(alice.store), "--relay", str(alice.relay), "--name", "again", check=2).err)
    missing = tmp_path / "no-such-relay"
    r = bob.cli("init", str(tmp_path / "newstore"), "--relay", str(missing), check=2)
    one_sentence(r.err)
    assert not missing.exists()

    damaged = code[:20] + ("A" if code[20] != "A" else "B") + code[21:]
    for bad in (damaged, code[: len(code) // 2]):
        r = bob.cli("join", bad, str(bob.store), "--relay", str(bob.relay), check=2)
        one_sentence(r.err)
    assert not (bob.store / ".peersync").exists()

    bob.cli("join", code, str(bob.store), "--relay", str(bob.relay), check=0)  # the refusals left no trace


# -- status -----------------------------------------------------------------------------


def test_status_json_and_text(peers):
    """The sysadmin's first look: peers, last sync, pending work, conflicts and errors."""
    alice, bob = peers
    alice_id, store_id = ids(alice)
    alice.write("a.txt", "a")
    alice.sync()

    s = json.loads(bob.cli("status", "--json", check=0).out)
    assert {"version", "peer", "stores"} <= set(s)
    st = s["stores"][0]
    for key in ("name", "id", "path", "relay", "last_sync", "last_sync_ok", "pending_out", "pending_in",
                "peers", "conflicts", "errors"):
        assert key in st, key
    assert st["name"] == "docs" and st["id"] == store_id and s["peer"] != alice_id
    assert st["pending_in"] >= 1, st
    assert [p["id"] for p in st["peers"]] == [alice_id]
    assert st["peers"][0]["bundles_behind"] >= 1

    bob.sync()
    st = json.loads(bob.cli("status", "--json", check=0).out)["stores"][0]
    assert st["last_sync_ok"] is True
    assert abs(time.time() - st["last_sync"]) < 120
    assert st["pending_in"] == 0 and st["pending_out"] == 0
    assert st["peers"][0]["bundles_behind"] == 0 and st["peers"][0]["last_seen"]
    assert st["peers"][0]["name"]
    assert st["conflicts"] == [] and st["errors"] == []

    # A conflict and a held mass deletion show up.
    set_mtime(alice.write("a.txt", "alice edit"), T0)
    set_mtime(bob.write("a.txt", "bob edit"), T0 + 10**9)
    for i in range(10):
        bob.write(f"f{i}.txt", "x")
    sync_all(alice, bob)
    for i in range(10):
        (bob.store / f"f{i}.txt").unlink()
    bob.sync(check=1)
    st = json.loads(bob.cli("status", "--json", check=0).out)["stores"][0]
    assert len(st["conflicts"]) == 1 and conflict_re("a", ".txt").match(st["conflicts"][0]), st["conflicts"]
    assert st["errors"] and st["last_sync_ok"] is False

    text = bob.cli("status", check=0).out
    assert "docs" in text and "last sync" in text and "pending" in text
    assert st["peers"][0]["name"] in text
    assert "conflict" in text
    assert any(e["message"][:30] in text for e in st["errors"]), text


def _block_archive_for(peer: Peer, content: bytes) -> Path:
    """Make the versions archive unable to keep ``content``: a file stands where its folder goes."""
    store_id = json.loads((peer.home / "config.json").read_text())["stores"][0]["id"]
    blocker = peer.home / "versions" / store_id / hashlib.sha256(content).hexdigest()[:2]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_bytes(b"not a folder")
    return blocker


def _an_edit_then_a_rename(alice: Peer, bob: Peer) -> bytes:
    """x.txt and y.txt synced; then a bundle with x.txt's new content (inline), and one with y.txt
    renamed to z.txt (sent by reference to its content). Returns x.txt's old content."""
    old = b"x old " * 100
    alice.write("x.txt", old)
    alice.write("y.txt", b"y content " * 100)
    sync_all(alice, bob)
    alice.write("x.txt", b"x NEW " * 100)
    alice.sync()
    (alice.store / "y.txt").rename(alice.store / "z.txt")
    alice.sync()
    return old


def test_a_file_whose_old_content_cannot_be_archived_waits_and_the_bundles_after_it_lose_nothing(peers):
    """Bob's archive cannot take x.txt's old content (a disk error) while x.txt's new version waits
    to be put in place with the files of later bundles, and a later bundle makes it go in place
    early (a rename, whose content is found by hash). x.txt is kept for a later attempt, the later
    bundles are applied, and once the archive can take it again x.txt arrives. (A failed batch was
    taken for one file's error and the later bundle marked applied: x.txt stayed old for good.)"""
    alice, bob = peers
    old = _an_edit_then_a_rename(alice, bob)
    blocker = _block_archive_for(bob, old)
    bob.sync(check=None)
    assert bob.read("x.txt") == old
    assert bob.read("z.txt") == b"y content " * 100
    assert "x.txt" in bob.cli("errors", check=None).out
    blocker.unlink()
    bob.sync()
    assert tree(bob.store) == tree(alice.store)


def test_a_failed_batch_spanning_bundles_marks_none_of_them(peers, monkeypatch):
    """The same with the batch put in place because it is full, three files from three bundles:
    the one that cannot be archived waits, and the others are in place."""
    from peersync import apply

    alice, bob = peers
    olds = {f"f{i}.txt": f"old {i} ".encode() * 100 for i in range(4)}
    for rel, data in olds.items():
        alice.write(rel, data)
    sync_all(alice, bob)
    for i in range(4):
        alice.write(f"f{i}.txt", f"NEW {i} ".encode() * 100)
        alice.sync()  # one bundle each
    monkeypatch.setattr(apply, "QUEUE_MAX", 3)
    blocker = _block_archive_for(bob, olds["f0.txt"])
    bob.sync(check=None)
    assert bob.read("f0.txt") == olds["f0.txt"]
    assert [bob.read(f"f{i}.txt") for i in (1, 2, 3)] == [alice.read(f"f{i}.txt") for i in (1, 2, 3)]
    blocker.unlink()
    bob.sync()
    assert tree(bob.store) == tree(alice.store)


def test_a_batch_that_fails_with_no_way_to_keep_its_files_marks_no_bundle(peers):
    """Worse: the file that cannot be put in place cannot be kept for later either (its content
    cannot be staged). The whole batch fails, no bundle it holds files of is marked applied, and
    once the disk is usable again both bundles are read again and everything arrives. (Taken for an
    error of the file being applied when the batch went in place, z.txt, it marked both.)"""
    alice, bob = peers
    old = _an_edit_then_a_rename(alice, bob)
    blocker = _block_archive_for(bob, old)
    store_id = json.loads((bob.home / "config.json").read_text())["stores"][0]["id"]
    staging = bob.home / "stores" / store_id / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.write_bytes(b"not a folder")
    assert bob.sync(check=None).code != 0
    assert "could not be applied" in bob.cli("errors", check=None).out
    blocker.unlink()
    staging.unlink()
    bob.sync()
    assert tree(bob.store) == tree(alice.store)


# The disk errors below (EROFS on an unlink, EIO from syncfs or a folder's fsync) cannot be made on
# this machine's filesystems at will, so the OS calls in fsutil fail for one call, as the disk would.


def _fail(monkeypatch: pytest.MonkeyPatch, name: str, err: int, when=lambda *a: True, times: int = 1) -> None:
    """Make ``fsutil.<name>`` fail with ``err`` the first ``times`` calls that ``when`` picks."""
    from peersync import fsutil

    real = getattr(fsutil, name)
    done: list[bool] = []

    def failing(*args, **kw):
        if len(done) < times and when(*args):
            done.append(True)
            raise OSError(err, os.strerror(err))
        return real(*args, **kw)

    monkeypatch.setattr(fsutil, name, failing)


def test_a_batch_whose_clean_up_fails_too_marks_no_bundle(peers, monkeypatch):
    """x.txt cannot be archived, and removing its temporary file then fails (a read-only remount):
    the batch fails as a whole, with nothing marked, instead of being taken for z.txt's error."""
    alice, bob = peers
    old = _an_edit_then_a_rename(alice, bob)
    blocker = _block_archive_for(bob, old)
    _fail(monkeypatch, "remove", errno.EROFS, lambda p: str(p).endswith("-x.txt"), times=100)
    bob.sync(check=None)
    monkeypatch.undo()
    blocker.unlink()
    bob.sync(check=None)  # the temporary file left behind goes with this scan
    bob.sync()
    assert tree(bob.store) == tree(alice.store)


def test_when_the_files_of_a_batch_cannot_be_made_durable_its_folders_and_versions_are_recorded(peers, monkeypatch):
    """Bundle 1 makes p.txt executable (a version adopted, recorded with the batch) and adds q.txt
    (queued); bundle 2 deletes p.txt, which puts the batch in place first. Making q.txt durable
    fails: it waits, and p.txt's row is recorded with the bundles' marks, before the deletion is
    decided against it (it was left for a later batch and written over the deletion's row)."""
    alice, bob = peers
    alice.write("p.txt", b"p " * 100)
    sync_all(alice, bob)
    os.chmod(alice.store / "p.txt", 0o755)
    alice.write("q.txt", b"q " * 100)
    alice.sync()
    (alice.store / "p.txt").unlink()
    alice.sync()
    _fail(monkeypatch, "sync_files", errno.EIO)
    bob.sync(check=None)
    monkeypatch.undo()
    assert not (bob.store / "p.txt").exists()
    assert "0 changes to send" in bob.cli("queue", check=0).out
    sync_all(bob, alice)
    assert sorted(tree(alice.store)) == ["q.txt"]
    assert tree(bob.store) == tree(alice.store)


@pytest.mark.parametrize("readable", [True, False])
def test_files_put_in_place_before_a_batch_failed_are_recorded_at_once(peers, monkeypatch, readable):
    """The folders of a batch cannot be made durable after its files were renamed into place: the
    batch fails (no mark), and the renamed files get their rows at once, not a cycle later (another
    peer's bundles, read in the same cycle, would take them for edits made on this disk). One that
    cannot be read back either (EIO) keeps its intent for the next cycle's recovery: dropped, it
    left the new content under the old row for the next scan to take for a local edit."""
    from test_stop import index_rows

    alice, bob = peers
    alice.write("x.txt", b"x old " * 100)
    sync_all(alice, bob)
    alice.write("x.txt", b"x new " * 100)
    alice.sync()
    _fail(monkeypatch, "sync_folders", errno.EIO)
    if not readable:
        _fail(monkeypatch, "hash_file", errno.EIO, lambda p: os.path.basename(str(p)) == "x.txt")
    bob.sync(check=None)
    monkeypatch.undo()
    assert bob.read("x.txt") == b"x new " * 100
    if readable:
        assert index_rows(bob) == [("x.txt", hashlib.sha256(b"x new " * 100).hexdigest(), 600)]
    assert "0 changes to send" in bob.cli("queue", check=0).out
    sync_all(bob, alice)
    assert tree(bob.store) == tree(alice.store)



def test_a_failed_batch_whose_clean_up_fails_still_records_the_files_it_renamed(peers, monkeypatch):
    """w.txt is renamed into place; x.txt's old content cannot be archived and its temporary file
    cannot be removed (EROFS): the batch fails, and w.txt still gets its row at once."""
    from test_stop import index_rows

    alice, bob = peers
    old = b"x old " * 100
    alice.write("w.txt", b"w old " * 100)
    alice.write("x.txt", old)
    sync_all(alice, bob)
    alice.write("w.txt", b"w new " * 100)
    alice.sync()
    alice.write("x.txt", b"x new " * 100)
    alice.sync()
    blocker = _block_archive_for(bob, old)
    _fail(monkeypatch, "remove", errno.EROFS, lambda p: str(p).endswith("-x.txt"), times=100)
    bob.sync(check=None)
    monkeypatch.undo()
    assert bob.read("w.txt") == b"w new " * 100
    assert dict((p, h) for p, h, _ in index_rows(bob))["w.txt"] == hashlib.sha256(b"w new " * 100).hexdigest()
    blocker.unlink()
    sync_all(bob, alice)
    assert tree(bob.store) == tree(alice.store)
