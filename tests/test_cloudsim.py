"""The cloud simulator misbehaves as configured, deterministically, and still converges."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from cloudsim import Cloud, Event, conflict_copy_name, mirror_now, read_tree


def make_relays(tmp_path: Path, n: int) -> list[Path]:
    relays = [tmp_path / f"relay{i}" for i in range(n)]
    for r in relays:
        r.mkdir(parents=True)
    return relays


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def observe(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def watch(cloud: Cloud, path: Path, steps: int = 30) -> list[bytes | None]:
    """What ``path`` holds after each of ``steps`` steps."""
    seen = []
    for _ in range(steps):
        cloud.step()
        seen.append(observe(path))
    return seen


# -- mirror_now ---------------------------------------------------------------


def test_mirror_now_copies_new_changed_and_deleted(tmp_path: Path) -> None:
    src, dst = make_relays(tmp_path, 2)
    write(src / "a.txt", b"a")
    write(src / "d/b.txt", b"b")
    write(dst / "old.txt", b"gone")
    write(dst / "a.txt", b"stale")
    write(dst / "olddir/x", b"x")
    os.utime(src / "a.txt", ns=(1_000_000_000, 1_000_000_000))
    mirror_now(src, dst)
    assert read_tree(dst) == {"a.txt": b"a", "d/b.txt": b"b"}
    assert (dst / "a.txt").stat().st_mtime_ns == 1_000_000_000
    assert not (dst / "olddir").exists()
    (src / "d/b.txt").unlink()
    mirror_now(src, dst)
    assert read_tree(dst) == {"a.txt": b"a"}


# -- faithful basics ----------------------------------------------------------


def test_delay_counts_steps_and_nothing_echoes_to_the_source(tmp_path: Path) -> None:
    a, b = make_relays(tmp_path, 2)
    cloud = Cloud([a, b], delay=2)
    write(a / "peers/p1/bundles/1.psb", b"bundle one")
    inode = (a / "peers/p1/bundles/1.psb").stat().st_ino
    assert watch(cloud, b / "peers/p1/bundles/1.psb", 3) == [None, None, b"bundle one"]
    assert cloud.pending() == 0
    for _ in range(5):
        assert cloud.step() == 0
    assert (a / "peers/p1/bundles/1.psb").stat().st_ino == inode
    assert cloud.uploads == 1


def test_deletions_propagate_from_any_machine(tmp_path: Path) -> None:
    relays = make_relays(tmp_path, 3)
    cloud = Cloud(relays)
    write(relays[0] / "f", b"x")
    cloud.step()
    assert all((r / "f").exists() for r in relays)
    (relays[2] / "f").unlink()
    cloud.step()
    assert not any((r / "f").exists() for r in relays)


def test_offline_machine_is_not_read_as_empty(tmp_path: Path) -> None:
    """An unmounted relay folder must not turn into deletions everywhere (DESIGN invariant 5)."""
    a, b = make_relays(tmp_path, 2)
    cloud = Cloud([a, b])
    write(a / "f", b"x")
    cloud.step()
    b.rename(tmp_path / "unmounted")
    write(a / "g", b"y")
    cloud.step()
    assert read_tree(a) == {"f": b"x", "g": b"y"}
    assert cloud.pending() == 1
    (tmp_path / "unmounted").rename(b)
    cloud.step()
    assert read_tree(b) == {"f": b"x", "g": b"y"}
    cloud.set_online(1, False)
    write(a / "h", b"z")
    with pytest.raises(RuntimeError, match="offline relays \\[1\\]"):
        cloud.settle(max_steps=5)
    cloud.set_online(1, True)
    cloud.settle()
    assert (b / "h").read_bytes() == b"z"


# -- misbehaviour -------------------------------------------------------------


def test_truncate_delivers_a_prefix_then_completes(tmp_path: Path) -> None:
    """A client that downloads in place shows a partial file before the whole one."""
    a, b = make_relays(tmp_path, 2)
    cloud = Cloud([a, b], seed=1, truncate=1.0)
    content = bytes(range(256)) * 4
    write(a / "1.psb", content)
    seen = [s for s in watch(cloud, b / "1.psb", 8) if s is not None]
    partial = [s for s in seen if s != content]
    assert partial and all(0 < len(s) < len(content) and content.startswith(s) for s in partial)
    assert seen[-1] == content
    assert cloud.uploads == 1  # our own partial writes were never uploaded
    assert (a / "1.psb").read_bytes() == content


def test_placeholder_appears_empty_then_hydrates(tmp_path: Path) -> None:
    """Online-only files show up as zero-byte placeholders before their content."""
    a, b = make_relays(tmp_path, 2)
    cloud = Cloud([a, b], seed=2, placeholders=1.0)
    write(a / "heartbeat.json", b'{"t": 1}')
    seen = watch(cloud, b / "heartbeat.json", 8)
    assert seen[0] == b""
    assert seen[-1] == b'{"t": 1}'
    assert cloud.uploads == 1


def test_duplicate_rewrites_identical_bytes_without_echo(tmp_path: Path) -> None:
    a, b = make_relays(tmp_path, 2)
    cloud = Cloud([a, b], seed=3, duplicate=1.0)
    write(a / "f.psb", b"same")
    source_inode = (a / "f.psb").stat().st_ino
    cloud.step()
    first = (b / "f.psb").stat().st_ino
    inodes = set()
    for _ in range(6):
        cloud.step()
        inodes.add((b / "f.psb").stat().st_ino)
        assert (b / "f.psb").read_bytes() == b"same"
    assert inodes - {first}, "the same content was never delivered a second time"
    assert [e.kind for e in cloud.log if e.relay == 1] == ["write", "duplicate"]
    assert cloud.uploads == 1
    assert (a / "f.psb").stat().st_ino == source_inode


def test_vanish_removes_the_file_for_one_step_only(tmp_path: Path) -> None:
    a, b = make_relays(tmp_path, 2)
    cloud = Cloud([a, b], seed=4, vanish=1.0)
    write(a / "f", b"data")
    seen = watch(cloud, b / "f", 8)
    assert seen[0] == b"data"
    gone = [i for i, s in enumerate(seen) if s is None]
    assert len(gone) == 1 and seen[gone[0] + 1] == b"data"
    assert (a / "f").read_bytes() == b"data"  # the brief absence was not uploaded as a deletion
    assert cloud.uploads == 1


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("dropbox", "d/report (Bob's conflicted copy 2026-11-24).txt"),
        ("onedrive", "d/report-DESKTOP-1235.txt"),
        ("gdrive", "d/report (1).txt"),
        ("nextcloud", "d/report (conflicted copy 2026-11-24 101500).txt"),
    ],
)
def test_conflicted_copy_named_per_style(tmp_path: Path, style: str, expected: str) -> None:
    """Each service names its conflicted copies its own way (see shared/reference/cloud-clients.md);
    the copy stays on the receiving machine and is never uploaded."""
    a, b, c = make_relays(tmp_path, 3)
    cloud = Cloud([a, b, c], seed=5, conflict_copies=1.0, conflict_style=style)
    write(a / "d/report.txt", b"r")
    cloud.step()
    assert (b / expected).read_bytes() == b"r"
    assert cloud.artefacts(1) == {expected}
    assert cloud.conflict_name("d/report.txt", 1) == expected
    for _ in range(3):
        cloud.step()
    assert not (a / expected).exists()
    assert cloud.uploads == 1
    cloud.settle()
    assert (b / expected).exists()
    cloud.settle(clean=True)
    assert read_tree(b) == read_tree(a) == {"d/report.txt": b"r"}


def test_conflict_names_do_not_collide() -> None:
    assert conflict_copy_name("1.psb", "gdrive", user="A", computer="C", n=1) == "1 (2).psb"
    assert conflict_copy_name(".peersync", "onedrive", user="A", computer="PC") == ".peersync-PC"
    assert conflict_copy_name("x", "dropbox", user="Al", computer="C", n=2) == "x (Al's conflicted copy 2026-11-24) (2)"
    with pytest.raises(ValueError):
        conflict_copy_name("x", "icloud", user="A", computer="C")


def test_second_conflicted_copy_gets_a_free_name(tmp_path: Path) -> None:
    a, b = make_relays(tmp_path, 2)
    cloud = Cloud([a, b], conflict_copies=1.0, conflict_style="gdrive")
    write(a / "f.txt", b"1")
    cloud.step()
    write(a / "f.txt", b"2")
    cloud.step()
    assert cloud.artefacts(1) == {"f (1).txt", "f (2).txt"}
    assert (b / "f (2).txt").read_bytes() == b"2"


def test_reorder_lets_a_later_file_arrive_first(tmp_path: Path) -> None:
    def later_seen_first(seed: int) -> bool:
        root = tmp_path / f"s{seed}"
        a, b = make_relays(root, 2)
        cloud = Cloud([a, b], seed=seed, reorder=True)
        write(a / "1.psb", b"first")
        cloud.step()
        write(a / "2.psb", b"second")
        for _ in range(10):
            cloud.step()
            if (b / "2.psb").exists() and not (b / "1.psb").exists():
                return True
        return False

    assert any(later_seen_first(seed) for seed in range(20))


def test_without_reorder_order_is_kept(tmp_path: Path) -> None:
    a, b = make_relays(tmp_path, 2)
    cloud = Cloud([a, b], delay=1)
    for n in range(5):
        write(a / f"{n}.psb", b"x")
        cloud.step()
    cloud.settle()
    assert [e.path for e in cloud.log if e.relay == 1] == [f"{n}.psb" for n in range(5)]


def test_newer_version_wins_over_one_still_in_flight(tmp_path: Path) -> None:
    """A slow, reordered old version must never land over a newer one."""
    for seed in range(10):
        root = tmp_path / f"s{seed}"
        a, b, c = make_relays(root, 3)
        cloud = Cloud([a, b, c], seed=seed, delay=2, reorder=True, truncate=0.5, placeholders=0.5)
        write(a / "heartbeat.json", b"v1 from a")
        cloud.step()
        write(a / "heartbeat.json", b"v2 from a, longer")
        cloud.step()
        write(b / "heartbeat.json", b"v3 from b")  # b changes it while a's versions are in flight
        cloud.settle()
        for r in (a, b, c):
            assert (r / "heartbeat.json").read_bytes() == b"v3 from b", seed


def test_same_seed_same_run(tmp_path: Path) -> None:
    def run(root: Path) -> list[Event]:
        relays = make_relays(root, 3)
        cloud = Cloud(relays, seed=9, delay=1, reorder=True, truncate=0.5, duplicate=0.5, vanish=0.5,
                      conflict_copies=0.5, placeholders=0.5)
        for n in range(10):
            write(relays[n % 3] / f"f{n % 4}", bytes([n]) * (n + 1))
            for _ in range(3):
                cloud.step()
        cloud.settle()
        return cloud.log

    log = run(tmp_path / "one")
    assert log == run(tmp_path / "two")
    kinds = {e.kind for e in log}
    assert {"placeholder", "partial", "complete", "conflict", "duplicate", "vanish", "restore"} <= kinds


def test_rejects_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Cloud([tmp_path, tmp_path])
    with pytest.raises(ValueError):
        Cloud([tmp_path], truncate=1.5)
    with pytest.raises(ValueError):
        Cloud([tmp_path], conflict_style="box")


# -- convergence --------------------------------------------------------------


ALL_BAD = dict(delay=1, reorder=True, truncate=0.3, duplicate=0.3, vanish=0.3, conflict_copies=0.3, placeholders=0.3)


@pytest.mark.parametrize("seed", range(4))
def test_settle_converges_after_random_writes_on_every_machine(tmp_path: Path, seed: int) -> None:
    """Writes, overwrites and deletes on all three machines, on shared paths, with every misbehaviour
    on: settle() leaves three identical trees, each file holding some content written to it."""
    relays = make_relays(tmp_path, 3)
    cloud = Cloud(relays, seed=seed, **ALL_BAD)  # type: ignore[arg-type]
    rng = random.Random(seed + 100)
    written: dict[str, set[bytes]] = {}
    for n in range(40):
        relay = relays[rng.randrange(3)]
        rel = rng.choice(["a", "b", "d/c.psb", "d/e/f.json", "g"])
        if rng.random() < 0.25:
            (relay / rel).unlink(missing_ok=True)
        else:
            data = f"{n}:{rel}".encode() * rng.randint(1, 50)
            write(relay / rel, data)
            written.setdefault(rel, set()).add(data)
        if rng.random() < 0.7:
            cloud.step()
    cloud.settle()
    trees = [cloud.tree(i) for i in range(3)]
    assert trees[0] == trees[1] == trees[2]
    for rel, data in trees[0].items():
        assert data in written[rel]
    cloud.settle(clean=True)
    assert read_tree(relays[0]) == read_tree(relays[1]) == read_tree(relays[2]) == trees[0]


@pytest.mark.parametrize("seed", range(3))
def test_settle_keeps_each_writers_last_word(tmp_path: Path, seed: int) -> None:
    """With one writer per path (as peersync does), every path ends with its writer's last content."""
    relays = make_relays(tmp_path, 3)
    cloud = Cloud(relays, seed=seed, **ALL_BAD)  # type: ignore[arg-type]
    rng = random.Random(seed)
    expected: dict[str, bytes] = {}
    for n in range(60):
        i = rng.randrange(3)
        rel = f"peers/p{i}/{rng.choice(['heartbeat.json', 'bundles/1.psb', 'bundles/2.psb'])}"
        if rng.random() < 0.2:
            (relays[i] / rel).unlink(missing_ok=True)
            expected.pop(rel, None)
        else:
            data = f"{n}".encode() * rng.randint(1, 30)
            write(relays[i] / rel, data)
            expected[rel] = data
        for _ in range(rng.randint(0, 2)):
            cloud.step()
    cloud.settle(clean=True)
    for r in relays:
        assert read_tree(r) == expected
