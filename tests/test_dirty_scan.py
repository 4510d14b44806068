"""The service scans only what its watcher reported, and the whole store when the watcher may have missed something.

A change made without an event is made here the way it happens on real
machines: through a hard link whose other name lies outside the store
(inotify reports a write to the watches of the folder of the name used, so
the store's watch hears nothing). Such a change is invisible to a scan of
the reported paths, and found by a full rescan: at start, every
``rescan_seconds``, when more than ``watch_max_paths`` paths changed at
once, and by `peersync sync`.

To know that a running service has finished its first (full) cycle, a test
writes a file before starting it and waits for that file on the other peer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import unicodedata
from pathlib import Path

import pytest
from conftest import Peer
from test_service import same_trees, services, wait_until  # noqa: F401  (services is a fixture)

from peersync.ignore import Ignore
from peersync.index import Index
from peersync.scan import NeedFullScan, Scanner
from peersync.state import DEFAULTS


def write_behind_the_watchers_back(link: Path, data: bytes) -> None:
    """Rewrite a store file through its hard link outside the store: no event reaches the store's watch."""
    with open(link, "r+b") as f:
        f.write(data)
        f.truncate()


def indexed_hash(peer: Peer, rel: str) -> str | None:
    db = next((peer.home / "stores").glob("*/index.db"))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT hash FROM files WHERE path=? AND deleted=0", (rel,)).fetchone()
    finally:
        con.close()
    return None if row is None else str(row[0])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def started_and_synced(alice: Peer, bob: Peer, services, *args: str) -> None:  # noqa: F811
    """Start both services and wait until alice's first cycle (a full scan) has reached bob."""
    alice.write("ready.txt", "alice's service has scanned\n")
    services(alice, *args)
    services(bob)
    wait_until(lambda: (bob.store / "ready.txt").exists(), timeout=60, what="alice's first cycle on bob")


def test_with_a_long_rescan_an_edit_flows_through_its_path_alone(make_peers, services, tmp_path):  # noqa: F811
    """An edit the watcher reports is sent by a scan of that path only: a change it did not report waits."""
    alice, bob = make_peers(2)
    alice.write("notes.txt", "notes v1\n")
    alice.write("orders/o-1.txt", "order one\n")
    alice.sync()
    bob.sync()
    link = tmp_path / "notes-link.txt"
    os.link(alice.store / "notes.txt", link)
    alice.cli("config", "rescan_seconds", "3600", check=0)
    started_and_synced(alice, bob, services)

    write_behind_the_watchers_back(link, b"notes v2, written through a link\n")
    alice.write("orders/o-1.txt", "order one, 3 boxes\n")
    wait_until(lambda: bob.read("orders/o-1.txt") == b"order one, 3 boxes\n", timeout=30, what="the edit on bob")

    # The cycle that sent the edit looked at its path only: the unreported change is not in the index yet.
    assert indexed_hash(alice, "notes.txt") == sha(b"notes v1\n"), "the edit's cycle scanned the whole store"
    assert bob.read("notes.txt") == b"notes v1\n"
    assert bob.read("ready.txt") and (bob.store / "orders").is_dir(), "a partial scan deleted what it did not see"

    # "Sync now" scans the whole store, and the service brings the change to bob.
    alice.sync()
    wait_until(lambda: bob.read("notes.txt") == b"notes v2, written through a link\n", timeout=30,
               what="the unreported change on bob after `peersync sync`")


def test_the_periodic_full_rescan_finds_a_change_the_watcher_missed(make_peers, services, tmp_path):  # noqa: F811
    alice, bob = make_peers(2)
    alice.write("price-list.txt", "prices v1\n")
    alice.sync()
    bob.sync()
    link = tmp_path / "price-link.txt"
    os.link(alice.store / "price-list.txt", link)
    alice.cli("config", "rescan_seconds", "3", check=0)
    started_and_synced(alice, bob, services)

    write_behind_the_watchers_back(link, b"prices v2, nobody told the watcher\n")
    wait_until(lambda: bob.read("price-list.txt") == b"prices v2, nobody told the watcher\n", timeout=60,
               what="the periodic rescan to find the change")


