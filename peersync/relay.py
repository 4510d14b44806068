"""The relay as dumb storage: layout, write-once bundles, the roster and heartbeats.

Contract, method by method:

- ``write_bundle`` is write-once: it writes a temporary name under this peer's
  own folder, fsyncs, and links it into place; it fails rather than replace
  an existing bundle. Retrying after a failure is safe.
- ``write_peer_record`` and ``write_heartbeat`` replace this peer's own file
  atomically. Only this peer ever writes under ``peers/<its id>/``.
- Every read tolerates what a cloud client leaves behind: missing folders,
  half-written or unauthenticated records, and foreign files, which are
  listed as strays for ``peersync doctor`` and otherwise ignored.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from . import crypto, fsutil
from .errors import CryptoError, RelayError

BUNDLE_RE = re.compile(r"^(\d{12})\.psb$")
PEER_ID_RE = re.compile(r"^[A-Z2-7]{26}$")
STORE_FORMAT = 1


def bundle_name(seq: int) -> str:
    return f"{seq:012d}.psb"


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclasses.dataclass(frozen=True)
class PeerRecord:
    peer_id: str
    public_key: bytes
    name: str
    machine: str
    user: str
    joined: float
    box_key: bytes = b""  # X25519: store secrets of later key epochs are sealed to it
    epoch: int = 0  # the key epoch whose roster key authenticates this record


class Relay:
    """``<relay>/<store-id>/`` as seen from one machine."""

    def __init__(self, relay_root: Path, store_id: str) -> None:
        self.relay_root = relay_root
        self.store_id = store_id
        self.root = relay_root / store_id

    def peer_dir(self, peer: str) -> Path:
        return self.root / "peers" / peer

    def bundles_dir(self, peer: str) -> Path:
        return self.peer_dir(peer) / "bundles"

    def check_owner(self) -> None:
        """The relay is this OS user's: another user's cloud folder is never written into."""
        if fsutil.IS_WINDOWS or not self.relay_root.is_dir():
            return
        from .state import _user_name, os_user

        owner = self.relay_root.stat().st_uid
        if owner != os.getuid():
            raise RelayError(
                f"the relay {self.relay_root} belongs to {_user_name(owner)}, but peersync runs as {os_user()}",
                "each user keeps their own relay in their own cloud folder; run peersync as that user")

    def check_reachable(self) -> None:
        if not self.relay_root.is_dir():
            raise RelayError(
                f"the relay folder {self.relay_root} is missing",
                "check that the cloud client is running and the folder exists; changes wait until it is back",
            )

    # -- store.json -----------------------------------------------------------

    def create_store_json(self) -> None:
        path = self.root / "store.json"
        if not path.exists():
            fsutil.atomic_write(path, canonical({"id": self.store_id, "format": STORE_FORMAT}))

    def store_json(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / "store.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- roster ---------------------------------------------------------------

    def write_peer_record(self, record: PeerRecord, roster_key: bytes) -> None:
        body = {
            "store_id": self.store_id,
            "peer_id": record.peer_id,
            "public_key": base64.b64encode(record.public_key).decode(),
            "name": record.name,
            "machine": record.machine,
            "user": record.user,
            "joined": record.joined,
            "box_key": base64.b64encode(record.box_key).decode(),
        }
        body["mac"] = base64.b64encode(crypto.mac(roster_key, canonical(body))).decode()
        fsutil.atomic_write(self.peer_dir(record.peer_id) / "peer.json", json.dumps(body, indent=2).encode())

    def peer_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in (self.root / "peers").iterdir() if PEER_ID_RE.match(p.name))
        except OSError:
            return []

    def read_peer_record(self, peer: str, roster_keys: dict[int, bytes]) -> PeerRecord:
        """The authenticated record of ``peer``; raises CryptoError or OSError/ValueError.

        ``roster_keys`` maps key epochs to roster keys; the record says which one authenticated it.
        """
        from .state import peer_id_of

        data = json.loads((self.peer_dir(peer) / "peer.json").read_text("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("peer.json is not an object")
        tag = base64.b64decode(data.pop("mac", ""))
        epoch = -1
        for e, key in sorted(roster_keys.items(), reverse=True):
            try:
                crypto.check_mac(key, canonical(data), tag)
            except CryptoError:
                continue
            epoch = e
            break
        if epoch < 0:
            raise CryptoError("record is not authenticated by the store secret")
        if data.get("store_id") != self.store_id or data.get("peer_id") != peer:
            raise CryptoError("peer.json was copied from another store or peer")
        public_key = base64.b64decode(data["public_key"])
        if peer_id_of(public_key) != peer:
            raise CryptoError("peer.json's key does not match its peer id")
        box = base64.b64decode(data.get("box_key", ""))
        return PeerRecord(peer, public_key, str(data["name"]), str(data["machine"]), str(data["user"]),
                          float(data["joined"]), box, epoch)

    def roster(self, roster_keys: dict[int, bytes]) -> tuple[dict[str, PeerRecord], dict[str, str]]:
        """Authenticated peers, and the problems of the folders that are not."""
        peers: dict[str, PeerRecord] = {}
        problems: dict[str, str] = {}
        for peer in self.peer_ids():
            try:
                peers[peer] = self.read_peer_record(peer, roster_keys)
            except FileNotFoundError:
                problems[peer] = "has no peer.json yet"
            except CryptoError as exc:
                problems[peer] = f"peer.json is not authenticated ({exc.message})"
            except (OSError, ValueError) as exc:  # half delivered by the cloud client, most likely
                problems[peer] = f"has no complete peer.json yet ({exc.__class__.__name__})"
            except (KeyError, TypeError) as exc:
                problems[peer] = f"peer.json cannot be read ({exc.__class__.__name__})"
        return peers, problems

    # -- bundles --------------------------------------------------------------

    def list_bundles(self, peer: str) -> tuple[dict[int, Path], list[Path]]:
        """Bundles of ``peer`` by sequence, and the other files found beside them."""
        found: dict[int, Path] = {}
        strays: list[Path] = []
        try:
            entries = list(os.scandir(self.bundles_dir(peer)))
        except OSError:
            return found, strays
        for entry in entries:
            m = BUNDLE_RE.match(entry.name)
            if m and entry.is_file(follow_symlinks=False):
                found[int(m.group(1))] = Path(entry.path)
            else:
                strays.append(Path(entry.path))
        return found, strays

    def next_seq(self, peer: str) -> int:
        found, _ = self.list_bundles(peer)
        return max(found, default=0) + 1

    def write_bundle(self, peer: str, seq: int, data: bytes) -> Path:
        folder = self.bundles_dir(peer)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / bundle_name(seq)
        tmp = fsutil.temp_name(target)
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, target)  # fails if the target exists: bundles are write-once
            except FileExistsError:
                raise
            except OSError:
                if target.exists():
                    raise FileExistsError(target) from None
                os.rename(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fsutil.fsync_dir(folder)
        return target

    def delete_bundle(self, peer: str, seq: int) -> None:
        (self.bundles_dir(peer) / bundle_name(seq)).unlink(missing_ok=True)

    # -- snapshots ------------------------------------------------------------
    #
    # peers/<id>/snapshots/<n>/<part>.psb   parts, written first
    # peers/<id>/snapshots/<n>/manifest.psb written last: lists the parts' hashes

    def snapshots_dir(self, peer: str) -> Path:
        return self.peer_dir(peer) / "snapshots"

    def list_snapshots(self, peer: str) -> dict[int, Path]:
        """Snapshot folders of ``peer`` that hold a manifest, by number."""
        out: dict[int, Path] = {}
        try:
            for entry in os.scandir(self.snapshots_dir(peer)):
                if re.fullmatch(r"[0-9]{1,12}", entry.name) and os.path.exists(
                        os.path.join(entry.path, "manifest.psb")):
                    out[int(entry.name)] = Path(entry.path)
        except OSError:
            pass
        return out

    def write_snapshot_file(self, peer: str, number: int, name: str, data: bytes) -> Path:
        folder = self.snapshots_dir(peer) / f"{number:012d}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if target.exists():
            raise FileExistsError(target)
        fsutil.atomic_write(target, data)
        return target

    def delete_snapshot(self, peer: str, number: int) -> None:
        folder = self.snapshots_dir(peer) / f"{number:012d}"
        manifest = folder / "manifest.psb"
        manifest.unlink(missing_ok=True)  # first: a reader never sees a manifest without its parts
        for f in folder.glob("*"):
            f.unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass

    # -- roster changes (removals, key rotations) ------------------------------

    def write_roster_record(self, peer: str, body: dict[str, Any], signer: crypto.SigningKey) -> None:
        body = dict(body, peer_id=peer, store_id=self.store_id)
        body["sig"] = base64.b64encode(signer.sign(canonical(body))).decode()
        fsutil.atomic_write(self.peer_dir(peer) / "roster.json", json.dumps(body, indent=1).encode())

    def read_roster_record(self, peer: str, public_key: bytes) -> dict[str, Any] | None:
        """``peer``'s removals and key rotations, if present and signed by it."""
        try:
            data = json.loads((self.peer_dir(peer) / "roster.json").read_text("utf-8"))
            sig = base64.b64decode(data.pop("sig"))
            crypto.verify(public_key, sig, canonical(data))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, CryptoError):
            return None
        if data.get("peer_id") != peer or data.get("store_id") != self.store_id:
            return None
        return data  # type: ignore[no-any-return]

    # -- heartbeats -----------------------------------------------------------

    def write_heartbeat(self, peer: str, body: dict[str, Any], signer: crypto.SigningKey) -> None:
        body = dict(body, peer_id=peer, store_id=self.store_id, time=time.time())
        body["sig"] = base64.b64encode(signer.sign(canonical(body))).decode()
        fsutil.atomic_write(self.peer_dir(peer) / "heartbeat.json", json.dumps(body, indent=1).encode())

    def read_heartbeat(self, peer: str, public_key: bytes) -> dict[str, Any] | None:
        """The heartbeat of ``peer`` if present, signed by it and well formed, else None."""
        try:
            data = json.loads((self.peer_dir(peer) / "heartbeat.json").read_text("utf-8"))
            sig = base64.b64decode(data.pop("sig"))
            crypto.verify(public_key, sig, canonical(data))
            data["time"] = float(data["time"])
            data["published"] = int(data.get("published", 0) or 0)
            data["applied"] = {str(k): int(v) for k, v in dict(data.get("applied", {})).items()}
            data["wants"] = [w for w in list(data.get("wants", [])) if isinstance(w, dict)]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, CryptoError):
            return None
        if data.get("peer_id") != peer or data.get("store_id") != self.store_id:
            return None
        return data  # type: ignore[no-any-return]
