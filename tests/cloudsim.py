"""A deterministic, misbehaving cloud service that mirrors relay folders between simulated machines.

Each relay folder passed to :class:`Cloud` is one machine's copy of the folder a
cloud client (Dropbox, OneDrive...) replicates. The simulator works on the real
filesystem only and knows nothing of peersync:

* ``step()`` is one round of the service. It first **scans** every relay
  (no watchers: size + mtime_ns + SHA-256 against what it last saw there) and
  turns every change it did not make itself into an **upload** (a new version
  of that path, or a deletion), then performs every **delivery phase** that is
  due. An upload noticed in step *k* reaches the other relays in step
  ``k + delay`` (plus a random ``0..delay+3`` steps per delivery when
  ``reorder``), never its own source.
* Versions of a path are numbered in upload order; a relay never goes back to
  an older version than the one it holds, so whatever was written last (as the
  scans saw it) wins everywhere. Two machines writing the same path between
  two scans: the later-scanned one wins and the other's content is replaced
  (no automatic conflicted copy; peersync never does this, invariant 2).
* Misbehaviour, drawn per delivery from ``random.Random(seed)`` only:

  ======================  ==================================================
  ``placeholders``        the file first appears as a zero-byte file, then
                          gets its content in place 1..3 steps later
  ``truncate``            the file is first written in place truncated to a
                          shorter length, then completed in place 1..3 steps
                          later
  ``conflict_copies``     a conflicted copy (same content) is created beside
                          it on the receiver, named per ``conflict_style``;
                          it stays on that receiver only (an *artefact*)
  ``duplicate``           1..3 steps after the file is complete, the same
                          bytes are delivered again (atomic rewrite: new inode
                          and mtime, identical content)
  ``vanish``              1..3 steps after that, the file is removed from the
                          receiver for exactly one step, then restored
  ======================  ==================================================

  Other writes are atomic, as a real client does: ``.~tmp-<name>`` beside the
  target, then ``os.replace``. Files named ``.~tmp-*`` are never uploaded.
* Everything the simulator writes is recorded, so its own partial, placeholder,
  duplicate or restored files are never mistaken for new uploads.
* A relay whose root folder is missing is an offline machine: it is not
  scanned (so nothing is read as deleted) and deliveries to it wait.
  ``set_online(i, False)`` does the same without touching the folder.

Typical use between two peersync runs::

    cloud = Cloud([relay_a, relay_b], seed=3, delay=1, reorder=True, truncate=0.3)
    run_peersync(a)            # writes into relay_a
    for _ in range(4):
        cloud.step()           # the cloud notices and delivers, badly
        run_peersync(b)        # b sees whatever has arrived by now
    cloud.settle()             # everything delivered faithfully

Nothing is noticed until the next ``step()``: ``pending()`` counts deliveries
already in flight, not changes made since the last step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from pathlib import Path

__all__ = [
    "CONFLICT_DAY",
    "CONFLICT_STYLES",
    "CONFLICT_TIME",
    "TMP_PREFIX",
    "Cloud",
    "Event",
    "computer_name",
    "conflict_copy_name",
    "mirror_now",
    "read_tree",
    "user_name",
]

TMP_PREFIX = ".~tmp-"
"""Name prefix of the simulator's own temporary files; such files are never uploaded."""

CONFLICT_STYLES = ("dropbox", "onedrive", "gdrive", "nextcloud")
CONFLICT_DAY = "2026-11-24"
"""The (fixed, deterministic) date written into conflicted-copy names."""
CONFLICT_TIME = "101500"
"""The (fixed) time of day Nextcloud writes into conflicted-copy names."""

_USERS = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi")
_MAX_NAME_TRIES = 1000
_MAX_EXTRA_STEPS = 3  # misbehaviour phases are spaced 1.._MAX_EXTRA_STEPS steps apart


def user_name(machine: int) -> str:
    """The user name of machine ``machine`` (Alice, Bob, Carol... then ``User8``...)."""
    return _USERS[machine] if machine < len(_USERS) else f"User{machine}"


def computer_name(machine: int) -> str:
    """The computer name of machine ``machine`` (``DESKTOP-1234``, ``DESKTOP-1235``...)."""
    return f"DESKTOP-{1234 + machine}"


