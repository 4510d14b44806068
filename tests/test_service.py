"""The background service: real `peersync run` subprocesses on two and three peers.

Every peer runs ``python -m peersync run`` in its own process, with its own
state folder, sharing one relay folder on this machine. Tests change files on
disk the way a user would and wait (bounded polls, never fixed sleeps as
assertions) for the other peers' folders to follow. Signals are real signals.

The helpers here (``wait_until``, ``Service``, the ``services`` and ``hold``
fixtures, ``bundles_of``) are shared with test_queue_reset.py and
test_office_saves.py.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Peer, tree

# -- shared helpers ----------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what or predicate}")
        time.sleep(interval)


def becomes(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> bool:
    """Like wait_until, but answer True/False instead of failing (to assert later)."""
    try:
        wait_until(predicate, timeout, interval)
        return True
    except AssertionError:
        return False


def stays_false(predicate: Callable[[], Any], seconds: float, interval: float = 0.1) -> bool:
    """True if ``predicate`` never held during ``seconds`` (a negative check needs some waiting)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return False
        time.sleep(interval)
    return not predicate()


class Service:
    """One `peersync run` subprocess; its stdout and stderr are drained by threads as they come."""

    def __init__(self, peer: Peer, *args: str) -> None:
        self.peer = peer
        self.proc = peer.popen("run", *args)
        self.pid = self.proc.pid
        self._out: list[str] = []
        self._err: list[str] = []
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line)

    @property
    def out(self) -> str:
        return "".join(self._out)

    @property
    def err(self) -> str:
        return "".join(self._err)

    def started(self, timeout: float = 30) -> Service:
        """Wait for the banner, printed once the lock is held and the signal handlers are set."""
        wait_until(lambda: "is syncing" in self.out or self.proc.poll() is not None, timeout,
                   what=f"{self.peer.name}'s service to start")
        assert self.proc.poll() is None, f"{self.peer.name}: run exited {self.proc.returncode}\n{self.out}\n{self.err}"
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` and return the exit status; kill it and fail if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.peer.name}'s service did not stop within {timeout} s of signal {sig}") from None
        self.join()
        assert "Traceback" not in self.err, self.err
        return code

    def join(self) -> None:
        for t in self._threads:
            t.join(timeout=5)

    def reap(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.join()


@pytest.fixture
def services() -> Iterator[Callable[..., Service]]:
    """``start(peer, *args)``: a running `peersync run`, always terminated at the end of the test."""
    running: list[Service] = []

    def start(peer: Peer, *args: str, wait: bool = True) -> Service:
        s = Service(peer, *args)
        running.append(s)
        if wait:
            s.started()
        return s

    yield start
    for s in running:
        if s.proc.poll() is None:
            s.proc.terminate()
    for s in running:
        s.reap()


def _chattr(flag: str, path: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _writable(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        return exc.errno not in (errno.EPERM, errno.EACCES)
    os.close(fd)
    return True


@pytest.fixture
def hold() -> Iterator[Callable[[Path], Callable[[], None]]]:
    """``release = hold(path)``: make a file impossible for peersync to replace, as a program holding it would.

    ``chattr +i`` (root, ext4); otherwise, when not root, read-only file and folder.
    Skips only if neither can hold the file. Everything is released at the end.
    """
    releases: list[Callable[[], None]] = []

    def do_hold(path: Path) -> Callable[[], None]:
        done = False

        if _chattr("+i", path) and not _writable(path):
            def release() -> None:
                nonlocal done
                if not done:
                    _chattr("-i", path)
                    done = True
        elif os.geteuid() != 0:
            _chattr("-i", path)
            file_mode, dir_mode = path.stat().st_mode, path.parent.stat().st_mode
            path.chmod(0o444)
            path.parent.chmod(0o555)

            def release() -> None:
                nonlocal done
                if not done:
                    path.parent.chmod(dir_mode & 0o7777)
                    path.chmod(file_mode & 0o7777)
                    done = True
        else:
            _chattr("-i", path)
            pytest.skip("neither chattr +i nor a read-only mode can hold a file here")
        releases.append(release)
        return release

    yield do_hold
    for release in releases:
        release()


def peer_id(peer: Peer) -> str:
    return str(json.loads((peer.home / "identity.json").read_text())["peer_id"])


def store_id(peer: Peer) -> str:
    return str(json.loads((peer.home / "config.json").read_text())["stores"][0]["id"])


def bundles_dir(peer: Peer) -> Path:
    return peer.relay / store_id(peer) / "peers" / peer_id(peer) / "bundles"


def bundles_of(peer: Peer) -> list[Path]:
    folder = bundles_dir(peer)
    return sorted(folder.glob("*.psb")) if folder.exists() else []


def status_json(peer: Peer) -> dict[str, Any]:
    return json.loads(peer.cli("status", "--json", check=0).out)  # type: ignore[no-any-return]


def queue_items(peer: Peer, *args: str) -> list[tuple[int, str, str]]:
    """`peersync queue` as (number, operation, path), in the order listed."""
    out = peer.cli("queue", *args, check=0).out
    items = []
    for line in out.splitlines():
        m = re.match(r"^\s*(\d+)\s+(\S+)\s+(.+?)(?:\s+\(\d+ bytes\))?$", line)
        if m:
            items.append((int(m.group(1)), m.group(2), m.group(3)))
    return items


def same_trees(*peers: Peer, expect: dict[str, bytes | None] | None = None) -> Callable[[], bool]:
    """A predicate: every peer's store holds the same tree (and it is ``expect``, if given)."""

    def check() -> bool:
        try:
            first = tree(peers[0].store)
            if expect is not None and first != expect:
                return False
            return all(tree(p.store) == first for p in peers[1:])
        except FileNotFoundError:  # a temporary file came and went while we looked
            return False

    return check


# -- edits flow with no manual sync ------------------------------------------------------------


def test_two_running_peers_follow_each_others_creates_edits_renames_and_deletes(make_peers, services):
    """Two laptops with the service running: whatever one does to the folder, the other follows by itself."""
    alice, bob = make_peers(2)
    alice.write("readme.txt", "hello\n")
    sa, sb = services(alice), services(bob)

    wait_until(same_trees(alice, bob, expect={"readme.txt": b"hello\n"}), what="the first file on bob")

    alice.write("quotes/q1.txt", "quote 1 for ACME\n")
    alice.write("quotes/q2.txt", "quote 2 for Initech\n")
    expect = {"readme.txt": b"hello\n", "quotes": None, "quotes/q1.txt": b"quote 1 for ACME\n",
              "quotes/q2.txt": b"quote 2 for Initech\n"}
    wait_until(same_trees(alice, bob, expect=expect), what="alice's new files on bob")

    bob.write("quotes/q1.txt", "quote 1 for ACME, 10% off\n")
    expect["quotes/q1.txt"] = b"quote 1 for ACME, 10% off\n"
    wait_until(same_trees(alice, bob, expect=expect), what="bob's edit on alice")

    (alice.store / "quotes/q2.txt").rename(alice.store / "quotes/q2-final.txt")
    expect["quotes/q2-final.txt"] = expect.pop("quotes/q2.txt")
    wait_until(same_trees(alice, bob, expect=expect), what="alice's rename on bob")

    (bob.store / "readme.txt").unlink()
    del expect["readme.txt"]
    wait_until(same_trees(alice, bob, expect=expect), what="bob's deletion on alice")

    (alice.store / "archive").mkdir()
    expect["archive"] = None
    wait_until(same_trees(alice, bob, expect=expect), what="alice's new folder on bob")

    assert sa.stop() == 0 and sb.stop() == 0
    assert not [p for p in (alice.store, bob.store) for _ in p.rglob("*.sync-conflict-*")]


def test_three_running_peers_stay_identical(make_peers, services):
    """The office PC and two reps' laptops, all running: each one's changes reach both others."""
    alice, bob, carol = make_peers(3)
    for p in (alice, bob, carol):
        services(p)

    alice.write("orders/o-100.txt", "2 boxes\n")
    alice.write("orders/o-101.txt", "5 boxes\n")
    expect: dict[str, bytes | None] = {"orders": None, "orders/o-100.txt": b"2 boxes\n",
                                        "orders/o-101.txt": b"5 boxes\n"}
    wait_until(same_trees(alice, bob, carol, expect=expect), timeout=30, what="alice's orders everywhere")

    carol.write("orders/o-100.txt", "3 boxes\n")
    expect["orders/o-100.txt"] = b"3 boxes\n"
    wait_until(same_trees(alice, bob, carol, expect=expect), timeout=30, what="carol's edit everywhere")

    (bob.store / "orders/o-101.txt").rename(bob.store / "orders/o-101-shipped.txt")
    expect["orders/o-101-shipped.txt"] = expect.pop("orders/o-101.txt")
    wait_until(same_trees(alice, bob, carol, expect=expect), timeout=30, what="bob's rename everywhere")

    (carol.store / "orders/o-100.txt").unlink()
    del expect["orders/o-100.txt"]
    bob.write("notes.txt", "call carol\n")
    expect["notes.txt"] = b"call carol\n"
    wait_until(same_trees(alice, bob, carol, expect=expect), timeout=30,
               what="carol's deletion and bob's new file everywhere")


def test_a_burst_of_1000_saves_becomes_a_handful_of_bundles(make_peers, services):
    """A script (or an unzip) writes 1,000 small files at once: they travel in a few bundles, not 1,000."""
    alice, bob = make_peers(2)
    services(alice)
    services(bob)
    for i in range(1000):
        alice.write(f"burst/f{i:04d}.txt", f"save number {i}\n")
    expect: dict[str, bytes | None] = {"burst": None}
    expect.update({f"burst/f{i:04d}.txt": f"save number {i}\n".encode() for i in range(1000)})
    wait_until(same_trees(alice, bob, expect=expect), timeout=90, interval=0.5, what="1,000 files on bob")
    written = bundles_of(alice)
    assert 0 < len(written) < 20, f"alice wrote {len(written)} bundles for one burst of 1,000 saves"


# -- stopping, and one service per state folder -----------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_sync_stops_cleanly_and_leaves_store_and_index_consistent(make_peers, services, sig):
    """Logging off (SIGTERM) or Ctrl-C (SIGINT) while a large batch is being sent: nothing is half done."""
    alice, bob = make_peers(2)
    for i in range(300):  # about 4 bundles' worth, sent by the service's first cycle
        alice.write(f"scans/page{i:03d}.bin", os.urandom(100_000))
    service = services(alice)
    # Strike while the batch is on its way: as soon as its first bundle lands.
    wait_until(lambda: bundles_of(alice), timeout=30, interval=0.01, what="the first bundle of the batch")
    assert service.stop(sig, timeout=60) == 0, service.err

    alice.sync()
    leftovers = [p for p in alice.store.rglob("*") if p.name.startswith(".peersync-tmp-")]
    leftovers += [p for p in bundles_dir(alice).glob("*") if p.name.startswith(".peersync-tmp-")]
    assert leftovers == []
    assert queue_items(alice) == [], "the index disagrees with the disk: changes still queued after a sync"
    assert "0 changes to send" in alice.cli("queue", check=0).out
    bob.sync()
    assert tree(bob.store) == tree(alice.store)
    assert len([k for k in tree(bob.store) if k.startswith("scans/page")]) == 300


def test_a_second_service_for_the_same_state_folder_is_refused_with_the_first_pid(make_peers, services):
    """The service is already started at logon and the user starts it again by hand."""
    (alice,) = make_peers(1, join=False)
    first = services(alice)
    second = alice.popen("run")
    try:
        out, err = second.communicate(timeout=60)
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    assert second.returncode == 2, (out, err)
    assert str(first.pid) in err, err
    assert "Traceback" not in err
    assert first.proc.poll() is None, "the first service must keep running"
    assert first.stop() == 0
    log = alice.home / "logs" / "peersync.log"
    assert log.is_file()
    assert "service started" in log.read_text()
    # Once the first is gone, a new one may start.
    again = services(alice)
    assert again.stop(signal.SIGINT) == 0


def test_sync_now_works_while_the_service_runs(make_peers, services):
    """The user clicks "sync now" (`peersync sync`) while the service runs: it runs, returns, and exits 0."""
    alice, bob = make_peers(2)
    service = services(alice)
    alice.write("now.txt", "urgent\n")
    r = alice.sync()
    assert r.out.strip().startswith("✓"), r.out
    bob.sync()
    assert bob.read("now.txt") == b"urgent\n"
    assert service.proc.poll() is None
    assert service.stop() == 0


# -- a file another program holds --------------------------------------------------------------


def test_a_held_file_is_reported_retried_and_synced_once_released(make_peers, services, hold):
    """Bob has the quote open in a program that holds it; Alice edits it; it arrives once he closes it."""
    alice, bob = make_peers(2)
    alice.write("held/quote.txt", "version 1\n")
    alice.sync()
    bob.sync()
    target = bob.store / "held/quote.txt"
    release = hold(target)
    services(alice)
    services(bob)

    alice.write("held/quote.txt", "version 2 from alice\n")
    errors_out = wait_until(lambda: "held/quote.txt" in (o := bob.cli("errors", check=0).out) and o,
                            timeout=30, interval=0.3, what="bob to report the held file")
    assert "✗" in errors_out

    def apply_error() -> dict[str, Any] | None:
        errs = status_json(bob)["stores"][0]["errors"]
        return next((e for e in errs if e["kind"] == "apply" and e["subject"] == "held/quote.txt"), None)

    first = apply_error()
    assert first is not None, "status --json lists no apply error for the held file"
    assert target.read_bytes() == b"version 1\n"
    # While the file stays held, the service keeps trying by itself (the count of failed cycles grows).
    retried = becomes(lambda: (e := apply_error()) is not None and e["cycles"] >= first["cycles"] + 2, timeout=12)

    release()
    arrived = becomes(lambda: target.read_bytes() == b"version 2 from alice\n", timeout=12)
    assert retried and arrived, (
        ("" if retried else f"bob's service did not retry the held file by itself: its failed-cycle count stayed "
                            f"at {first['cycles']} for 12 s. ")
        + ("" if arrived else f"Alice's edit never arrived after the file was released; bob has "
                              f"{target.read_bytes()!r} and reports {apply_error()}."))
    wait_until(lambda: apply_error() is None, timeout=20, interval=0.3, what="the error to clear")
    versions = bob.cli("versions", str(target), check=0).out
    assert "overwritten" in versions  # version 1 kept


# -- schedules ---------------------------------------------------------------------------------


def test_a_manual_schedule_waits_for_sync_now(make_peers, services):
    """Bob's laptop syncs only when he asks: the service does not bring Alice's edit until `peersync sync`."""
    alice, bob = make_peers(2)
    bob.cli("config", "schedule", "manual", "--store", "docs", check=0)
    services(alice)
    service_b = services(bob)
    assert "manual" in service_b.out

    alice.write("order.txt", "rush order\n")
    wait_until(lambda: bundles_of(alice), timeout=20, what="alice to publish")
    assert stays_false(lambda: (bob.store / "order.txt").exists(), seconds=4), \
        "a manual store synced without being asked"
    r = bob.sync()
    assert r.code == 0
    assert bob.read("order.txt") == b"rush order\n"
    assert service_b.proc.poll() is None


# -- what the user sees ------------------------------------------------------------------------


def test_sync_prints_plain_progress_lines_when_not_on_a_terminal(peers):
    alice, bob = peers
    for i in range(3):
        alice.write(f"p{i}.txt", f"page {i}\n" * 100)
    r = alice.sync()
    for stage in ("scan", "hash", "pack", "publish"):
        assert re.search(rf"^docs: {stage} \d+ items", r.err, re.M), f"no {stage} line in:\n{r.err}"
    assert re.search(r"^docs: scan 3 items", r.err, re.M), r.err
    r = bob.sync()
    for stage in ("fetch", "verify", "apply"):
        assert re.search(rf"^docs: {stage} \d+ items", r.err, re.M), f"no {stage} line in:\n{r.err}"
    assert "\x1b[" not in r.err, "terminal escapes written to a pipe"


def test_quiet_prints_nothing_and_verbose_is_accepted(peers):
    alice, bob = peers
    alice.write("a.txt", "a\n")
    for args in (("--quiet", "sync"), ("sync", "--quiet"), ("-q", "sync")):
        r = alice.cli(*args, check=0)
        assert r.out == "", (args, r.out)
        assert "items" not in r.err, (args, r.err)
    for args in (("--verbose", "sync"), ("sync", "--verbose"), ("-v", "sync")):
        bob.cli(*args, check=0)
    assert bob.read("a.txt") == b"a\n"
    assert (alice.home / "logs" / "peersync.log").is_file()
