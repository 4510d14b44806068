"""Stores: the marker that proves a folder is present and whose it is, invites, init and join."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from . import crypto, fsutil
from .bundle import id_from_bytes
from .errors import InviteError, RefusedError, StorePausedError, UsageError
from .ignore import MARKER
from .index import Index
from .relay import PeerRecord, Relay
from .state import Identity, State, StoreConfig

INVITE_PREFIX = "PSYNC1-"
ID_RE = re.compile(r"^[A-Z2-7]{26}$")


# -- marker -------------------------------------------------------------------


def read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MARKER).read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def write_marker(folder: Path, store_id: str, ident: Identity) -> None:
    body = {
        "store_id": store_id,
        "peer_id": ident.peer_id,
        "peer_name": ident.name,
        "user": ident.user,
        "machine": ident.machine,
        "note": "This folder is kept in sync by peersync. Do not delete or copy this file.",
    }
    fsutil.atomic_write(folder / MARKER, json.dumps(body, indent=2).encode())


def owner_sentence(marker: dict[str, Any]) -> str:
    return (f"peer {marker.get('peer_name', '?')} ({str(marker.get('peer_id', '?'))[:7]}) of user "
            f"{marker.get('user', '?')} on {marker.get('machine', '?')}")


def check_marker(cfg: StoreConfig, ident: Identity) -> None:
    """Refuse to touch a store whose folder is absent or belongs to someone else (Invariants 5, 6)."""
    marker = read_marker(cfg.root)
    if marker is None:
        what = "is missing" if not cfg.root.exists() else "has lost its .peersync marker"
        raise StorePausedError(
            f"store {cfg.name} is paused: its folder {cfg.root} {what}",
            "reconnect the drive or move the folder back; if it was deliberately removed, "
            "run `peersync init` again on a new folder",
        )
    if marker.get("unreadable"):
        raise StorePausedError(f"store {cfg.name} is paused: its marker {cfg.root / MARKER} cannot be read",
                               "restore the file from another peer's store or a backup")
    if marker.get("peer_id") != ident.peer_id or marker.get("store_id") != cfg.id:
        raise StorePausedError(
            f"store {cfg.name} is paused: its folder {cfg.root} belongs to {owner_sentence(marker)}",
            "give each user and each store its own folder",
        )


def _refuse_owned(folder: Path, ident: Identity, state: State) -> None:
    marker = read_marker(folder)
    if marker is None:
        return
    if marker.get("peer_id") == ident.peer_id and any(s.root == folder for s in state.stores()):
        raise RefusedError(f"{folder} is already a store of this peer")
    raise RefusedError(
        f"{folder} already belongs to {owner_sentence(marker)}",
        "choose another folder; each user keeps their own copy",
    )


def _check_placement(store_dir: Path, state: State) -> None:
    """A store never holds a state folder (it would publish keys) nor lies inside another store."""
    home = state.root.absolute()
    if home == store_dir or store_dir in home.parents:
        raise RefusedError(f"{store_dir} holds this peer's state folder {home}, which must never sync",
                           "choose a folder that does not contain it")
    if store_dir in (home, *home.parents) or home in store_dir.parents:
        raise RefusedError(f"{store_dir} lies inside the state folder {home}", "choose another folder")
    for parent in store_dir.parents:
        if (parent / MARKER).is_file():
            raise RefusedError(f"{store_dir} lies inside the store {parent}", "choose a folder outside it")


def _check_folders(store_dir: Path, relay_dir: Path) -> None:
    if relay_dir.exists() and not relay_dir.is_dir():
        raise RefusedError(f"the relay {relay_dir} is a file, not a folder")
    if not relay_dir.is_dir():
        raise RefusedError(f"the relay folder {relay_dir} does not exist",
                           "create it inside your cloud client's folder, or wait for the cloud client to create it")
    if store_dir.exists() and not store_dir.is_dir():
        raise RefusedError(f"{store_dir} is a file, not a folder")
    for a, b in ((store_dir, relay_dir), (relay_dir, store_dir)):
        if a == b or b in a.parents:
            raise RefusedError(f"the store {store_dir} and the relay {relay_dir} must not contain each other")


def check_name(name: str) -> None:
    if not 0 < len(name) <= 200 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise RefusedError(f"{name[:40]!r} cannot be a store name", "use up to 200 printable characters")


def _unique_name(state: State, name: str, store_id: str) -> None:
    for s in state.stores():
        if s.name == name and s.id != store_id:
            raise RefusedError(f"this peer already has a store named {name!r}", "choose another --name")


# -- invites --------------------------------------------------------------------


def make_invite(cfg: StoreConfig, secrets: dict[int, dict[str, bytes]], ident: Identity) -> str:
    """An invite: the store's id and name, and every store secret (rotated ones too, to read old bundles)."""
    fields: dict[str, Any] = {"v": 1, "store": cfg.id, "name": cfg.name,
                              "secret": base64.b64encode(secrets[0][""]).decode(), "from": ident.peer_id}
    rotated = [[epoch, writer, base64.b64encode(s).decode()]
               for epoch, by_writer in sorted(secrets.items()) if epoch for writer, s in sorted(by_writer.items())]
    if rotated:
        fields["rotated"] = rotated
    body = json.dumps(fields, separators=(",", ":")).encode()
    check = hashlib.sha256(body).digest()[:4]
    return INVITE_PREFIX + base64.urlsafe_b64encode(body + check).decode().rstrip("=")


