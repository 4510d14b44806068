"""The per-user state folder: identity, configuration and the list of stores.

Layout (``PEERSYNC_HOME`` overrides the platformdirs location)::

    identity.key            Ed25519 private key, owner-only
    identity.json           peer id, display name, machine, OS user
    config.json             settings and the stores this peer keeps
    stores/<store-id>/      secret (owner-only), index.db, staging/, quarantine/
    versions/<store-id>/    the versions archive
    logs/peersync.log
    service.lock            held by the one running sync or service
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

import platformdirs

from . import crypto, fsutil
from .errors import StateError, UsageError

# Settings and their defaults, in one place. Each may be set per peer
# (``peersync config KEY VALUE``) or per store (``--store NAME``).
DEFAULTS: dict[str, Any] = {
    # A scan that would delete more than this share of a store's files is held
    # until `peersync sync --allow-deletes` confirms it.
    "mass_delete_ratio": 0.5,
    # ...but only when it would delete at least this many files, so deleting
    # two files out of three in a tiny store is not held.
    "mass_delete_min": 5,
    # Seconds a bundle that does not verify (short, bad signature) is waited
    # for before it is quarantined: cloud clients deliver files in pieces.
    "bundle_grace_seconds": 3600,
    # Upper bound of one bundle's payload before compression, in bytes.
    # Larger changes are split across bundles; it bounds a reader's memory.
    "bundle_max_bytes": 8 * 1024 * 1024,
    # Files larger than this are sent as parts spread over several bundles.
    "part_bytes": 4 * 1024 * 1024,
    # Files of at least this many bytes get a chunk map when scanned or received, and a
    # new version of one is sent as a delta against the previous one (0: never).
    "delta_min_bytes": 8 * 1024 * 1024,
    # A snapshot is written once bundles that every peer has applied, but no snapshot
    # covers, reach this many bytes...
    "snapshot_min_bytes": 8 * 1024 * 1024,
    # ...and, with the snapshots it supersedes, this many times the store's size; then
    # those bundles go. The relay holds at most about this many copies of the store, and
    # a snapshot (a full copy) is uploaded only when it frees more than it writes.
    "snapshot_ratio": 2.0,
    # A peer silent for longer than this no longer holds back the removal of bundles it has
    # not applied; when it comes back it catches up from a snapshot (30 days).
    "silent_peer_seconds": 30 * 24 * 3600,
    # Seconds between full rescans while `peersync run` watches a store (watchers miss
    # events: a change made through a hard link, on a network share, while the queue overflowed).
    "rescan_seconds": 3600,
    # While `peersync run` watches a store, a cycle scans only the paths the watcher
    # reported; when more paths than this changed at once, it scans the whole store.
    "watch_max_paths": 10000,
    # Seconds a burst of file events is collected before a sync cycle.
    "debounce_seconds": 0.2,
    # Seconds between relay polls while `peersync run` waits.
    "poll_seconds": 2.0,
    # Seconds a file must stay missing before `peersync run` sends its deletion:
    # editors save by renaming the original away and a new file into place.
    "delete_delay_seconds": 2.0,
    # When the service syncs this store: continuous, every 15m, hourly,
    # daily 18:30, weekly mon 09:00 or manual (see peersync/schedule.py).
    "schedule": "continuous",
    # Extra gitignore-style patterns never synced (besides .peersyncignore).
    "exclude": [],
}

MAX_SETTING = {"bundle_max_bytes": 64 * 1024 * 1024, "part_bytes": 32 * 1024 * 1024}
MIN_SETTING = {"bundle_max_bytes": 64 * 1024, "part_bytes": 64 * 1024, "mass_delete_ratio": 0.0}


def home() -> Path:
    env = os.environ.get("PEERSYNC_HOME")
    if env:
        return Path(env).expanduser().absolute()
    return Path(platformdirs.user_data_dir("peersync", appauthor=False))


def machine_name() -> str:
    return socket.gethostname() or platform.node() or "unknown"


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (some containers)
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


@dataclasses.dataclass
class StoreConfig:
    id: str
    name: str
    path: str
    relay: str
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.path)


@dataclasses.dataclass
class Identity:
    peer_id: str
    name: str
    machine: str
    user: str
    key: crypto.SigningKey
    box: crypto.BoxKey

    @property
    def public_key(self) -> bytes:
        return self.key.public_bytes()

    @property
    def short(self) -> str:
        return short_id(self.peer_id)


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"user id {uid}"


def peer_id_of(public_key: bytes) -> str:
    import base64

    return base64.b32encode(crypto.fingerprint(public_key)).decode().rstrip("=")


def short_id(peer_id: str) -> str:
    return peer_id[:7]


class State:
    """One user's state folder."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or home()

    # -- identity -------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.root / "identity.json").exists()

    def identity(self, create: bool = False) -> Identity:
        info_path = self.root / "identity.json"
        key_path = self.root / "identity.key"
        if not info_path.exists():
            if not create:
                raise StateError(
                    f"no peersync identity in {self.root}",
                    "run `peersync init` or `peersync join` first",
                )
            return self._create_identity()
        try:
            info = json.loads(info_path.read_text("utf-8"))
            key = crypto.SigningKey.from_bytes(key_path.read_bytes())
            box = self._box_key()
        except (OSError, ValueError) as exc:
            raise StateError(
                f"the identity in {self.root} cannot be read ({exc})",
                "restore the state folder from a backup or re-join the store with a new state folder",
            ) from exc
        ident = Identity(info["peer_id"], info["name"], info["machine"], info["user"], key, box)
        if peer_id_of(ident.public_key) != ident.peer_id:
            raise StateError(f"the identity in {self.root} does not match its key", "re-join with a new state folder")
        self._check_owner()
        self._check_not_copied(ident)
        return ident

    def _box_key(self) -> crypto.BoxKey:
        path = self.root / "identity.box"
        if not path.exists():
            fsutil.write_private(path, crypto.BoxKey.generate().to_bytes())
        return crypto.BoxKey.from_bytes(path.read_bytes())

    def _check_owner(self) -> None:
        """Refuse another OS user's state folder: its keys, index and service are that user's alone."""
        if fsutil.IS_WINDOWS:
            return  # the per-user profile's ACLs already keep other users out
        owner = os.stat(self.root).st_uid
        if owner != os.getuid():
            raise StateError(
                f"the state folder {self.root} belongs to {_user_name(owner)}, but peersync runs as {os_user()}",
                "run peersync as that user, or give this user its own state folder",
            )

    def _check_not_copied(self, ident: Identity) -> None:
        if os.environ.get("PEERSYNC_ALLOW_COPIED_STATE") == "1":
            return
        here = (machine_name(), os_user())
        if (ident.machine, ident.user) != here:
            raise StateError(
                f"this state folder belongs to {ident.user} on {ident.machine}, but runs as "
                f"{here[1]} on {here[0]}: it was copied",
                "give this user and machine its own state folder and re-join each store with an invite",
            )

    def _create_identity(self) -> Identity:
        fsutil.make_private_dir(self.root)
        key = crypto.SigningKey.generate()
        peer = peer_id_of(key.public_bytes())
        user, machine = os_user(), machine_name()
        fsutil.write_private(self.root / "identity.key", key.to_bytes())
        info: dict[str, Any] = {
            "peer_id": peer,
            "name": f"{user}@{machine}",
            "machine": machine,
            "user": user,
            "created": time.time(),
        }
        fsutil.atomic_write(self.root / "identity.json", json.dumps(info, indent=2).encode())
        return Identity(peer, info["name"], machine, user, key, self._box_key())

    # -- configuration --------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        path = self.root / "config.json"
        if not path.exists():
            return {"stores": [], "settings": {}}
        try:
            data: dict[str, Any] = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise StateError(f"{path} is not valid JSON ({exc})", "fix or remove the file") from exc
        bad = StateError(f"{path} is not a peersync configuration", "fix it, or restore it from a backup")
        if not isinstance(data, dict):
            raise bad
        data.setdefault("stores", [])
        data.setdefault("settings", {})
        if not isinstance(data["stores"], list) or not isinstance(data["settings"], dict):
            raise bad
        fields = {f.name for f in dataclasses.fields(StoreConfig)}
        for s in data["stores"]:
            if not isinstance(s, dict) or not {"id", "name", "path", "relay"} <= set(s) or not set(s) <= fields:
                raise bad
        return data

    def _save_config(self, data: dict[str, Any]) -> None:
        fsutil.make_private_dir(self.root)
        fsutil.atomic_write(self.root / "config.json", json.dumps(data, indent=2).encode())

    def stores(self) -> list[StoreConfig]:
        return [StoreConfig(**s) for s in self._config()["stores"]]

    def add_store(self, store: StoreConfig) -> None:
        data = self._config()
        data["stores"] = [s for s in data["stores"] if s["id"] != store.id]
        data["stores"].append(dataclasses.asdict(store))
        self._save_config(data)

    def update_store(self, store: StoreConfig) -> None:
        self.add_store(store)

    def find_stores(self, which: str | None) -> list[StoreConfig]:
        """Stores named by ``which`` (a name, an id or a folder); all when None."""
        stores = self.stores()
        if which is None:
            if not stores:
                raise UsageError("this peer keeps no store yet", "run `peersync init` or `peersync join` first")
            return stores
        folder = Path(which).expanduser().absolute()
        for s in stores:
            if which in (s.name, s.id) or Path(s.path) == folder:
                return [s]
        names = ", ".join(s.name for s in stores) or "none"
        raise UsageError(f"no store named {which!r} (stores: {names})")

    def settings(self, store: StoreConfig | None = None) -> dict[str, Any]:
        merged = dict(DEFAULTS)
        merged.update(self._config()["settings"])
        if store is not None:
            merged.update(store.settings)
        for key, default in DEFAULTS.items():  # a hand-edited value of the wrong type is refused here
            value = merged[key]
            ok = isinstance(value, list) if isinstance(default, list) else (
                isinstance(value, (int, float)) and not isinstance(value, bool)
                if isinstance(default, (int, float)) else isinstance(value, type(default)))
            if not ok:
                raise StateError(f"setting {key} in {self.root / 'config.json'} has the wrong type ({value!r})",
                                 f"set it again with `peersync config {key} VALUE`")
        return merged

    def set_setting(self, key: str, value: Any, store: StoreConfig | None = None) -> None:
        if key not in DEFAULTS:
            raise UsageError(f"unknown setting {key!r}", "known settings: " + ", ".join(sorted(DEFAULTS)))
        default = DEFAULTS[key]
        try:
            if isinstance(default, list):
                parsed: Any = value if isinstance(value, list) else [v for v in str(value).split(",") if v]
            else:
                parsed = type(default)(value)
        except ValueError as exc:
            raise UsageError(f"setting {key} needs a {type(default).__name__}, not {value!r}") from exc
        if key in MAX_SETTING and parsed > MAX_SETTING[key]:
            raise UsageError(f"setting {key} may be at most {MAX_SETTING[key]}")
        if key in MIN_SETTING and parsed < MIN_SETTING[key]:
            raise UsageError(f"setting {key} must be at least {MIN_SETTING[key]}")
        if key == "schedule":
            from .schedule import parse

            parsed = str(parse(parsed))
        data = self._config()
        if store is None:
            data["settings"][key] = parsed
        else:
            for s in data["stores"]:
                if s["id"] == store.id:
                    s.setdefault("settings", {})[key] = parsed
        self._save_config(data)

    # -- per-store folders ----------------------------------------------------

    def store_dir(self, store_id: str) -> Path:
        return self.root / "stores" / store_id

    def versions_dir(self, store_id: str) -> Path:
        return self.root / "versions" / store_id

    def log_dir(self) -> Path:
        return self.root / "logs"

    def store_secret(self, store_id: str) -> bytes:
        try:
            return (self.store_dir(store_id) / "secret").read_bytes()
        except OSError as exc:
            raise StateError(
                f"the secret of store {store_id} is missing from {self.root}",
                "re-join the store with an invite code",
            ) from exc

    def save_store_secret(self, store_id: str, secret: bytes, epoch: int = 0, writer: str = "") -> None:
        """Keep a store secret; epochs after 0 come from key rotations (``writer`` made it)."""
        fsutil.make_private_dir(self.store_dir(store_id))
        name = "secret" if epoch == 0 else f"secret.{epoch}" + (f".{writer}" if writer else "")
        fsutil.write_private(self.store_dir(store_id) / name, secret)

    def store_secrets(self, store_id: str) -> dict[int, dict[str, bytes]]:
        """Every secret of the store this peer holds: epoch -> writer of the rotation -> secret."""
        out: dict[int, dict[str, bytes]] = {0: {"": self.store_secret(store_id)}}
        for f in self.store_dir(store_id).glob("secret.*"):
            parts = f.name.split(".")
            if len(parts) in (2, 3) and parts[1].isdigit():
                out.setdefault(int(parts[1]), {})[parts[2] if len(parts) == 3 else ""] = f.read_bytes()
        return out