def test_more_changed_paths_than_watch_max_paths_make_a_full_scan(make_peers, services, tmp_path):  # noqa: F811
    """An unzip of many files at once: past the cap, the cycle scans the whole store instead of each path."""
    alice, bob = make_peers(2)
    alice.write("notes.txt", "notes v1\n")
    alice.sync()
    bob.sync()
    link = tmp_path / "notes-link.txt"
    os.link(alice.store / "notes.txt", link)
    alice.cli("config", "rescan_seconds", "3600", check=0)
    alice.cli("config", "watch_max_paths", "5", check=0)
    started_and_synced(alice, bob, services)

    write_behind_the_watchers_back(link, b"notes v2\n")
    for i in range(50):
        alice.write(f"unzipped/f{i:02d}.txt", f"file {i}\n")
    wait_until(lambda: len(list((bob.store / "unzipped").glob("*.txt"))) == 50 if (bob.store / "unzipped").is_dir()
               else False, timeout=60, what="the 50 files on bob")
    wait_until(lambda: bob.read("notes.txt") == b"notes v2\n", timeout=30,
               what="the unreported change, found by the full scan the burst caused")


def test_folders_created_renamed_moved_in_and_out_are_scanned_whole(make_peers, services, tmp_path):  # noqa: F811
    """A folder raises one event when it is renamed or moved; what it holds must follow all the same."""
    alice, bob = make_peers(2)
    for name in ("a", "b", "c"):
        alice.write(f"projects/acme/{name}.txt", f"acme {name}\n")
        alice.write(f"keep/{name}.txt", f"keep {name}\n")
    alice.sync()
    bob.sync()
    alice.cli("config", "rescan_seconds", "3600", check=0)
    started_and_synced(alice, bob, services)

    (alice.store / "projects/acme").rename(alice.store / "projects/acme-2024")
    wait_until(same_trees(alice, bob), timeout=30, what="the renamed folder on bob")
    assert bob.read("projects/acme-2024/b.txt") == b"acme b\n"
    assert not (bob.store / "projects/acme").exists()

    incoming = tmp_path / "incoming"
    (incoming / "deep").mkdir(parents=True)
    (incoming / "x.txt").write_text("moved in\n")
    (incoming / "deep" / "y.txt").write_text("moved in, deeper\n")
    shutil.move(str(incoming), str(alice.store / "projects" / "incoming"))
    wait_until(same_trees(alice, bob), timeout=30, what="the folder moved into the store on bob")
    assert bob.read("projects/incoming/deep/y.txt") == b"moved in, deeper\n"

    shutil.move(str(alice.store / "projects" / "incoming"), str(tmp_path / "taken-out"))
    wait_until(same_trees(alice, bob), timeout=30, what="the folder moved out of the store, gone on bob")
    assert not (bob.store / "projects/incoming").exists()
    assert bob.read("keep/a.txt") == b"keep a\n"


def test_a_mass_deletion_seen_by_the_watcher_is_held_and_stays_held(make_peers, services):  # noqa: F811
    """Someone deletes most of the folder while the service runs: held, and later partial scans keep it held."""
    alice, bob = make_peers(2)
    for i in range(10):
        alice.write(f"customers/c{i}.txt", f"customer {i}\n")
    alice.write("readme.txt", "read me\n")
    alice.sync()
    bob.sync()
    alice.cli("config", "rescan_seconds", "3600", check=0)
    started_and_synced(alice, bob, services)

    shutil.rmtree(alice.store / "customers")
    wait_until(lambda: "held" in alice.cli("errors", check=0).out, timeout=30, what="the deletion to be held")
    alice.write("later.txt", "a later edit, scanned on its own\n")
    wait_until(lambda: (bob.store / "later.txt").exists(), timeout=30, what="the later edit on bob")
    assert "held" in alice.cli("errors", check=0).out, "a partial scan released the held deletion"
    assert len(list((bob.store / "customers").glob("*.txt"))) == 10

    alice.sync("--allow-deletes")
    wait_until(lambda: not (bob.store / "customers").exists() or not list((bob.store / "customers").glob("*")),
               timeout=30, what="the confirmed deletion on bob")


# -- the partial scan itself, on a real index ------------------------------------------------------------------