def read_invite(code: str) -> dict[str, Any]:
    code = "".join(code.split())
    bad = InviteError("that invite code is damaged or incomplete", "copy the whole code from `peersync invite` again")
    if not code.startswith(INVITE_PREFIX):
        raise bad
    payload = code[len(INVITE_PREFIX):]
    try:
        raw = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_", validate=True)
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != payload:
            raise bad  # another spelling of the same bytes: not a code we wrote
        body, check = raw[:-4], raw[-4:]
        if hashlib.sha256(body).digest()[:4] != check:
            raise bad
        data = json.loads(body)
        data["secret"] = base64.b64decode(data["secret"])
        if data.get("v") != 1 or len(data["secret"]) != crypto.SECRET_BYTES:
            raise bad
        # The store id becomes a folder name in the relay and the state folder: only a real id passes.
        if not isinstance(data.get("store"), str) or not ID_RE.match(data["store"]):
            raise bad
        if not isinstance(data.get("name"), str) or not 0 < len(data["name"]) <= 200 or any(
                ord(c) < 32 for c in data["name"]):
            raise bad
        rotated: dict[int, dict[str, bytes]] = {}
        for epoch, writer, secret in data.get("rotated", []):
            if not (isinstance(epoch, int) and epoch > 0 and isinstance(writer, str) and ID_RE.match(writer)):
                raise bad
            rotated.setdefault(epoch, {})[writer] = base64.b64decode(secret)
        data["rotated"] = rotated
        return data  # type: ignore[no-any-return]
    except (ValueError, KeyError, TypeError) as exc:
        raise bad from exc


# -- init and join --------------------------------------------------------------


def roster_key(secret: bytes) -> bytes:
    return crypto.derive_key(secret, "roster")


def bundle_key(secret: bytes, epoch: int = 0) -> bytes:
    return crypto.derive_key(secret, "bundle", epoch)


def rotation_info(store_id: str, epoch: int) -> bytes:
    """What a sealed store secret of a key rotation is bound to."""
    return f"{store_id} epoch {epoch}".encode()


def write_own_record(relay: Relay, ident: Identity, secrets: dict[int, dict[str, bytes]]) -> None:
    """This peer's peer.json, authenticated with the newest roster key it holds."""
    epoch = max(secrets)
    newest = secrets[epoch][sorted(secrets[epoch])[0]]
    relay.write_peer_record(
        PeerRecord(ident.peer_id, ident.public_key, ident.name, ident.machine, ident.user, time.time(),
                   ident.box.public_bytes()),
        roster_key(newest),
    )


def _register(state: State, ident: Identity, cfg: StoreConfig, secret: bytes,
              rotated: dict[int, dict[str, bytes]] | None = None) -> None:
    state.save_store_secret(cfg.id, secret)
    for epoch, by_writer in (rotated or {}).items():
        for writer, s in by_writer.items():
            state.save_store_secret(cfg.id, s, epoch, writer)
    write_own_record(Relay(Path(cfg.relay), cfg.id), ident, state.store_secrets(cfg.id))
    cfg.root.mkdir(parents=True, exist_ok=True)
    write_marker(cfg.root, cfg.id, ident)
    index = Index(state.store_dir(cfg.id) / "index.db")
    with index.tx():
        index.set_meta("store_id", cfg.id)
        index.set_meta("peer_id", ident.peer_id)
        index.set_meta("joined_at", time.time())
    index.close()
    state.add_store(cfg)


def init_store(state: State, store_dir: Path, relay_dir: Path, name: str | None) -> StoreConfig:
    store_dir, relay_dir = store_dir.expanduser().absolute(), relay_dir.expanduser().absolute()
    _check_folders(store_dir, relay_dir)
    _check_placement(store_dir, state)
    ident = state.identity(create=True)
    _refuse_owned(store_dir, ident, state)
    name = name or store_dir.name
    check_name(name)
    store_id = id_from_bytes(crypto.random_bytes(16))
    _unique_name(state, name, store_id)
    cfg = StoreConfig(store_id, name, str(store_dir), str(relay_dir))
    Relay(relay_dir, store_id).create_store_json()
    _register(state, ident, cfg, crypto.random_bytes(crypto.SECRET_BYTES))
    return cfg


def join_store(state: State, code: str, store_dir: Path, relay_dir: Path) -> tuple[StoreConfig, bool]:
    """Join the store ``code`` names; returns the config and whether the relay already holds it."""
    invite = read_invite(code)
    store_dir, relay_dir = store_dir.expanduser().absolute(), relay_dir.expanduser().absolute()
    _check_folders(store_dir, relay_dir)
    _check_placement(store_dir, state)
    ident = state.identity(create=True)
    for s in state.stores():
        if s.id == invite["store"]:
            raise RefusedError(f"this peer already keeps store {s.name} in {s.path}")
    _refuse_owned(store_dir, ident, state)
    _unique_name(state, invite["name"], invite["store"])
    cfg = StoreConfig(invite["store"], invite["name"], str(store_dir), str(relay_dir))
    relay = Relay(relay_dir, cfg.id)
    present = relay.store_json() is not None
    _register(state, ident, cfg, invite["secret"], invite["rotated"])
    return cfg, present


def resolve_path(state: State, target: str) -> tuple[StoreConfig, str]:
    """The store holding ``target`` (a file path) and its store-relative path."""
    p = Path(target).expanduser()
    absolute = Path(os.path.abspath(p))
    for s in state.stores():
        try:
            rel = absolute.relative_to(s.root)
        except ValueError:
            continue
        if str(rel) != ".":
            return s, rel.as_posix()
    raise UsageError(f"{target} is not inside any store of this peer")
