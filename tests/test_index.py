"""The index's schema over time: a state folder from an earlier release opens and works."""

from __future__ import annotations

import sqlite3

from peersync.index import Index


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
