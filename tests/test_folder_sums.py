"""Folder digests: a full scan skips reading the rows of a folder whose listing is as it was.

A scan of 100,000 unchanged files used to read every row of the index to compare
each file's stat. Now each folder found exactly as its rows say keeps a digest
of its listing; a folder whose listing has that digest again is not compared
row by row. These tests pin that the shortcut never hides a change: on disk, in
the index (a row written by an apply, or one no folder holds), or in the ignore
rules.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from peersync.ignore import Ignore
from peersync.index import Entry, Index
from peersync.scan import Scanner, ScanResult

PEER = "A" * 26
SETTINGS = {"mass_delete_ratio": 0.5, "mass_delete_min": 10}


def make_store(root: Path) -> None:
    for folder in ("a", "a/deep", "b", "c"):
        (root / folder).mkdir(parents=True)
        for i in range(4):
            (root / folder / f"f{i}.txt").write_text(f"{folder} {i}")
    (root / "top.txt").write_text("top")
    (root / "Thumbs.db").write_text("ignored, never synced")


def scan(root: Path, index: Index, delete_delay: float = 0.0,
         missing: dict[str, float] | None = None) -> ScanResult:
    return Scanner(root, index, Ignore(root), PEER, SETTINGS, missing_since=missing, delete_delay=delete_delay).scan()


def live(index: Index) -> dict[str, tuple[str, str]]:
    return {e.path: (e.kind, e.hash) for e in index.entries(live_only=True)}


def rows_read(index: Index, root: Path) -> tuple[ScanResult, list[str]]:
    """Scan, and list the statements that read rows of ``files`` one by one."""
    statements: list[str] = []
    index.db.set_trace_callback(statements.append)
    try:
        result = scan(root, index)
    finally:
        index.db.set_trace_callback(None)
    return result, [s for s in statements if "FROM files" in s and "COUNT(" not in s]


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, Index]:
    root = tmp_path / "store"
    make_store(root)
    index = Index(tmp_path / "index.db")
    scan(root, index)  # finds every file
    scan(root, index)  # finds every folder as its rows say: digests recorded
    return root, index


def test_a_scan_that_finds_nothing_reads_no_row(store: tuple[Path, Index]) -> None:
    root, index = store
    assert set(index.folder_sums()) == {"", "a/", "a/deep/", "b/", "c/"}
    result, reads = rows_read(index, root)
    assert reads == []
    assert (result.files, result.changed, result.deleted) == (17, 0, 0)


def test_a_change_in_one_folder_reads_rows_and_keeps_the_other_digests(store: tuple[Path, Index]) -> None:
    root, index = store
    (root / "b" / "f1.txt").write_text("b 1 changed")
    result, reads = rows_read(index, root)
    assert reads and result.changed == 1
    assert set(index.folder_sums()) == {"", "a/", "a/deep/", "c/"}  # b's rows changed: its digest went with them
    scan(root, index)  # b is found as its rows say: its digest is recorded again
    assert "b/" in index.folder_sums()
    assert rows_read(index, root)[1] == []


def _rewrite_same_size(root: Path) -> None:
    path = root / "a" / "deep" / "f2.txt"
    st = path.stat()
    path.write_text("a/deep X")  # as long as before
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


MUTATIONS = {
    "a file rewritten in place, same size": _rewrite_same_size,
    "a file deleted": lambda root: (root / "c" / "f0.txt").unlink(),
    "a file added": lambda root: (root / "a" / "deep" / "new.txt").write_text("new"),
    "a folder deleted": lambda root: shutil.rmtree(root / "a" / "deep"),
    "a folder added": lambda root: (root / "c" / "sub").mkdir(),
    "a file made executable": lambda root: os.chmod(root / "b" / "f3.txt", 0o755),
    "an ignored file added": lambda root: (root / "b" / "~$Quote.docx").write_text("lock"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_scan_finds_what_a_full_comparison_finds(tmp_path: Path, store: tuple[Path, Index],
                                                     mutation: str) -> None:
    root, index = store
    MUTATIONS[mutation](root)
    scan(root, index)
    fresh = Index(tmp_path / "fresh.db")
    scan(root, fresh)  # a new index has no digest: every file is read and hashed
    assert live(index) == live(fresh)
    # And the digests recorded after the change hide nothing either.
    scan(root, index)
    assert live(index) == live(fresh)


def test_the_index_drops_a_folder_digest_when_a_row_in_it_changes(tmp_path: Path) -> None:
    """An apply writes rows with no scan in between: the folder's digest must go with them, in the
    same transaction, and only if that transaction commits."""
    index = Index(tmp_path / "index.db")
    folders = {"", "a/", "a/b/", "c/"}

    def keep_all() -> None:
        for folder in folders:
            index.set_folder_sum(folder, b"d" * 16, [])

    keep_all()
    index.put(Entry(path="a/b/new.txt", hash="h"))  # outside a transaction: at once
    assert set(index.folder_sums()) == folders - {"a/b/"}
    keep_all()
    with index.tx():
        index.put(Entry(path="top.txt", hash="h"))
        assert set(index.folder_sums()) == folders - {""}  # read in the same transaction
    assert set(index.folder_sums()) == folders - {""}
    keep_all()
    with index.tx():
        index.put(Entry(path="a/b/new.txt", hash="h2"))
    assert set(index.folder_sums()) == folders - {"a/b/"}
    keep_all()
    with pytest.raises(RuntimeError), index.tx():
        index.put(Entry(path="c/x.txt", hash="h"))
        raise RuntimeError("the transaction is rolled back: the row and the digest's drop with it")
    assert set(index.folder_sums()) == folders and index.get("c/x.txt") is None
    index.forget_stat("a")
    assert index.folder_sums() == {}


def test_a_file_an_apply_wrote_and_the_user_deleted_before_a_scan_is_deleted(store: tuple[Path, Index]) -> None:
    """The folder's listing is back to what its digest says, but its rows are not."""
    root, index = store
    (root / "b" / "remote.txt").write_text("from another peer")
    index.put(Entry(path="b/remote.txt", hash="h", size=17))  # as an apply records it
    (root / "b" / "remote.txt").unlink()
    result = scan(root, index)
    assert result.deleted == 1
    row = index.get("b/remote.txt")
    assert row is not None and row.deleted


