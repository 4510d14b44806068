"""Peers that each see their own copy of the relay, kept in step by a misbehaving cloud service.

``cloudsim.Cloud`` delays, reorders, truncates, duplicates, removes-and-restores
files, leaves zero-byte placeholders and drops "conflicted copies" beside them
-- everything Dropbox, OneDrive or Google Drive do to a shared folder. Through
all of it the stores must end identical, no service artefact may ever enter a
store, no sync may crash, and a bundle caught half-delivered must be waited
for, not quarantined (DESIGN.md invariants 2, 3, 7).
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import forge
import pytest
from cloudsim import Cloud
from conftest import Peer, Result, tree

FOLDERS = ["", "quotes/", "orders/", "orders/2026/"]
# Anything a cloud service names its conflicted copies with; none of our own names contain these.
ARTEFACT_RE = re.compile(r"conflicted copy|-DESKTOP-\d+|\(\d+\)")


class Run:
    """Every sync of one test, with what it returned."""

    def __init__(self) -> None:
        self.results: list[tuple[str, Result]] = []

    def sync(self, peer: Peer) -> Result:
        result = peer.sync(check=None)  # conftest already fails on a traceback
        self.results.append((peer.name, result))
        assert result.code in (0, 1), f"{peer.name}: sync exited {result.code}\n{result.out}\n{result.err}"
        assert "internal error" not in result.err, f"{peer.name}: {result.err}"
        assert "quarantined" not in result.err, (
            f"{peer.name} quarantined a bundle the cloud was still delivering:\n{result.err}")
        return result


def files(peer: Peer) -> list[str]:
    return sorted(p for p, v in tree(peer.store).items() if v is not None)


def random_change(rng: random.Random, peer: Peer, serial: int) -> str:
    """One user action on ``peer``'s store: create, edit, delete or rename a file."""
    existing = files(peer)
    op = rng.choice(["create", "create", "edit", "edit", "delete", "rename"]) if existing else "create"
    if op == "create":
        rel = f"{rng.choice(FOLDERS)}f{serial}.txt"
        size = rng.choice([0, 10, 300, 5000, 20000, 150000])
        peer.write(rel, (f"{peer.name} {serial} " * (size // 8 + 1))[:size])
    elif op == "edit":
        rel = rng.choice(existing)
        with open(peer.store / rel, "ab") as f:
            f.write(f" edited by {peer.name} #{serial}".encode())
    elif op == "delete":
        rel = rng.choice(existing)
        (peer.store / rel).unlink()
    else:
        rel = rng.choice(existing)
        dest = peer.store / f"{rng.choice(FOLDERS)}r{serial}-{Path(rel).name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(peer.store / rel, dest)
    return f"{peer.name} {op} {rel}"


def small_parts(*peers: Peer) -> None:
    """Small parts and bundles, so large files span several bundles the cloud can mangle separately."""
    for p in peers:
        p.cli("config", "part_bytes", "65536", check=0)
        p.cli("config", "bundle_max_bytes", "65536", check=0)


def assert_no_artefacts_in_stores(cloud: Cloud, peers: list[Peer]) -> None:
    copies = {Path(e.path).name for e in cloud.log if e.kind == "conflict"}
    for p in peers:
        for rel in tree(p.store):
            name = rel.rsplit("/", 1)[-1]
            assert name not in copies and not ARTEFACT_RE.search(name), (
                f"a cloud service artefact entered {p.name}'s store: {rel}")


def assert_nothing_quarantined(peers: list[Peer]) -> None:
    for p in peers:
        assert not forge.quarantined(p), f"{p.name} quarantined {forge.quarantined(p)}"
        errors = json.loads(p.cli("status", "--json", check=0).out)["stores"][0]["errors"]
        assert not [e for e in errors if e.get("kind") == "bundle"], errors


def converge(cloud: Cloud, peers: list[Peer], run: Run, rounds: int = 6) -> None:
    """Deliver everything, then sync and deliver until the stores agree and stay agreed."""
    cloud.settle()
    last = None
    for _ in range(rounds):
        codes = [run.sync(p).code for p in peers]
        cloud.settle()
        trees = [tree(p.store) for p in peers]
        same = all(t == trees[0] for t in trees)
        if same and not any(codes) and trees[0] == last:
            return
        last = trees[0] if same else None


@pytest.mark.parametrize(("n", "seed"), [(2, 1), (2, 7), (3, 3), (3, 11)])
def test_stores_converge_through_a_misbehaving_cloud(make_peers, n, seed):
    """Random edits, creates, deletes and renames on every machine while the cloud delays, reorders,
    truncates, duplicates, hides and conflict-copies the relay files."""
    peers = make_peers(n, shared_relay=False)
    if n == 3:
        small_parts(*peers)
    cloud = Cloud([p.relay for p in peers], seed=seed, delay=1, reorder=True, truncate=0.5, duplicate=0.2,
                  vanish=0.15, conflict_copies=0.2, placeholders=0.2)
    rng = random.Random(seed)
    run = Run()
    actions = []
    serial = 0
    for _ in range(6):
        for _ in range(rng.randint(1, 3)):
            serial += 1
            actions.append(random_change(rng, rng.choice(peers), serial))
        for p in peers:
            run.sync(p)
        for _ in range(rng.randint(1, 3)):
            cloud.step()
        assert_no_artefacts_in_stores(cloud, peers)

    converge(cloud, peers, run)

    trees = {p.name: tree(p.store) for p in peers}
    first = trees[peers[0].name]
    for name, t in trees.items():
        assert t == first, (f"{name} differs from {peers[0].name} after settling: "
                            f"only {name}: {sorted(set(t) - set(first))}, "
                            f"only {peers[0].name}: {sorted(set(first) - set(t))}, "
                            f"different: {sorted(k for k in set(t) & set(first) if t[k] != first[k])}\n"
                            f"actions: {actions}")
    assert_no_artefacts_in_stores(cloud, peers)
    assert_nothing_quarantined(peers)
    truncated = [e for e in cloud.log if e.kind in ("partial", "placeholder") and e.path.endswith(".psb")]
    assert truncated, "this seed never delivered a bundle in pieces; pick one that does"
    assert [r.code for _, r in run.results[-n:]] == [0] * n, run.results[-n:]


def test_cloud_conflicted_copies_of_bundles_are_ignored_and_reported_by_doctor(make_peers):
    """Every delivery leaves a service conflicted copy beside the bundle: the engine ignores it and
    `peersync doctor --json` (valid JSON) points it out."""
    alice, bob = make_peers(2, shared_relay=False)
    cloud = Cloud([alice.relay, bob.relay], seed=5, conflict_copies=1.0, conflict_style="dropbox")
    alice.write("quote.txt", "quote 1")
    alice.sync()
    for _ in range(3):
        cloud.step()
    copies = sorted(cloud.artefacts(1))
    assert any(c.endswith(".psb") for c in copies), copies
    bob.sync()
    assert tree(bob.store) == {"quote.txt": b"quote 1"}

    done = bob.cli("doctor", "--json", check=None)
    report = json.loads(done.out)
    assert report["status"] in ("ok", "warn", "fail")
    assert done.code == {"ok": 0, "warn": 1, "fail": 2}[report["status"]]
    assert isinstance(report["checks"], list) and report["checks"]
    names = [Path(copy).name.lower() for copy in copies]

    def points_out(check: dict) -> bool:
        text = json.dumps(check, ensure_ascii=False).lower()
        return "stray" in text or "conflicted" in text or any(name in text for name in names)

    flagged = [c for c in report["checks"] if c["status"] != "ok" and points_out(c)]
    assert flagged, f"doctor does not point out the cloud's conflicted copies {copies}: {report['checks']}"


def test_doctor_json_is_valid(peers):
    """`peersync doctor --json` is machine-readable whatever the health."""
    alice, bob = peers
    alice.write("a.txt", "a")
    alice.sync()
    bob.sync()
    for p in peers:
        done = p.cli("doctor", "--json", check=None)
        report = json.loads(done.out)
        assert done.code in (0, 1, 2)
        assert report["status"] == ["ok", "warn", "fail"][done.code]
        for c in report["checks"]:
            assert {"id", "status", "finding"} <= set(c), c


def test_bundles_arriving_out_of_order_apply_in_order(peers):
    """A shared relay whose cloud delivers bundle 3 before bundle 2: nothing past the gap applies,
    even a large file split across the bundles; once 2 arrives everything applies in order."""
    alice, bob = peers
    alice.cli("config", "part_bytes", "65536", check=0)
    alice.cli("config", "bundle_max_bytes", "65536", check=0)
    alice.write("first.txt", "first")
    alice.sync()
    big = random.Random(4).randbytes(200_000)
    alice.write("big.bin", big)
    alice.write("first.txt", "first, edited")
    alice.sync()
    bundles = sorted(forge.bundles_dir(alice).glob("*.psb"))
    assert len(bundles) >= 4, bundles
    held = bundles[2]
    aside = alice.relay.parent / "in-flight.psb"
    os.rename(held, aside)

    result = bob.sync(check=0)
    assert "waiting" in result.out or "not arrived" in result.out, result.out
    got = tree(bob.store)
    assert "big.bin" not in got, "a file whose bundles are not all here was applied"
    assert set(got) <= {"first.txt"}, got
    assert not any(p.name.startswith(".peersync-tmp") for p in bob.store.rglob("*"))

    os.rename(aside, held)
    bob.sync()
    assert tree(bob.store) == tree(alice.store) == {"first.txt": b"first, edited", "big.bin": big}
