"""Convergence as a property (issue 5): random edits, deletes, renames and concurrent edits on three
peers, relay files delivered late and out of order, and in the end every store identical and nothing lost.

Each of the three peers has its OWN relay folder. The test is the cloud: a ``deliver`` step copies a
random subset of the files one peer wrote under its ``peers/<id>/`` folder into another peer's relay
(atomically, mtime kept; a file its author removed is removed too), so bundles arrive out of order, one
peer lags behind another, and a peer may see bob's bundles before bob's ``peer.json``.

Peers are driven through the real command line. For speed the property calls ``peersync.cli.main``
in-process (``run_cli``: same code path as ``python -m peersync``, with ``PEERSYNC_HOME`` set per call
and stdout/stderr captured); the final check of every example runs ``peersync sync`` in a subprocess.

Checked:

* after every sync: exit status 0 or 1, no traceback, no "internal error";
  every content the store held just before the sync is, just after it, in that store or in that
  peer's versions archive (DESIGN invariant 1: peersync archives what it overwrites or deletes);
  every archive object hashes to its name; no store file shares its inode with another path (an
  in-place edit would change both);
* at the end (deliver everything, sync every peer, deliver again; rounds repeated until one sends no
  bundle and every sync exits 0, at most 8): the rounds stop producing bundles,
  the last ``sync`` of every peer exits 0, all three stores are byte-for-byte identical (``tree``),
  and every content a sync ever saw in some store still exists in some store (conflict copies
  included) or some peer's versions archive -- unless the *user* destroyed it on every peer that
  held it (overwrote or deleted it by hand), which no sync tool can undo.

CI runs a short derandomized form: 40 programs of up to 25 steps, about 30 s on two cores when it
passes (a failure is shrunk by hypothesis for up to 5 minutes more). The long form is marked ``slow``:
``pytest -m slow tests/test_convergence.py`` runs 400 random programs of up to 50 steps (about 8 minutes);
``PEERSYNC_LONG=N`` sets how many.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Peer, Result, tree
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

from peersync import cli

NAMES = ("alice", "bob", "carol")
PATHS = ("a.txt", "b.txt", "d/c.txt")  # few paths: concurrent edits of one path are frequent
TARGETS = (*PATHS, "d/a.txt", "e/b.txt")  # rename targets: over a file, into a folder, into a new folder
CONTENT = st.text(alphabet="abc", max_size=4)  # small alphabet: identical concurrent edits happen too
PEER = st.integers(0, len(NAMES) - 1)
PAIR = st.sampled_from([(i, j) for i in range(len(NAMES)) for j in range(len(NAMES)) if i != j])
T0 = 1_700_000_000_000_000_000
SKEW = st.integers(0, 3)  # seconds added to an mtime: a later edit may carry an older mtime
FINAL_ROUNDS = 8
TEMP_PREFIXES = (".peersync-tmp-", ".~")

# The long run's number of examples: PEERSYNC_LONG=N (PEERSYNC_LONG=1 means the default, 400).
_LONG = os.environ.get("PEERSYNC_LONG", "")
LONG_EXAMPLES = int(_LONG) if _LONG.isdigit() and int(_LONG) > 1 else 400


# -- running peersync in-process ------------------------------------------------------------------


def run_cli(peer: Peer, *args: str) -> Result:
    """``peersync ARGS`` as ``peer``, in this process: ``cli.main`` with PEERSYNC_HOME set and output captured.

    An exception escaping ``main`` is returned as exit status -1 with its traceback in ``err``.
    """
    saved = os.environ.get("PEERSYNC_HOME")
    os.environ["PEERSYNC_HOME"] = str(peer.home)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception:
                err.write(traceback.format_exc())
                code = -1
    finally:
        if saved is None:
            os.environ.pop("PEERSYNC_HOME", None)
        else:
            os.environ["PEERSYNC_HOME"] = saved
        logger = logging.getLogger("peersync")  # main() installs handlers on every call: close them
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    return Result(code, out.getvalue(), err.getvalue())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_of(store: Path) -> dict[str, bytes]:
    """The store's files (no folders, no marker) by '/'-path."""
    return {rel: data for rel, data in tree(store).items() if data is not None}