def test_a_live_row_under_no_folder_on_disk_is_found_gone(store: tuple[Path, Index]) -> None:
    """Every folder's listing has its digest, yet the index holds a live row none of them lists:
    the scan counts the live rows against what it walked and compares row by row."""
    root, index = store
    sums = index.folder_sums()
    index.put(Entry(path="gone/orphan.txt", hash="h"))  # its folder has no row and is not on disk
    assert index.folder_sums() == sums
    result = scan(root, index)
    assert result.deleted == 1
    row = index.get("gone/orphan.txt")
    assert row is not None and row.deleted


def test_a_pattern_dropped_from_the_ignore_file_brings_back_a_file_in_an_unchanged_folder(tmp_path: Path) -> None:
    """The folder `a/` is the same before and after; only the rules that decide what it holds changed."""
    root = tmp_path / "store"
    (root / "a").mkdir(parents=True)
    (root / "a" / "keep.txt").write_text("k")
    (root / "a" / "app.log").write_text("log")
    (root / ".peersyncignore").write_text("*.log\n")
    index = Index(tmp_path / "index.db")
    scan(root, index)
    scan(root, index)
    assert "a/" in index.folder_sums() and index.get("a/app.log") is None
    (root / ".peersyncignore").write_text("")
    scan(root, index)
    row = index.get("a/app.log")
    assert row is not None and row.live


def test_a_held_mass_deletion_stays_held_while_the_folders_are_unchanged(store: tuple[Path, Index]) -> None:
    root, index = store
    for folder in ("a", "b", "c", "a/deep"):
        for i in range(4):
            (root / folder / f"f{i}.txt").unlink()
    for _ in range(3):
        result = scan(root, index)
        assert result.held_deletes == 16 and result.deleted == 0
    assert sum(1 for e in index.entries(live_only=True) if e.kind == "file") == 17