def scanner_for(root: Path, tmp_path: Path) -> Scanner:
    root.mkdir(parents=True, exist_ok=True)
    return Scanner(root, Index(tmp_path / "index.db"), Ignore(root), "A" * 26, dict(DEFAULTS))


def live(scanner: Scanner) -> dict[str, str]:
    return {e.path: e.kind for e in scanner.index.entries(live_only=True)}


def test_a_partial_scan_takes_nothing_it_did_not_look_at_for_deleted(tmp_path):
    root = tmp_path / "store"
    s = scanner_for(root, tmp_path)
    for rel in ("a.txt", "b.txt", "sub/c.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    s.scan()
    (root / "a.txt").unlink()
    (root / "sub/c.txt").unlink()
    (root / "b.txt").write_text("b changed")
    result = s.scan_paths({"b.txt": False})
    assert (result.changed, result.deleted) == (1, 0)
    assert set(live(s)) == {"a.txt", "b.txt", "sub", "sub/c.txt"}
    result = s.scan_paths({"sub/c.txt": False})
    assert result.deleted == 1
    assert set(live(s)) == {"a.txt", "b.txt", "sub"}


def test_a_folder_reported_deep_is_walked_whole_and_a_gone_one_takes_its_content_along(tmp_path):
    """Where a watcher reports a folder moved in but nothing of what it holds (FSEvents, Windows), the walk finds it."""
    root = tmp_path / "store"
    s = scanner_for(root, tmp_path)
    (root / "keep.txt").write_text("keep")
    s.scan()
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "x.txt").write_text("x")
    (outside / "deep" / "y.txt").write_text("y")
    (outside / "~$lock.docx").write_text("an ignored owner file")
    os.rename(outside, root / "moved-in")

    s.scan_paths({"moved-in": False})  # shallow: the folder only
    assert set(live(s)) == {"keep.txt", "moved-in"}
    s.scan_paths({"moved-in": True})
    assert set(live(s)) == {"keep.txt", "moved-in", "moved-in/x.txt", "moved-in/deep", "moved-in/deep/y.txt"}

    os.rename(root / "moved-in", tmp_path / "moved-out")
    result = s.scan_paths({"moved-in": False})  # gone: everything under it is gone too
    assert result.deleted == 4
    assert set(live(s)) == {"keep.txt"}


def test_a_partial_scan_notes_the_folders_on_the_way_and_leaves_ignored_paths_alone(tmp_path):
    root = tmp_path / "store"
    s = scanner_for(root, tmp_path)
    s.scan()
    (root / "x/y").mkdir(parents=True)
    (root / "x/y/z.txt").write_text("z")
    (root / "~$Quote.docx").write_text("owner file")
    s.scan_paths({"x/y/z.txt": False, "~$Quote.docx": False})
    assert live(s) == {"x": "dir", "x/y": "dir", "x/y/z.txt": "file"}


def test_a_partial_scan_leaves_to_a_full_one_what_only_it_handles(tmp_path):
    root = tmp_path / "store"
    s = scanner_for(root, tmp_path)
    s.scan()
    (root / ".peersyncignore").write_text("*.pdf\n")
    with pytest.raises(NeedFullScan):
        s.scan_paths({".peersyncignore": False})
    nfd = unicodedata.normalize("NFD", "café.txt")
    (root / nfd).write_text("decomposed name")
    with pytest.raises(NeedFullScan):
        s.scan_paths({nfd: False})


def test_a_stop_during_the_walk_of_a_reported_folder_deletes_nothing(tmp_path):
    """A stop request ends the walk of a folder reported deep; the files it did not reach are not deleted ones."""
    root = tmp_path / "store"
    s = scanner_for(root, tmp_path)
    for i in range(30):
        (root / f"other{i:02d}.txt").write_text("other")
    (root / "folder").mkdir()
    for i in range(10):
        (root / "folder" / f"f{i}.txt").write_text(f"f{i}")
    s.scan()
    asked = 0

    def stop_after_three() -> bool:
        nonlocal asked
        asked += 1
        return asked > 4  # one for the reported path, three entries of its walk

    s.stop = stop_after_three
    result = s.scan_paths({"folder": True})
    assert result.stopped
    assert result.deleted == 0
    assert len([p for p in live(s) if p.startswith("folder/")]) == 10
