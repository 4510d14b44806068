"""Per-user isolation (DESIGN Invariant 6): state, keys, folders and services belong to one OS user."""

from __future__ import annotations

import json
import os
import stat

import pytest
from conftest import Peer


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_keys_secrets_and_indexes_are_owner_only(peers):
    alice, _bob = peers
    alice.write("a.txt", "x")
    alice.sync()
    home = alice.home
    store_id = json.loads((home / "config.json").read_text())["stores"][0]["id"]
    for path in (home / "identity.key", home / "stores" / store_id / "secret", home / "stores" / store_id / "index.db"):
        assert _mode(path) & 0o077 == 0, f"{path} is readable by others: {oct(_mode(path))}"
    assert _mode(home) & 0o077 == 0


def test_a_second_user_on_the_same_store_folder_is_refused_naming_the_owner(peers, tmp_path):
    """Two Windows users on one laptop must not share a store folder: the second is told whose it is."""
    alice, _bob = peers
    code = alice.cli("invite", check=0).last_line
    other = Peer("mallory", tmp_path / "home-other-user", alice.store, alice.relay)
    result = other.cli("join", code, str(alice.store), "--relay", str(alice.relay))
    assert result.code == 2
    marker = json.loads((alice.store / ".peersync").read_text())
    assert marker["peer_name"] in result.err and marker["user"] in result.err
    result = other.cli("init", str(alice.store), "--relay", str(alice.relay))
    assert result.code == 2 and marker["peer_name"] in result.err


def test_a_copied_state_folder_stops_with_instructions(peers):
    """A state folder copied to another machine (same peer id elsewhere) must not sync as the original."""
    alice, _bob = peers
    info_path = alice.home / "identity.json"
    info = json.loads(info_path.read_text())
    info["machine"] = "OTHER-LAPTOP"
    info_path.write_text(json.dumps(info))
    for args in (("sync",), ("run",), ("status",)):
        result = alice.cli(*args)
        assert result.code == 2, args
        assert "copied" in result.err and "re-join" in result.err
    assert not list(alice.relay.rglob("*.psb")), "a copied identity published nothing"


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a folder to another user")
def test_another_users_state_folder_is_refused(peers):
    """The service refuses to run on a state folder that another OS user owns."""
    alice, _bob = peers
    os.chown(alice.home, 54321, 54321)
    try:
        for args in (("run",), ("sync",)):
            result = alice.cli(*args)
            assert result.code == 2, args
            assert "belongs to" in result.err and "runs as" in result.err
    finally:
        os.chown(alice.home, 0, 0)
    alice.sync()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a folder to another user")
def test_the_service_refuses_another_users_relay(peers):
    """The service never writes into another OS user's cloud folder."""
    alice, _bob = peers
    os.chown(alice.relay, 54321, 54321)
    try:
        result = alice.cli("run")
        assert result.code != 0
        assert "belongs to" in result.err and "runs as" in result.err
    finally:
        os.chown(alice.relay, 0, 0)
