"""Seeing and steering what waits: `queue`, `queue drop`, `reset`, self-correction, `status --json`.

Everything goes through the real command line (``python -m peersync``) of
peers sharing one relay folder on this machine.
"""

from __future__ import annotations

import hashlib
import json
import signal

import jsonschema
from conftest import ROOT, Peer, tree
from test_service import bundles_of, hold, queue_items, services, status_json  # noqa: F401  (fixtures)

SCHEMA = json.loads((ROOT / "docs" / "status-schema.json").read_text())


def validate_status(peer: Peer) -> dict:
    data = status_json(peer)
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    return data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the outgoing queue -----------------------------------------------------------------------


def test_queue_lists_outgoing_changes_in_order_and_drop_keeps_one_local(peers):
    """A rep previews what will be sent, drops a private draft, and sends the rest."""
    alice, bob = peers
    alice.write("prices.txt", "v1\n")
    alice.write("old-offer.txt", "expired\n")
    alice.sync()
    bob.sync()
    assert queue_items(alice) == []

    # One change at a time, the way they happen during a working day.
    alice.write("orders/o-1.txt", "order one\n")
    queue_items(alice)
    alice.write("draft.txt", "private draft\n")
    queue_items(alice)
    alice.write("prices.txt", "v2, prices up\n")
    queue_items(alice)
    (alice.store / "old-offer.txt").unlink()
    items = queue_items(alice)
    listed = [(op, path) for _n, op, path in items]
    assert ("mkdir", "orders") in listed
    listed.remove(("mkdir", "orders"))
    assert listed == [("put", "orders/o-1.txt"), ("put", "draft.txt"), ("put", "prices.txt"),
                      ("delete", "old-offer.txt")], items
    assert [n for n, _op, _p in items] == list(range(1, len(items) + 1))
    n_draft = next(n for n, _op, path in items if path == "draft.txt")

    # Without --yes and without a terminal to ask on: refused, nothing dropped.
    r = alice.cli("queue", "drop", str(n_draft))
    assert r.code == 2, (r.out, r.err)
    assert "confirm" in r.err and "--yes" in r.err, r.err
    assert len([line for line in r.err.splitlines() if line.strip()]) == 1, r.err
    assert queue_items(alice) == items

    r = alice.cli("queue", "drop", str(n_draft), "--yes", check=0)
    assert "draft.txt" in r.out
    after = queue_items(alice)
    assert [(op, p) for _n, op, p in after] == [(op, p) for _n, op, p in items if p != "draft.txt"]

    alice.sync()
    bob.sync()
    assert bob.read("orders/o-1.txt") == b"order one\n"
    assert bob.read("prices.txt") == b"v2, prices up\n"
    assert not (bob.store / "old-offer.txt").exists()
    assert not (bob.store / "draft.txt").exists(), "a dropped change was sent"
    assert alice.read("draft.txt") == b"private draft\n", "a dropped change must stay on this peer"

    # It stays local through later syncs...
    assert queue_items(alice) == []
    alice.sync()
    bob.sync()
    assert not (bob.store / "draft.txt").exists()
    # ...until it changes again.
    alice.write("draft.txt", "final text, send it\n")
    assert [(op, p) for _n, op, p in queue_items(alice)] == [("put", "draft.txt")]
    alice.sync()
    bob.sync()
    assert bob.read("draft.txt") == b"final text, send it\n"
    assert tree(bob.store) == tree(alice.store)


def test_queue_drop_by_path_and_unknown_items(peers):
    alice, _bob = peers
    alice.write("a.txt", "a\n")
    alice.write("b.txt", "b\n")
    queue_items(alice)
    r = alice.cli("queue", "drop", "nothing-like-this.txt", "--yes")
    assert r.code == 2 and "nothing-like-this.txt" in r.err, (r.out, r.err)
    alice.cli("queue", "drop", "b.txt", "--yes", check=0)
    assert [p for _n, _op, p in queue_items(alice)] == ["a.txt"]


# -- reset ------------------------------------------------------------------------------------


