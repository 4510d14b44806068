"""Publishing seals the next bundle on a second thread while it writes the previous one.

The index must still say exactly what reached the relay: bundles are written
in sequence order, and a write that fails (a full disk under the relay) leaves
every later change queued for the next cycle, none lost and none sent twice.
"""

from __future__ import annotations

import errno
import random

import pytest
from conftest import tree

from peersync.relay import Relay


def test_a_failed_bundle_write_stops_publishing_and_the_rest_follows_next_cycle(peers, monkeypatch):
    alice, bob = peers
    alice.cli("config", "bundle_max_bytes", "65536", check=0)  # one 40 kB file per bundle
    rng = random.Random(3)
    for i in range(6):
        alice.write(f"f{i}.bin", rng.randbytes(40_000))
    real = Relay.write_bundle
    written: list[int] = []

    def full_disk_from_the_third(self, peer, seq, data):
        if len(written) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(seq)
        return real(self, peer, seq, data)

    monkeypatch.setattr(Relay, "write_bundle", full_disk_from_the_third)
    result = alice.sync(check=1)
    assert "cannot be written to the relay" in result.out + result.err
    assert written == [1, 2]
    assert sorted(int(p.stem) for p in alice.relay.rglob("bundles/*.psb")) == [1, 2]

    monkeypatch.setattr(Relay, "write_bundle", real)
    alice.sync()
    seqs = sorted(int(p.stem) for p in alice.relay.rglob("bundles/*.psb"))
    assert seqs == list(range(1, len(seqs) + 1)), "bundles are numbered without gaps"
    bob.sync()
    assert tree(bob.store) == tree(alice.store)


def test_a_seal_that_fails_is_reported_and_nothing_after_it_is_written(peers, monkeypatch):
    """An error raised on the sealing thread surfaces in the cycle, as it did when sealing inline."""
    alice, _bob = peers
    alice.cli("config", "bundle_max_bytes", "65536", check=0)
    for i in range(4):
        alice.write(f"g{i}.bin", random.Random(i).randbytes(40_000))
    from peersync import bundle

    real = bundle.seal

    def broken_second(records, **kw):
        if kw["seq"] == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(records, **kw)

    monkeypatch.setattr(bundle, "seal", broken_second)
    alice.sync(check=1)
    assert sorted(int(p.stem) for p in alice.relay.rglob("bundles/*.psb")) == [1]
    monkeypatch.setattr(bundle, "seal", real)
    alice.sync()
    assert len(list(alice.relay.rglob("bundles/*.psb"))) >= 2


def test_a_file_rewritten_between_scan_and_publish_is_sent_as_it_was_hashed(peers, monkeypatch):
    """The scan keeps the small files it read, and the publish sends those bytes rather than reading
    the files again: what travels is exactly what the index's hash describes. A save that lands in
    between is a newer version, which the next cycle's scan finds and sends."""
    alice, bob = peers
    alice.write("quote.txt", "as scanned")
    from peersync.engine import Engine

    real = Engine._publish

    def save_meanwhile(self, scanner, report):
        alice.write("quote.txt", "saved after the scan, before the publish")
        return real(self, scanner, report)

    monkeypatch.setattr(Engine, "_publish", save_meanwhile)
    alice.sync()
    monkeypatch.setattr(Engine, "_publish", real)
    bob.sync()
    assert bob.read("quote.txt") == b"as scanned"
    alice.sync()
    bob.sync()
    assert bob.read("quote.txt") == b"saved after the scan, before the publish"
    assert "does not match" not in bob.cli("errors", check=0).out


@pytest.fixture(autouse=True)
def _in_process(monkeypatch):
    """These tests patch the relay layer, so every command must run in this process."""
    import conftest

    monkeypatch.setattr(conftest, "SUBPROCESS", False)