def _walk_files(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if not root.exists():
        return out
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.startswith(TEMP_PREFIXES):
                continue
            full = Path(dirpath, name)
            out[full.relative_to(root).as_posix()] = full
    return out


def _copy_atomic(src: Path, dst: Path) -> None:
    """What a cloud client does: write a temporary name, rename it into place, keep the mtime."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(".~tmp-" + dst.name)
    shutil.copyfile(src, tmp)
    st_ = src.stat()
    os.utime(tmp, ns=(st_.st_atime_ns, st_.st_mtime_ns))
    os.replace(tmp, dst)


class Cluster:
    """Three peers of one store, each with its own state folder, store folder and relay folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.peers = [Peer(n, root / f"home-{n}", root / n, root / f"relay-{n}") for n in ("p0", "p1", "p2")]
        for p in self.peers:
            p.relay.mkdir(parents=True)
        first = self.peers[0]
        self.cli(0, "init", str(first.store), "--relay", str(first.relay), "--name", "docs", check=0)
        code = self.cli(0, "invite", "docs", check=0).last_line
        for i, p in enumerate(self.peers[1:], start=1):
            for rel, path in _walk_files(first.relay).items():  # store.json and alice's peer.json
                _copy_atomic(path, p.relay / rel)
            self.cli(i, "join", code, str(p.store), "--relay", str(p.relay), check=0)
        self.ids: list[str] = []
        for i in range(len(self.peers)):
            data = json.loads(self.cli(i, "status", "--json", check=0).out)
            self.ids.append(data["peer"])
            self.store_id = data["stores"][0]["id"]
        # Peer ids are random, and they break ties (equal mtimes) and name conflict copies. Number the
        # peers by id, so a replayed program makes the same decisions: alice has the smallest id.
        order = sorted(range(len(self.peers)), key=lambda i: self.ids[i])
        self.peers = [self.peers[i] for i in order]
        self.ids = [self.ids[i] for i in order]
        for name, peer in zip(NAMES, self.peers):
            peer.name = name

    def cli(self, i: int, *args: str, check: int | None = None) -> Result:
        res = run_cli(self.peers[i], *args)
        if check is not None:
            assert res.code == check, f"{NAMES[i]}: peersync {' '.join(args)} -> {res.code}\n{res.out}\n{res.err}"
        return res

    # -- the cloud, under the test's control ----------------------------------------------------

    def own_dir(self, relay_of: int, author: int) -> Path:
        return self.peers[relay_of].relay / self.store_id / "peers" / self.ids[author]

    def undelivered(self, src: int, dst: int) -> list[str]:
        """Files (relative to the author folder) that ``src`` wrote and ``dst``'s relay lacks or holds
        in an older state, and files ``src`` removed that ``dst``'s relay still holds."""
        have = _walk_files(self.own_dir(src, src))
        there = _walk_files(self.own_dir(dst, src))
        out = [rel for rel, p in have.items() if rel not in there or there[rel].read_bytes() != p.read_bytes()]
        out += [rel for rel in there if rel not in have]
        return sorted(out)

    def deliver(self, src: int, dst: int, rels: list[str]) -> None:
        for rel in rels:
            source = self.own_dir(src, src) / rel
            target = self.own_dir(dst, src) / rel
            if source.is_file():
                _copy_atomic(source, target)
            else:
                target.unlink(missing_ok=True)

    def deliver_everything(self) -> None:
        for src in range(len(self.peers)):
            for dst in range(len(self.peers)):
                if src != dst:
                    self.deliver(src, dst, self.undelivered(src, dst))

    def bundle_count(self) -> int:
        return sum(1 for i in range(len(self.peers)) for rel in _walk_files(self.own_dir(i, i))
                   if rel.startswith("bundles/"))

    # -- the versions archive ------------------------------------------------------------------

    def archive(self, i: int) -> set[str]:
        """Content hashes in peer ``i``'s versions archive; each object must hash to its own name."""
        folder = self.peers[i].home / "versions" / self.store_id
        found: set[str] = set()
        for rel, path in _walk_files(folder).items():
            digest = sha(path.read_bytes())
            name = rel.rpartition("/")[2]
            assert digest == name, f"{NAMES[i]}'s archive object {rel} does not hold the content it is named by"
            found.add(digest)
        return found


def say(text: str) -> None:
    """A line for hypothesis' failure report (printed when replayed outside hypothesis)."""
    if currently_in_test_context():
        note(text)
    elif os.environ.get("PEERSYNC_CONV_VERBOSE"):
        print(text)


def _brief(res: Result) -> str:
    progress = ("docs: scan", "docs: hash", "docs: pack", "docs: publish", "docs: fetch", "docs: verify",
                "docs: apply")
    lines = [line.strip() for line in (res.out + res.err).splitlines()
             if line.strip() and not line.strip().startswith(progress)]
    return " | ".join(lines)


def check_sync_result(name: str, res: Result) -> None:
    assert res.code in (0, 1), f"{name}: `peersync sync` exited {res.code}\n{res.out}\n{res.err}"
    assert "Traceback" not in res.err and "Traceback" not in res.out, f"{name}: traceback\n{res.err}"
    assert "internal error" not in res.err, f"{name}: `peersync sync` hit an internal error\n{res.err}"


# -- the property -----------------------------------------------------------------------------------


class Model:
    """What the test did and saw, for the no-loss checks."""

    def __init__(self) -> None:
        self.clock = 0
        self.contents: dict[str, bytes] = {}  # hash -> content, for messages
        self.held_by: dict[str, set[int]] = {}  # content seen by a sync in a peer's store -> those peers
        self.user_removed: dict[str, set[int]] = {}  # content whose last copy on a peer its user destroyed
        self.deletes_since_sync = [0] * len(NAMES)


class World:
    """A cluster plus the model; every step of the property is a method here, so regressions can replay
    a shrunk sequence without hypothesis."""

    def __init__(self, root: Path | None = None) -> None:
        self.tmp = root if root is not None else Path(tempfile.mkdtemp(prefix="peersync-conv-"))
        self.c = Cluster(self.tmp)
        self.m = Model()
        self.scratch = self.tmp / "scratch"
        self.scratch.mkdir()

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def store(self, p: int) -> Path:
        return self.c.peers[p].store

    # -- user steps -----------------------------------------------------------------------------

    def _mtime(self, skew: int) -> int:
        """A fresh mtime, never used before (so no edit hides behind an unchanged size+mtime+inode)."""
        self.m.clock += 1
        return T0 + skew * 1_000_000_000 + self.m.clock * 1000

    def _user(self, p: int, action: Callable[[], None]) -> None:
        before = {sha(d) for d in files_of(self.store(p)).values()}
        action()
        after = {sha(d) for d in files_of(self.store(p)).values()}
        for h in before - after:
            self.m.user_removed.setdefault(h, set()).add(p)

    def _write(self, p: int, path: str, content: str, mtime: int, in_place: bool) -> None:
        data = content.encode()
        self.m.contents[sha(data)] = data
        target = self.store(p) / path

        def act() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            if in_place or not target.exists():
                target.write_bytes(data)  # same inode, truncated and rewritten, as most programs save
            else:
                tmp = self.scratch / "save"  # saved aside and renamed over it, as editors save
                tmp.write_bytes(data)
                os.replace(tmp, target)
            os.utime(target, ns=(mtime, mtime))

        self._user(p, act)

    def write(self, p: int, path: str, content: str, skew: int = 0, in_place: bool = True) -> None:
        self._write(p, path, content, self._mtime(skew), in_place)

    def concurrent_edit(self, p: int, q: int, path: str, c1: str, c2: str, skew1: int = 0, skew2: int = 0,
                        same_content: bool = False, same_mtime: bool = False) -> None:
        """The same path edited on two peers between syncs, maybe to the same bytes, maybe at the same mtime."""
        m1 = self._mtime(skew1)
        self._write(p, path, c1, m1, True)
        if q != p:
            self._write(q, path, c1 if same_content else c2, m1 if same_mtime else self._mtime(skew2), True)

    def existing(self, p: int) -> list[str]:
        return sorted(files_of(self.store(p)))

    def touch(self, p: int, k: int, skew: int = 0) -> None:
        names = self.existing(p)
        if names:
            mtime = self._mtime(skew)
            os.utime(self.store(p) / names[k % len(names)], ns=(mtime, mtime))

    def delete(self, p: int, k: int) -> None:
        names = self.existing(p)
        if not names:
            return
        victim = self.store(p) / names[k % len(names)]
        self.m.deletes_since_sync[p] += 1
        self._user(p, victim.unlink)

    def rename(self, p: int, k: int, dest: str) -> None:
        names = self.existing(p)
        if not names:
            return
        src = names[k % len(names)]
        if src == dest:
            return
        target = self.store(p) / dest
        if (self.store(p) / dest).is_dir():
            return
        self.m.deletes_since_sync[p] += 1

        def act() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(self.store(p) / src, target)

        self._user(p, act)

    # -- peersync and the cloud ---------------------------------------------------------------------

    def sync(self, p: int) -> Result:
        store = self.store(p)
        before = files_of(store)
        for data in before.values():
            self.m.held_by.setdefault(sha(data), set()).add(p)
        # Five deletions between two syncs would be held as a mass deletion; the user confirms them.
        confirm = ["--allow-deletes"] if self.m.deletes_since_sync[p] >= 4 else []
        res = self.c.cli(p, "sync", *confirm)
        self.m.deletes_since_sync[p] = 0
        say(f"  sync {NAMES[p]} -> {res.code}: {_brief(res)}")
        check_sync_result(NAMES[p], res)
        after = files_of(store)
        for data in after.values():
            self.m.held_by.setdefault(sha(data), set()).add(p)
        for rel in after:  # an in-place edit of one would change the other: "never share one inode"
            links = (store / rel).stat().st_nlink
            assert links == 1, f"{NAMES[p]}: after a sync {rel} shares its inode with {links - 1} other path(s)"
        kept = {sha(d) for d in after.values()} | self.c.archive(p)
        lost = {rel: data for rel, data in before.items() if sha(data) not in kept}
        assert not lost, (
            f"{NAMES[p]}: this sync removed content from the store without keeping it in the versions "
            f"archive: {lost}; store after the sync: {after}"
        )
        return res

    def deliver(self, src: int, dst: int, mask: int = 255) -> None:
        pending = self.c.undelivered(src, dst)
        chosen = [rel for k, rel in enumerate(pending) if mask >> (k % 8) & 1]
        say(f"  deliver {NAMES[src]} -> {NAMES[dst]}: {chosen} of {pending}")
        self.c.deliver(src, dst, chosen)

    # -- the end ---------------------------------------------------------------------------------

    def settle_and_check(self, subprocess_check: bool = True) -> None:
        c, n = self.c, len(NAMES)
        results: list[Result] = []
        quiet = False
        stuck = 0
        for _ in range(FINAL_ROUNDS):
            c.deliver_everything()
            bundles = c.bundle_count()
            results = [self.sync(p) for p in range(n)]
            c.deliver_everything()
            quiet = c.bundle_count() == bundles
            if quiet and all(r.code == 0 for r in results):
                break
            # A peer missing a renamed file's content asks its author in its heartbeat: one more
            # round lets the author answer. Two rounds without a bundle and still errors: stuck.
            stuck = stuck + 1 if quiet else 0
            if stuck == 2:
                break
        trees = [tree(self.store(p)) for p in range(n)]
        summary = {NAMES[p]: files_of(self.store(p)) for p in range(n)}
        assert quiet, f"peers still send bundles after {FINAL_ROUNDS} rounds of deliver-all + sync-all: {summary}"
        for p, res in enumerate(results):
            assert res.code == 0, f"{NAMES[p]}: errors remain after convergence:\n{res.out}\n{res.err}"
        for p in range(1, n):
            assert trees[p] == trees[0], f"stores differ after convergence: {summary}"

        # Nothing a sync ever saw is lost, unless the users themselves destroyed it on every peer holding it.
        everywhere = {sha(d) for p in range(n) for d in files_of(self.store(p)).values()}
        for p in range(n):
            everywhere |= c.archive(p)
        lost = {
            self.m.contents.get(h, h): sorted(NAMES[p] for p in holders)
            for h, holders in self.m.held_by.items()
            if h not in everywhere and not holders <= self.m.user_removed.get(h, set())
        }
        assert not lost, (f"content lost (content: peers whose store held it): {lost}; stores: {summary}")

        if subprocess_check:  # the same, through `python -m peersync` as a user runs it
            bundles = c.bundle_count()
            for peer in c.peers:
                peer.sync(check=0)
            assert c.bundle_count() == bundles, "a converged peer published again when run as a subprocess"
            for p in range(1, n):
                assert tree(self.store(p)) == trees[0]


class ConvergenceMachine(RuleBasedStateMachine):
    """Random user steps, syncs and deliveries on three peers; checks after every sync and at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.w = World()
        self.ok = True  # False once a step raised: teardown then only cleans up

    def _step(self, action: Callable[[], Any]) -> None:
        self.ok = False
        action()
        self.ok = True

    @rule(p=PEER, path=st.sampled_from(PATHS), content=CONTENT, skew=SKEW, in_place=st.booleans())
    def write(self, p: int, path: str, content: str, skew: int, in_place: bool) -> None:
        self._step(lambda: self.w.write(p, path, content, skew, in_place))

    @rule(pq=PAIR, path=st.sampled_from(PATHS), c1=CONTENT, c2=CONTENT, skew1=SKEW, skew2=SKEW,
          same_content=st.booleans(), same_mtime=st.booleans())
    def concurrent_edit(self, pq: tuple[int, int], path: str, c1: str, c2: str, skew1: int, skew2: int,
                        same_content: bool, same_mtime: bool) -> None:
        self._step(lambda: self.w.concurrent_edit(pq[0], pq[1], path, c1, c2, skew1, skew2,
                                                  same_content, same_mtime))

    @rule(p=PEER, k=st.integers(0, 7), skew=SKEW)
    def touch(self, p: int, k: int, skew: int) -> None:
        """A program saves a file again unchanged (or a backup tool restores it): new mtime, same bytes."""
        self._step(lambda: self.w.touch(p, k, skew))

    @rule(p=PEER, k=st.integers(0, 7))
    def delete(self, p: int, k: int) -> None:
        self._step(lambda: self.w.delete(p, k))

    @rule(p=PEER, k=st.integers(0, 7), dest=st.sampled_from(TARGETS))
    def rename(self, p: int, k: int, dest: str) -> None:
        self._step(lambda: self.w.rename(p, k, dest))

    @rule(p=PEER)
    def sync(self, p: int) -> None:
        self._step(lambda: self.w.sync(p))

    @rule(p=PEER, to=st.integers(1, len(NAMES) - 1))
    def sync_then_deliver(self, p: int, to: int) -> None:
        """A sync, then the cloud carries everything it wrote to one other peer (the common case)."""

        def act() -> None:
            self.w.sync(p)
            self.w.deliver(p, (p + to) % len(NAMES))

        self._step(act)

    @rule(pair=PAIR, mask=st.integers(0, 255))
    def deliver(self, pair: tuple[int, int], mask: int) -> None:
        """Some of the files one peer wrote reach another peer's relay (out of order, some left behind)."""
        self._step(lambda: self.w.deliver(pair[0], pair[1], mask))

    def teardown(self) -> None:
        try:
            if self.ok:
                self.w.settle_and_check()
        finally:
            self.w.close()


HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


def test_three_peers_converge_and_lose_nothing():
    """CI form: a fixed, derandomized set of short programs."""
    run_state_machine_as_test(ConvergenceMachine, settings=settings(
        max_examples=40, stateful_step_count=25, deadline=None, derandomize=True,
        suppress_health_check=HEALTH, print_blob=True))


@pytest.mark.slow
def test_three_peers_converge_and_lose_nothing_long():
    """Long form (``-m slow``): hundreds of random programs, twice as long; PEERSYNC_LONG=N sets how many."""
    run_state_machine_as_test(ConvergenceMachine, settings=settings(
        max_examples=LONG_EXAMPLES, stateful_step_count=50,
        deadline=None, suppress_health_check=HEALTH, print_blob=True))


# -- plain regressions: minimal sequences the property found (replayed without hypothesis) ---------------


@pytest.fixture
def world(tmp_path: Path):
    w = World(tmp_path / "world")
    yield w
    w.close()


def test_concurrent_edit_then_winner_deleted_converges(world):
    """Found by the property (shrunk). Alice and bob edit a.txt concurrently; alice's edit is newer,
    so it wins. Alice syncs, then deletes a.txt and syncs again. Bob syncs once: he publishes his
    edit, applies alice's edit (his own kept as a conflict copy), then her deletion. Alice and carol
    then receive bob's edit, which is concurrent with alice's deletion: "modify beats delete", so
    a.txt comes back there with bob's content. Bob decided otherwise, and never says so: with the
    vectors merged (since 4494731) he keeps alice's edit, because her deletion is concurrent with
    his merged row; before that he applied the deletion. Either way nothing more is sent and the
    stores stay different (now: bob a.txt = "alice", alice and carol a.txt = "bob").
    """
    w = world
    w.write(1, "a.txt", "bob", skew=0)  # bob's edit...
    w.write(0, "a.txt", "alice", skew=1)  # ...and alice's, concurrent, with a newer mtime
    w.sync(0)  # alice publishes put a.txt "alice"
    w.delete(0, 0)  # alice deletes a.txt
    w.sync(0)  # alice publishes delete a.txt
    w.c.deliver_everything()
    w.sync(1)  # bob: publishes put a.txt "bob", then applies alice's put (conflict copy) and delete
    w.settle_and_check()


def test_touched_file_in_a_conflict_converges(world):
    """Found by the property (shrunk). Bob and alice edit a.txt concurrently; alice's mtime is older,
    so bob's edit should win everywhere. Alice syncs, then her a.txt is touched (same bytes, newer
    mtime: a program re-saved it, a backup tool restored it); that sends nothing. Bob syncs: alice's
    edit is older, his own stays. Alice syncs: bob's edit is compared with her *touched* mtime, which
    is now newer, so hers stays too. Carol takes bob's. Nobody sends anything more: alice keeps
    a.txt = "alice", bob and carol a.txt = "bob", for good, and no conflict is reported on alice.
    (Fixed by 4d87d9b: a touched row keeps its version's mtime.)
    """
    w = world
    w.write(1, "a.txt", "bob", skew=1)  # bob's edit, mtime T+1 s
    w.write(0, "a.txt", "alice", skew=0)  # alice's, concurrent, mtime T
    w.sync(0)  # alice publishes put a.txt "alice" (mtime T)
    w.touch(0, 0, skew=3)  # a.txt touched: same bytes, mtime T+3 s
    w.sync(0)  # nothing to send
    w.c.deliver_everything()
    w.sync(1)  # bob publishes put a.txt "bob" (mtime T+1 s); alice's older edit loses here
    w.settle_and_check()


def test_identical_concurrent_edits_then_a_third_converges(world):
    """Found by the property. Alice and bob make a.txt "x" concurrently (same bytes, alice's mtime T,
    bob's T+2 s); carol makes it "y" at T+1 s. Alice, on seeing bob's "x", adopts bob's version vector
    but keeps her own mtime T. Carol's "y" then beats "x" on alice (T+1 s > T) and loses to it on bob
    and carol (T+1 s < T+2 s), both copies are kept, and the stores stay different: alice a.txt = "y",
    bob and carol a.txt = "x".
    """
    w = world
    w.write(0, "a.txt", "x", skew=0)
    w.write(1, "a.txt", "x", skew=2)
    w.write(2, "a.txt", "y", skew=1)
    w.sync(0)
    w.sync(1)
    w.c.deliver_everything()
    w.sync(0)  # alice: bob's "x" is the same content, and newer: she adopts his vector, not his mtime
    w.sync(2)  # carol publishes "y", then takes bob's "x" (newest) and keeps "y" as a conflict copy
    w.settle_and_check()


def test_identical_concurrent_edit_keeps_own_version_known(world):
    """Found by the property (shrunk) before 4494731. Carol and bob make a.txt "x" concurrently (carol's mtime T+1 s,
    bob's T+3 s). Bob syncs; carol receives his "x" before her first sync: same content, bob's newer,
    so she takes bob's version vector *instead of* her own, which she has just published. Then bob
    writes "bob" and alice "alice" (both at about T, alice's a little newer). In the end alice and
    bob hold carol's "x" (newer than both edits), while carol, who no longer knows her own "x" is
    concurrent with bob's edit, takes bob's "bob" as a plain update and keeps it: alice and bob
    a.txt = "x", carol a.txt = "bob". (Fixed by 4494731, which merges the vectors on every side.)
    """
    w = world
    w.write(2, "a.txt", "x", skew=1)  # carol
    w.write(1, "a.txt", "x", skew=3)  # bob, same bytes, newer
    w.sync(1)
    w.deliver(1, 2)
    w.write(1, "a.txt", "bob", skew=0)
    w.write(0, "a.txt", "alice", skew=0)
    w.settle_and_check()


def test_version_its_author_replaced_does_not_come_back(world):
    """Found by the property (shrunk). Alice saves a.txt "cc" (mtime T+3 s) and syncs; carol saves
    a.txt "c" (T+2 s) concurrently; then alice saves a.txt empty with an *older* mtime T (a clock put
    right, a file copied in with its date). Carol sees alice's "cc" first: newer than her "c", so it
    wins there (hers kept as a copy) under the merged vector, with "cc"'s mtime T+3 s. Then alice's
    empty version arrives: it replaced "cc" on alice's side, but on carol it is merely concurrent
    with the merged row and older by mtime, so carol keeps "cc". Alice and bob compare carol's "c"
    with the empty version instead, and take "c". End: alice and bob a.txt = "c", carol a.txt = "cc"
    -- a version its own author had overwritten -- and nothing more is sent.
    """
    w = world
    w.write(0, "a.txt", "cc", skew=3)
    w.sync(0)  # alice publishes "cc" (T+3 s)
    w.write(2, "a.txt", "c", skew=2)  # carol, concurrently (T+2 s)
    w.write(0, "a.txt", "", skew=0)  # alice replaces "cc"; her save carries an older mtime (T)
    w.settle_and_check()


def test_a_version_whose_content_is_gone_here_is_asked_for(world):
    """Bob's edit of a.txt beats alice's concurrent, older one; bob keeps hers in his versions archive, and
    that archive is then wiped. Carol, who saw only bob's edit, deletes a.txt. On bob, carol's deletion
    supersedes his edit but not alice's, and "modify beats delete": alice's version must go on disk, and
    bob no longer has its content. He asks for it in his heartbeat; alice, who has it, sends it again."""
    w = world
    w.write(1, "a.txt", "bob", skew=3)
    w.sync(1)
    w.deliver(1, 2)
    w.sync(2)  # carol has bob's a.txt
    w.delete(2, 0)  # ...and deletes it
    w.write(0, "a.txt", "alice", skew=1)
    w.sync(0)  # alice publishes her edit
    w.deliver(0, 1)
    w.sync(1)  # bob: alice's edit is concurrent with his and older: his stays, hers goes to his archive
    shutil.rmtree(w.c.peers[1].home / "versions")
    w.sync(2)  # carol publishes her deletion
    w.deliver(2, 1)
    res = w.sync(1)  # bob: alice's version wins now, and its content is not here
    assert res.code == 1 and "not here yet" in res.out + res.err
    w.deliver(2, 0)
    w.sync(0)  # alice: carol's deletion is concurrent with her edit, which stays (no conflict copy)
    w.deliver(1, 0)
    w.sync(0)  # alice: bob's edit is superseded by carol's deletion; she answers bob's request
    w.deliver(0, 1)
    assert w.sync(1).code == 0
    assert w.store(1).joinpath("a.txt").read_bytes() == b"alice"
    w.settle_and_check()


def test_a_conflict_copy_two_peers_made_is_one_version(world):
    """Found by the long property (48 steps, shrunk to these). Carol's edit of b.txt beats alice's, and
    two peers hold alice's losing content: alice, and bob, who had applied her edit. Each makes the
    conflict copy, under the same name, as a version of its own. Alice had applied bob's copy first,
    then made hers over it with a fresh vector: bob's version was forgotten there. She renames the
    copy; her deletion supersedes only her own version, so bob and carol keep bob's copy ("modify beats
    delete") while alice never hears of it again, and the stores stay different. A conflict copy now
    supersedes what is known of its path, as any local change does."""
    w = world
    w.concurrent_edit(2, 0, "b.txt", "cbca", "", skew1=3, skew2=0)
    w.sync(2)
    w.deliver(2, 1)
    w.concurrent_edit(0, 2, "a.txt", "", "", skew1=0, skew2=3, same_content=True)
    for p, to in ((0, 1), (1, 0), (2, 0), (0, 2)):
        w.sync(p)
        w.deliver(p, to)
    w.rename(0, 1, "d/a.txt")  # the conflict copy b.sync-conflict-...-<alice>.txt
    w.settle_and_check()
