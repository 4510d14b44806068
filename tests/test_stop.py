"""Stopping promptly: a signal ends a cycle after its current atomic step, not at the end of the cycle.

A laptop's first cycle over a large folder can take minutes; systemd kills a
service that has not stopped 90 s after SIGTERM, and a user who presses
Ctrl-C does not wait for a gigabyte to be sent. Each test strikes in the
middle of a large cycle (known from what the process has done so far, never
from a clock), checks that it stopped before the cycle's end with a store
and an index that agree, and that the next start finishes the work.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import threading
from pathlib import Path

from conftest import Peer, tree
from test_service import bundles_of, same_trees, services, wait_until  # noqa: F401  (fixtures)

FILES = 1200
SIZE = 100_000  # 120 MB of incompressible content: about 15 bundles, several seconds to send


def fill(peer: Peer, n: int = FILES) -> None:
    for i in range(n):
        peer.write(f"scans/d{i % 12:02d}/page{i:04d}.bin", os.urandom(SIZE))


def files_in(root: Path) -> int:
    return sum(1 for p in root.rglob("page*.bin"))


def index_rows(peer: Peer) -> list[tuple[str, str, int]]:
    """(path, hash, size) of every live file the peer's index holds."""
    db = next((peer.home / "stores").glob("*/index.db"))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(con.execute("SELECT path, hash, size FROM files WHERE deleted=0 AND kind='file'"))
    finally:
        con.close()


def assert_index_agrees_with_disk(peer: Peer) -> None:
    """Every live file the index holds is on disk with that content; no temporary file or intent is left."""
    db = next((peer.home / "stores").glob("*/index.db"))
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM intents").fetchone()[0] == 0, "an apply was left half done"
    finally:
        con.close()
    for path, digest, size in index_rows(peer):
        data = (peer.store / path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (size, digest), f"{peer.name}: {path} differs"
    leftovers = [p for p in peer.store.rglob("*") if p.name.startswith(".peersync-tmp-")]
    assert leftovers == [], leftovers


def log_text(peer: Peer) -> str:
    return (peer.home / "logs" / "peersync.log").read_text()


def test_sigterm_mid_publish_stops_the_service_before_the_cycle_ends(make_peers, services):  # noqa: F811
    """Logging off while the service sends a large first cycle: it stops after the bundle it is writing."""
    alice, bob = make_peers(2)
    fill(alice)
    service = services(alice)
    wait_until(lambda: bundles_of(alice), timeout=120, interval=0.01, what="alice's first bundle")
    assert service.stop(signal.SIGTERM, timeout=60) == 0, service.err
    assert "stopped during publish" in log_text(alice), log_text(alice)[-2000:]
    assert_index_agrees_with_disk(alice)

    # What reached the relay is less than the whole folder: the cycle did not run to its end.
    bob.sync()
    sent = files_in(bob.store)
    assert sent < FILES, "the service sent everything before stopping: the signal waited for the end of the cycle"
    assert_index_agrees_with_disk(bob)

    # The next start sends the rest.
    services(alice)
    services(bob)
    wait_until(same_trees(alice, bob), timeout=180, interval=0.5, what="bob to catch up after alice's restart")
    assert files_in(bob.store) == FILES


def test_sigterm_mid_apply_stops_between_records_and_the_restart_finishes(make_peers, services):  # noqa: F811
    """Bob's service is applying a large batch when his laptop shuts down: it stops after the file it writes."""
    alice, bob = make_peers(2)
    fill(alice)
    alice.sync()
    service = services(bob)
    wait_until(lambda: (bob.store / "scans").is_dir() and files_in(bob.store) >= 10, timeout=120, interval=0.01,
               what="bob to start applying")
    assert service.stop(signal.SIGTERM, timeout=60) == 0, service.err
    assert "stopped during apply" in log_text(bob), log_text(bob)[-2000:]
    assert files_in(bob.store) < FILES, "bob applied everything before stopping"
    assert_index_agrees_with_disk(bob)
    assert len(index_rows(bob)) == files_in(bob.store)

    services(bob)
    wait_until(lambda: files_in(bob.store) == FILES and same_trees(alice, bob)(), timeout=180, interval=0.5,
               what="bob to finish after his restart")
    assert not list(bob.store.rglob("*.sync-conflict-*"))


def test_ctrl_c_during_the_scan_of_sync_stops_and_the_next_sync_finishes(make_peers):
    """`peersync sync` on a large folder, interrupted while it scans: nothing half done, nothing taken as deleted."""
    alice, bob = make_peers(2)
    fill(alice)
    proc = alice.popen("sync")
    lines: list[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    # The plain progress lines say how far the scan is: strike once a tenth of the folder is scanned.
    wait_until(lambda: any("scan 120/1200 items" in line for line in lines) or proc.poll() is not None,
               timeout=120, interval=0.01, what="the scan to be under way")
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert proc.stdout is not None
    out = proc.stdout.read()
    err = "".join(lines)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "Traceback" not in err
    assert "stopped during scan" in out, out
    assert "the next sync does the rest" in err, err
    scanned = len(index_rows(alice))
    assert 0 < scanned < FILES, f"{scanned} of {FILES} files scanned: the scan was not stopped midway"
    assert_index_agrees_with_disk(alice)
    assert bundles_of(alice) == [], "a stopped scan must not go on to publish"

    alice.sync()
    bob.sync()
    assert tree(bob.store) == tree(alice.store)
    assert files_in(bob.store) == FILES
