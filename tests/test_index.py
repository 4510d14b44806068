"""The index: its schema over time (a state folder from an earlier release opens and works), and its clock."""

from __future__ import annotations

import sqlite3

import pytest

from peersync.index import Entry, Index


def test_an_index_from_before_seen_cycle_gets_the_column(tmp_path):
    """The first release's ``pending`` table had no ``seen_cycle``; opening it adds the column, keeping rows."""
    path = tmp_path / "index.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE pending(path TEXT PRIMARY KEY, meta TEXT NOT NULL, staged TEXT NOT NULL DEFAULT '', "
               "reason TEXT NOT NULL DEFAULT '', first_seen REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)")
    db.execute("INSERT INTO pending VALUES('a.txt', '{\"op\": \"delete\"}', '', 'locked', 1.0, 2)")
    db.commit()
    db.close()
    index = Index(path)
    try:
        assert [p[0] for p in index.pending()] == ["a.txt"]
        with index.tx():
            index.set_meta("cycle", 7)
            index.add_pending("a.txt", {"op": "delete"}, "", "locked")
            index.add_pending("a.txt", {"op": "delete"}, "", "locked")  # same cycle: not another attempt
        assert index.pending()[0][5] == 3
        with index.tx():
            index.add_pending("a.txt", {"op": "delete"}, "", "the disk is full")  # another reason: count anew
        assert index.pending()[0][5] == 1
    finally:
        index.close()


def test_the_clock_is_kept_by_commits_only_and_read_afresh_by_each_transaction(tmp_path):
    """``next_clock`` moves the counter in memory for the open transaction and writes it at the commit:
    numbers handed out in a transaction that rolls back are not kept, one that commits keeps them all,
    and a later transaction sees what another connection (another process) did meanwhile."""
    path = tmp_path / "index.db"
    index, other = Index(path), Index(path)
    try:
        assert index.next_clock() == 1  # outside a transaction: its own
        with index.tx():
            assert [index.next_clock() for _ in range(3)] == [2, 3, 4]
            assert index.meta_int("clock") == 1  # not written until the commit
        assert index.meta_int("clock") == 4 == other.meta_int("clock")
        with pytest.raises(RuntimeError), index.tx():
            assert index.next_clock() == 5
            raise RuntimeError
        assert other.meta_int("clock") == 4
        assert other.next_clock() == 5
        with index.tx():
            assert index.next_clock() == 6  # not a number held over from before
    finally:
        index.close()
        other.close()


def _row(path: str) -> Entry:
    return Entry(path, "file", False, "0" * 64, 1, 1, 0o644, 1, {"A" * 26: 1}, "A" * 26, 0)


def test_paths_known_absent_are_answered_without_a_row_and_forgotten_once_written(tmp_path):
    """``knowing_absent`` spares the queries of paths no row has, and only those: a row written in
    the block (or one that was there before it, or one differing only in case) is found again."""
    index = Index(tmp_path / "index.db")
    try:
        index.put(_row("old.txt"))
        with index.knowing_absent(["new.txt", "old.txt", "Clash.txt"]):
            assert index.get("new.txt") is None and index.case_clash("new.txt") is None
            assert index.get("old.txt") is not None  # has a row: asked for
            assert index.case_clash("OLD.TXT") == "old.txt"
            with index.tx():
                index.put_many([_row("new.txt"), _row("clash.txt")])
            assert index.get("new.txt") == _row("new.txt")
            assert index.case_clash("Clash.txt") == "clash.txt"
        assert index.get("new.txt") is not None
    finally:
        index.close()


def test_a_row_whose_stored_case_key_differs_from_todays_is_still_found(tmp_path):
    """A row's case key was folded by the Python that wrote it; a newer Unicode may fold the same
    path otherwise. ``get`` within ``knowing_absent`` must still find the row by its path."""
    index = Index(tmp_path / "index.db")
    try:
        index.put(_row("Straße.txt"))
        with index.tx():
            index.db.execute("UPDATE files SET ckey='folded otherwise' WHERE path='Straße.txt'")
        with index.knowing_absent(["Straße.txt"]):
            assert index.get("Straße.txt") == _row("Straße.txt")
    finally:
        index.close()