def _split_ext(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0:  # no extension, or a dotfile such as ".peersync"
        return name, ""
    return name[:dot], name[dot:]


def conflict_copy_name(name: str, style: str, *, user: str, computer: str, n: int = 0) -> str:
    """The ``n``-th candidate name for a service conflicted copy of the file ``name``.

    ``n == 0`` is the usual name; later candidates are tried when it is taken:

    * dropbox: ``name (Alice's conflicted copy 2026-11-24).ext``, then ``... (1).ext``
    * onedrive: ``name-DESKTOP-1234.ext``, then ``name-DESKTOP-1234 (1).ext``
    * gdrive: ``name (1).ext``, then ``name (2).ext``
    * nextcloud: ``name (conflicted copy 2026-11-24 101500).ext``, then ``... (1).ext``
    """
    stem, ext = _split_ext(name)
    if style == "gdrive":
        return f"{stem} ({n + 1}){ext}"
    if style == "dropbox":
        base = f"{stem} ({user}'s conflicted copy {CONFLICT_DAY})"
    elif style == "onedrive":
        base = f"{stem}-{computer}"
    elif style == "nextcloud":
        base = f"{stem} (conflicted copy {CONFLICT_DAY} {CONFLICT_TIME})"
    else:
        raise ValueError(f"unknown conflict style {style!r}; expected one of {CONFLICT_STYLES}")
    return f"{base} ({n}){ext}" if n else f"{base}{ext}"


def _list_files(root: Path) -> dict[str, Path]:
    """Every regular file under ``root`` by POSIX relative path, without our temp files or symlinks."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in filenames:
            if name.startswith(TMP_PREFIX):
                continue
            full = Path(dirpath, name)
            if full.is_symlink() or not full.is_file():
                continue
            found[full.relative_to(root).as_posix()] = full
    return found


def read_tree(root: Path, *, exclude: set[str] | frozenset[str] = frozenset()) -> dict[str, bytes]:
    """The content of every file under ``root`` by POSIX relative path (temp files left out)."""
    return {rel: p.read_bytes() for rel, p in sorted(_list_files(root).items()) if rel not in exclude}


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(TMP_PREFIX + path.name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _write_in_place(path: Path, data: bytes) -> None:
    """Write ``data`` over the start of ``path`` and cut it there; the file never shrinks in between
    unless ``data`` is shorter (a real client growing a partial download)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if path.is_file() else "wb") as f:
        f.write(data)
        f.truncate(len(data))


def mirror_now(src: Path, dst: Path) -> None:
    """Make ``dst`` a faithful copy of ``src`` at once: new and changed files copied atomically
    (mtime kept), files and folders missing from ``src`` removed, folders created."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    src_files = _list_files(src)
    dst_files = _list_files(dst)
    for rel, path in sorted(src_files.items()):
        data = path.read_bytes()
        target = dst / rel
        if rel in dst_files and dst_files[rel].read_bytes() == data:
            continue
        _atomic_write(target, data)
        st = path.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    for rel in sorted(set(dst_files) - set(src_files)):
        (dst / rel).unlink()
    src_dirs = {Path(d).relative_to(src).as_posix() for d, _, _ in os.walk(src)}
    for rel in sorted(src_dirs):
        (dst / rel).mkdir(parents=True, exist_ok=True)
    dst_dirs = {Path(d).relative_to(dst).as_posix() for d, _, _ in os.walk(dst)}
    for rel in sorted(dst_dirs - src_dirs, key=lambda r: r.count("/"), reverse=True):
        try:
            (dst / rel).rmdir()
        except OSError:  # holds a temp file or something else we must not remove
            pass


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing the cloud did, for tests and debugging.

    ``kind`` is ``upload`` or ``upload-delete`` (``relay`` is the source), or a
    delivery operation on ``relay``: ``placeholder``, ``partial``, ``write``,
    ``complete``, ``conflict`` (``path`` is the copy's path), ``duplicate``,
    ``vanish``, ``restore``, ``delete``, or ``blocked`` (an OS error stopped it).
    """

    step: int
    relay: int
    path: str
    kind: str


@dataclasses.dataclass(frozen=True)
class _Sig:
    size: int
    mtime_ns: int
    digest: str


@dataclasses.dataclass
class _Phase:
    due: int
    kind: str
    arg: int = 0


@dataclasses.dataclass
class _Delivery:
    seq: int
    target: int
    rel: str
    version: int
    data: bytes | None  # None: a deletion
    phases: list[_Phase]
    index: int = 0
    started: bool = False
    in_place: bool = False  # a placeholder or partial file of ours is on disk
    vanished: bool = False

    @property
    def next_due(self) -> int:
        return self.phases[self.index].due