def _quote_store(tmp_path: Path) -> tuple[Path, Index]:
    root = tmp_path / "store"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "Quote.docx").write_text("v1")
    (root / "docs" / "other.txt").write_text("o")
    index = Index(tmp_path / "index.db")
    scan(root, index)
    scan(root, index)
    return root, index


def test_a_document_an_editor_moved_aside_is_not_deleted_on_later_scans(tmp_path: Path) -> None:
    """Word saves by renaming "Quote.docx" to "~WRL0001.tmp" (ignored) for a moment; a crash mid-save
    leaves it there. Every scan must find the original's inode under the ignored name, also once the
    folder's listing is as its digest says: the folder is not compared, but its ignored inodes count."""
    root, index = _quote_store(tmp_path)
    os.rename(root / "docs" / "Quote.docx", root / "docs" / "~WRL0001.tmp")
    for _ in range(3):
        result = scan(root, index)
        assert (result.moved_aside, result.deleted) == (1, 0)
    row = index.get("docs/Quote.docx")
    assert row is not None and row.live


def test_a_moved_aside_document_does_not_start_the_delete_delay(tmp_path: Path) -> None:
    """The service's path: a deletion waits ``delete_delay`` from the first scan that misses the file,
    and a rename-aside is no missing file at all."""
    root, index = _quote_store(tmp_path)
    missing: dict[str, float] = {}
    os.rename(root / "docs" / "Quote.docx", root / "docs" / "~WRL0001.tmp")
    for _ in range(3):
        assert scan(root, index, 60.0, missing).moved_aside == 1
        assert "docs/Quote.docx" not in missing


def test_an_ignored_hard_link_in_an_unchanged_folder_keeps_the_original(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "Quote.docx").write_text("v1")
    (root / "b" / "x.txt").write_text("x")
    os.link(root / "a" / "Quote.docx", root / "b" / "~WRL0001.tmp")
    index = Index(tmp_path / "index.db")
    scan(root, index)
    scan(root, index)
    assert "b/" in index.folder_sums()
    (root / "a" / "Quote.docx").unlink()
    result = scan(root, index)
    assert (result.moved_aside, result.deleted) == (1, 0)


def test_a_row_written_without_dropping_the_digest_is_compared_once_rows_are_read(tmp_path: Path) -> None:
    """A writer that knows nothing of digests (peersync before them, after a downgrade) marked the
    document deleted; the user put the file back (same inode and time). The listing has its old digest,
    but the live-row count differs, the rows are read, and each entry of the folder is compared."""
    root, index = _quote_store(tmp_path)
    quote = root / "docs" / "Quote.docx"
    os.rename(quote, tmp_path / "trash")
    index.db.execute("UPDATE files SET deleted=1 WHERE path='docs/Quote.docx'")  # as that writer's scan did
    os.rename(tmp_path / "trash", quote)
    result = scan(root, index)
    assert result.changed == 1
    row = index.get("docs/Quote.docx")
    assert row is not None and row.live


def test_a_deleted_folder_takes_its_digest_along(store: tuple[Path, Index]) -> None:
    root, index = store
    (root / "c" / "empty").mkdir()
    scan(root, index)
    scan(root, index)
    assert "c/empty/" in index.folder_sums()
    (root / "c" / "empty").rmdir()
    scan(root, index)
    assert "c/empty/" not in index.folder_sums()


def test_an_entry_that_cannot_be_read_is_reported_not_deleted(tmp_path: Path, monkeypatch) -> None:
    """A folder readable but not searchable lists its names, and a stat of each fails with EACCES. That
    is no deletion: the file's row stays live and the scan reports the path every time. (Faked at the
    stat call, as root reads everything; the scan stats by path where it has no folder descriptor.)"""
    root, index = _quote_store(tmp_path)
    monkeypatch.setattr(os, "supports_fd", set())
    real_lstat = os.lstat
    quote = os.fspath(root / "docs" / "Quote.docx")

    def lstat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(path) == quote:
            raise PermissionError(13, "Permission denied", quote)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    for _ in range(2):
        result = scan(root, index)
        assert result.deleted == 0 and result.held_deletes == 0
        assert [p for p, _m, _h in result.problems] == ["docs/Quote.docx"]
    row = index.get("docs/Quote.docx")
    assert row is not None and row.live
