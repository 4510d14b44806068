"""The conflict rule and conflict copy names (docs/bundle-format.md §12.3, §12.4).

Every peer decides a conflict on its own, so the rule must give the same
answer from both sides: for two different versions exactly one wins,
whichever of them is "local". Only the fields that travel in a bundle may
count (never an inode or a local queue number, which differ per machine).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peersync import paths
from peersync.conflict import conflict_name, is_conflict_copy, remote_wins, winner
from peersync.index import Entry

PEER_A = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
PEER_B = "BBCDEFGHIJKLMNOPQRSTUVWXYZ"
MTIME = 1_700_000_000 * 10**9  # 2023-11-14 22:13:20 UTC
STAMP = "20231114-221320"


def entry(by: str = PEER_A, mtime_ns: int = MTIME, digest: str = "a" * 64, deleted: bool = False,
          **kw: object) -> Entry:
    return Entry("f.txt", "file", deleted, digest, 10, mtime_ns, 0o644, 0, {by: 1}, by, 0, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- #
# Who wins                                                                    #
# --------------------------------------------------------------------------- #


def test_newer_mtime_wins() -> None:
    old, new = entry(PEER_A, MTIME), entry(PEER_B, MTIME + 1)
    assert remote_wins(old, new) is True
    assert remote_wins(new, old) is False


def test_equal_mtime_smaller_peer_id_wins() -> None:
    a, b = entry(PEER_A), entry(PEER_B)
    assert PEER_A < PEER_B
    assert remote_wins(b, a) is True
    assert remote_wins(a, b) is False


def test_equal_mtime_and_peer_smaller_hash_wins() -> None:
    small, big = entry(digest="0" * 64), entry(digest="f" * 64)
    assert remote_wins(big, small) is True
    assert remote_wins(small, big) is False


def test_modify_beats_delete() -> None:
    """Even an older modification beats a newer deletion: nothing is lost to a stale delete."""
    deleted = entry(PEER_A, MTIME + 10**12, deleted=True)
    modified = entry(PEER_B, MTIME)
    assert remote_wins(deleted, modified) is True
    assert remote_wins(modified, deleted) is False


def test_identical_versions_neither_wins() -> None:
    """The rule's precondition: two *different* versions. The same version twice is 'same result'."""
    a = entry()
    assert remote_wins(a, dataclasses.replace(a)) is False


versions = st.builds(
    entry,
    by=st.sampled_from([PEER_A, PEER_B, "C" * 26, "2" * 26]),
    mtime_ns=st.integers(min_value=0, max_value=2**63 - 1) | st.sampled_from([MTIME, MTIME + 1]),
    digest=st.sampled_from(["0" * 64, "a" * 64, "f" * 64]),
    deleted=st.booleans(),
)


def _key(e: Entry) -> tuple[bool, int, str, str]:
    return (e.deleted, e.mtime_ns, e.modified_by, e.hash)


@given(versions, versions)
def test_exactly_one_side_wins(a: Entry, b: Entry) -> None:
    if _key(a) == _key(b):
        assert not remote_wins(a, b) and not remote_wins(b, a)
    else:
        assert remote_wins(a, b) != remote_wins(b, a)


@given(versions, versions, st.integers(), st.integers(), st.integers(min_value=0), st.integers(min_value=0))
def test_only_fields_that_travel_count(a: Entry, b: Entry, inode: int, size: int, seq_a: int, seq_b: int) -> None:
    """Inodes and local queue numbers differ per machine: they must not change the outcome."""
    a2 = dataclasses.replace(a, inode=inode, local_seq=seq_a)
    b2 = dataclasses.replace(b, inode=inode + 1, local_seq=seq_b, size=size)
    assert remote_wins(a2, b2) == remote_wins(a, b)


def test_version_vector_breaks_the_last_tie() -> None:
    """Two versions alike in all else (the same bytes saved at the same instant by one peer, before and
    after a reset) still rank one way on every peer: the vector travels with the version."""
    a = entry()
    b = dataclasses.replace(a, vector={PEER_A: 1, PEER_B: 2})
    assert remote_wins(a, b) != remote_wins(b, a)


@given(st.lists(versions, min_size=1, max_size=6, unique_by=_key), st.randoms())
def test_winner_does_not_depend_on_order(vs: list[Entry], rnd: random.Random) -> None:
    """Peers that know the same versions put the same one on disk, whatever order they came in."""
    shuffled = list(vs)
    rnd.shuffle(shuffled)
    assert winner(shuffled) == winner(vs)


@given(versions, versions, versions)
def test_winner_order_is_transitive(a: Entry, b: Entry, c: Entry) -> None:
    """Three peers with three concurrent versions all converge on the same one."""
    if remote_wins(a, b) and remote_wins(b, c):
        assert remote_wins(a, c)