def test_reset_clears_a_stuck_item_and_loses_nothing(peers, hold):  # noqa: F811
    """A file held open on Bob's laptop leaves Alice's edits stuck; the sysadmin resets them."""
    alice, bob = peers
    alice.write("held/a.txt", "a version 1\n")
    alice.write("held/b.txt", "b version 1\n")
    alice.sync()
    bob.sync()
    release_a = hold(bob.store / "held/a.txt")
    release_b = hold(bob.store / "held/b.txt")
    new_a, new_b = b"a version 2 from alice\n", b"b version 2 from alice\n"
    alice.write("held/a.txt", new_a)
    alice.write("held/b.txt", new_b)
    alice.sync()
    assert bob.sync(check=1).code == 1

    errors = bob.cli("errors", check=0).out
    assert "held/a.txt" in errors and "held/b.txt" in errors, errors
    stuck = validate_status(bob)["stores"][0]
    assert {e["subject"] for e in stuck["errors"] if e["kind"] == "apply"} == {"held/a.txt", "held/b.txt"}
    assert stuck["pending_in"] >= 2, stuck

    # reset PATH: only that item.
    r = bob.cli("reset", str(bob.store / "held/a.txt"), check=0)
    assert "held/a.txt" in r.out
    left = validate_status(bob)["stores"][0]
    assert [e["subject"] for e in left["errors"]] == ["held/b.txt"], left["errors"]
    assert left["pending_in"] >= 1, left
    # reset --all: everything.
    bob.cli("reset", "--all", check=0)
    cleared = validate_status(bob)["stores"][0]
    assert cleared["errors"] == [] and cleared["pending_in"] == 0, cleared
    assert "no errors" in bob.cli("errors", check=0).out

    release_a()
    release_b()
    r = bob.sync()  # redone from the files on disk: nothing stuck, nothing failing
    assert r.code == 0
    assert validate_status(bob)["stores"][0]["errors"] == []

    # Bob's disk wins everywhere, and Alice's edits are not hidden away: each is a conflict copy beside its
    # file, on both laptops.
    alice.sync()
    assert tree(alice.store) == tree(bob.store)
    for rel, new in (("held/a.txt", new_a), ("held/b.txt", new_b)):
        assert alice.read(rel) == bob.read(rel) != new
        copies = [p for p, data in tree(bob.store).items()
                  if p.startswith(rel[:-4] + ".sync-conflict-") and data == new]
        assert len(copies) == 1, f"alice's {rel} is not beside it as a conflict copy: {sorted(tree(bob.store))}"


# -- self-correction after three failing cycles ------------------------------------------------


def test_a_bundle_with_a_bad_signature_is_waited_for_then_quarantined_on_the_third_cycle(peers):
    """A cloud client mangled one of Alice's bundles: Bob waits, then sets it aside and carries on."""
    alice, bob = peers
    alice.write("first.txt", "first\n")
    alice.sync()
    bob.sync()
    alice.write("mangled.txt", "this bundle gets damaged\n")
    alice.sync()
    bundle = bundles_of(alice)[-1]
    raw = bytearray(bundle.read_bytes())
    raw[-10] ^= 0x01  # inside the signature; the size stays what the header declares
    with open(bundle, "r+b") as f:
        f.write(raw)

    for attempt in (1, 2):
        r = bob.sync(check=0)
        assert "waiting" in r.out, f"sync {attempt}: {r.out}"
        assert not (bob.store / "mangled.txt").exists()
    r = bob.sync(check=1)
    assert not (bob.store / "mangled.txt").exists()
    errors = bob.cli("errors", check=0).out
    correction = [line for line in errors.splitlines() if line.startswith("↻")]
    assert correction, errors
    assert any("quarantined" in line and f"bundle {bundle.stem.lstrip('0')}" in line for line in correction), errors
    assert "quarantined" in "\n".join(line for line in errors.splitlines() if line.startswith("✗")), errors
    assert list((bob.home / "stores").glob("*/quarantine/*.psb")), "no copy of the quarantined bundle kept"

    alice.write("later.txt", "after the damage\n")
    alice.sync()
    bob.sync(check=None)
    assert bob.read("later.txt") == b"after the damage\n", "bundles after a quarantined one must still apply"
    bob.cli("errors", "--clear", check=0)
    bob.sync()


# -- status --json and its schema -------------------------------------------------------------


def test_status_json_matches_its_schema_fresh_with_service_after_conflict_and_with_error(peers, services):  # noqa: F811
    alice, bob = peers
    for p in (alice, bob):
        data = validate_status(p)
        assert data["service"] == {"running": False, "pid": None}
        assert data["stores"][0]["last_sync"] is None

    service = services(alice)
    running = validate_status(alice)
    assert running["service"] == {"running": True, "pid": service.pid}
    assert service.stop(signal.SIGTERM) == 0

    # A conflict: both change the same file before seeing each other's change.
    alice.write("price.txt", "base\n")
    alice.sync()
    bob.sync()
    alice.write("price.txt", "alice says 10\n")
    bob.write("price.txt", "bob says 12, later\n")
    alice.sync()
    bob.sync()
    alice.sync()
    bob.sync()
    for p in (alice, bob):
        data = validate_status(p)
        assert data["stores"][0]["conflicts"], f"{p.name}: no conflict listed"
        assert data["stores"][0]["last_sync_ok"] is True

    # An error: a name no Windows peer could hold.
    alice.write("CON.txt", "reserved name\n")
    alice.sync(check=1)
    data = validate_status(alice)
    errors = data["stores"][0]["errors"]
    assert [e["subject"] for e in errors] == ["CON.txt"], errors
    assert data["stores"][0]["last_sync_ok"] is False