_OPTIONAL_KINDS = frozenset({"placeholder", "partial", "conflict", "duplicate", "vanish"})


class Cloud:
    """A cloud service replicating ``relays`` (one folder per machine), deterministically badly.

    Probabilities are per delivery (one upload to one receiving relay), in ``[0, 1]``.
    ``delay`` is in steps; ``reorder`` adds ``0..delay+3`` random steps per delivery.
    ``conflict_style`` is one of :data:`CONFLICT_STYLES`. Machine ``i`` is
    ``user_name(i)`` on ``computer_name(i)`` (Alice on DESKTOP-1234, Bob...).
    """

    def __init__(
        self,
        relays: list[Path],
        seed: int = 0,
        *,
        delay: int = 0,
        reorder: bool = False,
        truncate: float = 0.0,
        duplicate: float = 0.0,
        vanish: float = 0.0,
        conflict_copies: float = 0.0,
        placeholders: float = 0.0,
        conflict_style: str = "dropbox",
    ) -> None:
        self.relays = [Path(r) for r in relays]
        if not self.relays:
            raise ValueError("a cloud needs at least one relay folder")
        if len({os.path.abspath(r) for r in self.relays}) != len(self.relays):
            raise ValueError("each relay folder must belong to one machine only")
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if conflict_style not in CONFLICT_STYLES:
            raise ValueError(f"unknown conflict style {conflict_style!r}; expected one of {CONFLICT_STYLES}")
        probabilities = {
            "truncate": truncate,
            "duplicate": duplicate,
            "vanish": vanish,
            "conflict_copies": conflict_copies,
            "placeholders": placeholders,
        }
        for name, p in probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {p}")
        self.delay = delay
        self.reorder = reorder
        self.truncate = truncate
        self.duplicate = duplicate
        self.vanish = vanish
        self.conflict_copies = conflict_copies
        self.placeholders = placeholders
        self.conflict_style = conflict_style
        self.now = 0  # number of steps taken
        self.log: list[Event] = []
        self._rng = random.Random(seed)
        self._faithful = False
        self._online = [True] * len(self.relays)
        self._known: list[dict[str, _Sig]] = [{} for _ in self.relays]  # what we last saw/wrote
        self._have: list[dict[str, int]] = [{} for _ in self.relays]  # version each relay holds
        self._artefacts: list[set[str]] = [set() for _ in self.relays]
        self._server: dict[str, tuple[int, bytes | None]] = {}  # path -> (version, content)
        self._version = 0
        self._seq = 0
        self._deliveries: list[_Delivery] = []

    # -- public surface -------------------------------------------------------

    def step(self) -> int:
        """One delivery round; returns how many file operations it performed."""
        self.now += 1
        for i in range(len(self.relays)):
            if self._is_online(i):
                self._scan(i)
        return self._deliver_due()

    def settle(self, max_steps: int = 1000, *, clean: bool = False) -> None:
        """Deliver everything faithfully (still out of order if reorder) until all relays hold identical
        content for every file; leftover service artefacts (conflicted copies, placeholders) may remain
        unless clean=True.

        Misbehaviour still in flight is dropped (a vanished file is restored, a partial one completed).
        Raises ``RuntimeError`` when the relays have not converged after ``max_steps`` steps
        (an offline machine, a folder standing where a file must go...).
        """
        saved, self._faithful = self._faithful, True
        try:
            for _ in range(max_steps):
                self.step()
                if not self._deliveries and self._converged():
                    break
            else:
                raise RuntimeError(
                    f"cloud did not settle in {max_steps} steps: {self.pending()} deliveries pending, "
                    f"offline relays {[i for i in range(len(self.relays)) if not self._is_online(i)]}, "
                    f"differences {self._differences()[:10]}"
                )
            if clean:
                for i in range(len(self.relays)):
                    for rel in sorted(self._artefacts[i]):
                        (self.relays[i] / rel).unlink(missing_ok=True)
                        self._known[i].pop(rel, None)
                    self._artefacts[i].clear()
        finally:
            self._faithful = saved

    def pending(self) -> int:
        """How many deliveries (one upload to one relay) are in flight, misbehaviour phases included."""
        return len(self._deliveries)

    def set_online(self, machine: int, online: bool) -> None:
        """Take a machine off the network (not scanned, nothing delivered to it) or bring it back."""
        self._online[machine] = online

    def artefacts(self, machine: int) -> set[str]:
        """Relative paths of the service conflicted copies the cloud has left on that relay."""
        return set(self._artefacts[machine])

    def tree(self, machine: int, *, artefacts: bool = False) -> dict[str, bytes]:
        """The relay's files by relative path, without conflicted copies unless ``artefacts``."""
        exclude = frozenset() if artefacts else frozenset(self._artefacts[machine])
        return read_tree(self.relays[machine], exclude=exclude)

    def conflict_name(self, rel: str, machine: int, n: int = 0) -> str:
        """The relative path of the ``n``-th candidate conflicted copy of ``rel`` on ``machine``."""
        head, _, name = rel.rpartition("/")
        copy = conflict_copy_name(
            name, self.conflict_style, user=user_name(machine), computer=computer_name(machine), n=n
        )
        return f"{head}/{copy}" if head else copy

    @property
    def uploads(self) -> int:
        """How many uploads (changes noticed on some relay) the cloud has made so far."""
        return self._version

    # -- scanning -------------------------------------------------------------

    def _is_online(self, i: int) -> bool:
        return self._online[i] and self.relays[i].is_dir()

    def _scan(self, i: int) -> None:
        root = self.relays[i]
        known = self._known[i]
        files = _list_files(root)
        for rel in sorted(files):
            read = self._read_stable(files[rel])
            if read is None:  # vanished or changing under us: look again next step
                continue
            sig, data = read
            old = known.get(rel)
            if old == sig:
                continue
            known[rel] = sig
            if old is not None and old.digest == sig.digest:
                continue  # touched, same bytes: nothing to upload
            if rel in self._artefacts[i]:  # a user edited a conflicted copy: now an ordinary file
                self._artefacts[i].discard(rel)
            self._upload(i, rel, data)
        for rel in sorted(set(known) - set(files)):
            del known[rel]
            if rel in self._artefacts[i]:
                self._artefacts[i].discard(rel)
                continue
            self._upload(i, rel, None)

    @staticmethod
    def _read_stable(path: Path) -> tuple[_Sig, bytes] | None:
        try:
            before = path.stat()
            data = path.read_bytes()
            after = path.stat()
        except OSError:
            return None
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or len(data) != after.st_size:
            return None
        return _Sig(len(data), after.st_mtime_ns, hashlib.sha256(data).hexdigest()), data

    def _upload(self, source: int, rel: str, data: bytes | None) -> None:
        current = self._server.get(rel)
        if current is None and data is None:
            return
        if current is not None and current[1] == data:
            self._have[source][rel] = current[0]  # same bytes as the service holds: no upload
            return
        self._version += 1
        version = self._version
        self._server[rel] = (version, data)
        self._have[source][rel] = version
        self.log.append(Event(self.now, source, rel, "upload" if data is not None else "upload-delete"))
        for target in range(len(self.relays)):
            if target != source:
                self._schedule(target, rel, version, data)

    def _schedule(self, target: int, rel: str, version: int, data: bytes | None) -> None:
        rng = self._rng
        due = self.now + self.delay
        if self.reorder:
            due += rng.randint(0, self.delay + _MAX_EXTRA_STEPS)
        phases: list[_Phase] = []
        if data is None:
            phases.append(_Phase(due, "delete"))
        elif self._faithful:
            phases.append(_Phase(due, "write"))
        else:
            # Always draw every number, so one probability does not shift the others' stream.
            rolls = [rng.random() for _ in range(5)]
            gaps = [rng.randint(1, _MAX_EXTRA_STEPS) for _ in range(4)]
            cut = rng.randint(1, len(data) - 1) if len(data) > 1 else 0
            t = due
            if data and rolls[0] < self.placeholders:
                phases.append(_Phase(t, "placeholder"))
                t += gaps[0]
            if data and rolls[1] < self.truncate:
                phases.append(_Phase(t, "partial", cut))
                t += gaps[1]
            phases.append(_Phase(t, "write"))
            if rolls[2] < self.conflict_copies:
                phases.append(_Phase(t, "conflict"))
            if rolls[3] < self.duplicate:
                t += gaps[2]
                phases.append(_Phase(t, "duplicate"))
            if rolls[4] < self.vanish:
                t += gaps[3]
                phases.append(_Phase(t, "vanish"))
                phases.append(_Phase(t + 1, "restore"))
        self._seq += 1
        self._deliveries.append(_Delivery(self._seq, target, rel, version, data, phases))

    # -- delivering -----------------------------------------------------------

    def _deliver_due(self) -> int:
        due = [d for d in self._deliveries if d.next_due <= self.now and self._is_online(d.target)]
        due.sort(key=lambda d: (d.next_due, d.seq))
        ops = 0
        finished: set[int] = set()
        for d in due:
            while d.index < len(d.phases) and d.phases[d.index].due <= self.now:
                phase = d.phases[d.index]
                d.index += 1
                if not self._current(d):
                    d.index = len(d.phases)  # superseded by a newer version: drop the rest
                    break
                ops += self._perform(d, phase)
            if d.index >= len(d.phases):
                finished.add(d.seq)
        self._deliveries = [d for d in self._deliveries if d.seq not in finished]
        return ops

    def _current(self, d: _Delivery) -> bool:
        have = self._have[d.target]
        if d.started:
            return have.get(d.rel) == d.version
        if have.get(d.rel, 0) >= d.version:
            return False
        have[d.rel] = d.version
        d.started = True
        return True

    def _perform(self, d: _Delivery, phase: _Phase) -> int:
        """Carry out one phase of a delivery; returns 1 when it touched the disk, else 0."""
        kind = phase.kind
        if self._faithful and kind in _OPTIONAL_KINDS:
            return 0
        if kind == "restore" and not d.vanished:
            return 0
        path = self.relays[d.target] / d.rel
        data = d.data if d.data is not None else b""
        try:
            if kind == "delete":
                if not path.is_file():
                    return 0
                path.unlink()
                self._known[d.target].pop(d.rel, None)
                self._artefacts[d.target].discard(d.rel)
            elif kind == "placeholder":
                _write_in_place(path, b"")
                d.in_place = True
                self._record(d.target, d.rel, b"")
            elif kind == "partial":
                _write_in_place(path, data[: phase.arg])
                d.in_place = True
                self._record(d.target, d.rel, data[: phase.arg])
            elif kind == "write":
                if d.in_place and path.is_file():
                    _write_in_place(path, data)
                    kind = "complete"
                else:
                    _atomic_write(path, data)
                d.in_place = False
                self._record(d.target, d.rel, data)
            elif kind == "conflict":
                copy = self._free_conflict_name(d.target, d.rel)
                if copy is None:
                    return 0
                _atomic_write(self.relays[d.target] / copy, data)
                self._artefacts[d.target].add(copy)
                self._record(d.target, copy, data)
                self.log.append(Event(self.now, d.target, copy, kind))
                return 1
            elif kind in ("duplicate", "restore"):
                _atomic_write(path, data)
                d.vanished = False
                self._record(d.target, d.rel, data)
            elif kind == "vanish":
                if not path.is_file():
                    return 0
                path.unlink()
                self._known[d.target].pop(d.rel, None)
                d.vanished = True
            else:  # pragma: no cover - a phase kind this class never creates
                raise AssertionError(kind)
        except OSError:
            self.log.append(Event(self.now, d.target, d.rel, "blocked"))
            d.index = len(d.phases)
            return 0
        self.log.append(Event(self.now, d.target, d.rel, kind))
        return 1

    def _record(self, machine: int, rel: str, data: bytes) -> None:
        """Remember what we just wrote, so the next scan does not take it for a change."""
        st = (self.relays[machine] / rel).stat()
        self._known[machine][rel] = _Sig(len(data), st.st_mtime_ns, hashlib.sha256(data).hexdigest())
        if rel in self._server:
            self._artefacts[machine].discard(rel)

    def _free_conflict_name(self, machine: int, rel: str) -> str | None:
        for n in range(_MAX_NAME_TRIES):
            candidate = self.conflict_name(rel, machine, n)
            if candidate in self._server or candidate in self._known[machine]:
                continue
            if (self.relays[machine] / candidate).exists():
                continue
            return candidate
        return None

    # -- convergence ----------------------------------------------------------

    def _differences(self) -> list[str]:
        trees = [self.tree(i) for i in range(len(self.relays))]
        paths = sorted(set().union(*trees))
        return [p for p in paths if len({t.get(p) for t in trees}) > 1]

    def _converged(self) -> bool:
        return all(self._is_online(i) for i in range(len(self.relays))) and not self._differences()