# --------------------------------------------------------------------------- #
# Conflict copy names                                                          #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/b/Quote.docx", f"a/b/Quote.sync-conflict-{STAMP}-ABCDEFG.docx"),
        (".profile", f".profile.sync-conflict-{STAMP}-ABCDEFG"),
        ("noext", f"noext.sync-conflict-{STAMP}-ABCDEFG"),
        ("archive.tar.gz", f"archive.tar.sync-conflict-{STAMP}-ABCDEFG.gz"),
        ("dir.d/noext", f"dir.d/noext.sync-conflict-{STAMP}-ABCDEFG"),
        ("Müller/Angebot ä.xlsx", f"Müller/Angebot ä.sync-conflict-{STAMP}-ABCDEFG.xlsx"),
    ],
)
def test_conflict_name_format(path: str, expected: str) -> None:
    name = conflict_name(path, MTIME, PEER_A)
    assert name == expected
    assert is_conflict_copy(name)
    assert paths.validate(name) == name


def test_conflict_name_counter() -> None:
    assert conflict_name("a/Quote.docx", MTIME, PEER_A, 2) == f"a/Quote.sync-conflict-{STAMP}-ABCDEFG-2.docx"
    assert conflict_name("noext", MTIME, PEER_A, 1) == f"noext.sync-conflict-{STAMP}-ABCDEFG-1"
    assert is_conflict_copy(conflict_name("a/Quote.docx", MTIME, PEER_A, 2))


def test_conflict_stamp_is_utc_seconds_of_the_losing_version() -> None:
    assert conflict_name("x", 0, PEER_A) == "x.sync-conflict-19700101-000000-ABCDEFG"
    assert conflict_name("x", 999_999_000, PEER_A) == "x.sync-conflict-19700101-000000-ABCDEFG"  # not rounded up
    assert conflict_name("x", 86_399 * 10**9, PEER_A) == "x.sync-conflict-19700101-235959-ABCDEFG"
    assert conflict_name("x", MTIME + 500_000_000, PEER_A) == f"x.sync-conflict-{STAMP}-ABCDEFG"


def test_conflict_stamp_truncates_the_last_microsecond() -> None:
    assert conflict_name("x", 999_999_999, PEER_A) == "x.sync-conflict-19700101-000000-ABCDEFG"
    assert conflict_name("x", MTIME + 999_999_900, PEER_A) == f"x.sync-conflict-{STAMP}-ABCDEFG"


def test_conflict_name_is_the_same_on_every_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name depends on the losing version only, not on the local time zone or clock."""
    import time

    before = conflict_name("a/Quote.docx", MTIME, PEER_A)
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    if hasattr(time, "tzset"):
        time.tzset()
    try:
        assert conflict_name("a/Quote.docx", MTIME, PEER_A) == before
    finally:
        monkeypatch.undo()
        if hasattr(time, "tzset"):
            time.tzset()


@pytest.mark.parametrize(
    "path",
    [
        "Quote.docx",
        "a.sync-conflict-20231114-221320-ABCDEFG/b.txt",  # only the last component counts
        "notes.sync-conflict.txt",
        "x.sync-conflict-2023111-221320-ABCDEFG.txt",  # 7-digit date
        "x.sync-conflict-20231114-221320-abcdefg.txt",  # lower-case peer
        "x.sync-conflict-20231114-221320-ABCDEF.txt",  # 6-character peer
        "x.sync-conflict-20231114-221320-ABCDEFGH.txt",  # 8-character peer
        "x.sync-conflict-20231114-221320-ABCDEF1.txt",  # 1 is not base32
    ],
)
def test_is_conflict_copy_rejects_lookalikes(path: str) -> None:
    assert not is_conflict_copy(path)


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='/\\:<>"|?*'),
    min_size=1, max_size=40,
).filter(paths.is_valid)


@given(st.lists(names, min_size=1, max_size=3).map("/".join).filter(paths.is_valid),
       st.integers(min_value=0, max_value=2**62), st.sampled_from([PEER_A, PEER_B]), st.integers(0, 5))
def test_conflict_copies_are_recognised_and_keep_their_folder(path: str, mtime: int, peer: str, n: int) -> None:
    name = conflict_name(path, mtime, peer, n)
    assert is_conflict_copy(name)
    assert name.rpartition("/")[0] == path.rpartition("/")[0]
    assert not is_conflict_copy(path) or "sync-conflict" in path


def test_conflict_name_of_a_long_name_is_still_a_valid_path() -> None:
    path = "folder/" + "q" * 240 + ".docx"
    assert paths.is_valid(path)
    assert paths.is_valid(conflict_name(path, MTIME, PEER_A))
