"""The no-op scan's shortcuts keep every rule: ignore patterns, path validity, NFC, links, temp files.

A scan of 100,000 unchanged files spends its time per entry, so it matches
ignore rules with one combined regex and validates each distinct name once.
These tests pin that the shortcuts decide exactly as the full rules do.
"""

from __future__ import annotations

import os
import random
import unicodedata
from pathlib import Path

import pathspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peersync import paths
from peersync.ignore import BUILTIN, EXCEL_TEMP, Ignore, any_match_regex
from peersync.index import Index
from peersync.scan import Scanner

PEER = "A" * 26
SETTINGS = {"mass_delete_ratio": 0.5, "mass_delete_min": 10}

USER_PATTERNS = [
    "*.log", "!important.log", "build/", "/a/b", "docs/**/*.pdf", "foo?bar", "[abc]x", "# a comment", "",
    "\\#hash", "/root-only/", "*.bak/", "**/cache", "x/**", "!x/keep", "sp ace", "trail\\ ", "dir/*.o",
]
NAMES = [
    "a", "b", "x", "build", "keep", "keep.tmp", "x.tmp", "~$q.docx", "~WRL0001.tmp", "ppt12.tmp", "ABCDEF01.tmp",
    "ABCDEF01", "abcdef01", "20240115", "lu1.tmp", ".~lock.x#", ".DS_Store", "Thumbs.db", "desktop.ini",
    "$RECYCLE.BIN", ".dropbox", ".dropbox.cache", "x.log", "important.log", "docs", "p.pdf", "fooxbar", "ax", "dx",
    "#hash", "root-only", "q.bak", ".peersync", ".peersync-tmp-1", "extra1", "cache", "sp ace", "trail ", "dir",
    "m.o", "file00001.bin", "Ünï", "new\nline", "ABCDEF01\n",
]


def full_rules(ig: Ignore, rel: str, is_dir: bool) -> bool:
    """What Ignore.ignored decided before the shortcut: pathspec on every path."""
    if not is_dir and EXCEL_TEMP.match(rel.rpartition("/")[2]):
        return True
    key = rel + "/" if is_dir else rel
    return bool(ig._builtin.match_file(key) or ig._user.match_file(key))


def test_one_regex_shortcut_decides_like_pathspec(tmp_path: Path) -> None:
    """Built-in and user patterns, negations, folder patterns, anchored and '**' patterns, odd names."""
    (tmp_path / ".peersyncignore").write_text("\n".join(USER_PATTERNS))
    ig = Ignore(tmp_path, ["extra*", "!extra2"])
    assert ig._any is not None  # the shortcut is in use with this pathspec
    rng = random.Random(6)
    for _ in range(40_000):
        rel = "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 4)))
        for is_dir in (False, True):
            assert ig.ignored(rel, is_dir) == full_rules(ig, rel, is_dir), (rel, is_dir)


def test_without_user_patterns_only_the_builtin_names_are_ignored(tmp_path: Path) -> None:
    ig = Ignore(tmp_path)
    for name in NAMES:
        for rel in (name, f"dir000/{name}", f"a/b/{name}"):
            for is_dir in (False, True):
                assert ig.ignored(rel, is_dir) == full_rules(ig, rel, is_dir), (rel, is_dir)


def test_shortcut_is_dropped_for_patterns_it_cannot_merge() -> None:
    class Odd(pathspec.Pattern):
        def match_file(self, file: str) -> None:
            return None

    spec = pathspec.PathSpec([Odd(True)])
    assert any_match_regex([spec]) is None
    assert any_match_regex([pathspec.GitIgnoreSpec.from_lines(BUILTIN)]) is not None


def test_a_changed_ignore_file_counts_in_the_next_scan(tmp_path: Path) -> None:
    """Nothing about ignore rules is kept across scans: a new pattern hides a file at once, and
    dropping it brings the file back."""
    root = tmp_path / "store"
    root.mkdir()
    (root / "keep.txt").write_text("k")
    (root / "app.log").write_text("1")
    index = Index(tmp_path / "index.db")

    def scan() -> None:
        Scanner(root, index, Ignore(root), PEER, SETTINGS).scan()

    scan()
    assert index.get("app.log") is not None
    (root / ".peersyncignore").write_text("*.log\n")
    (root / "new.log").write_text("2")
    scan()
    assert index.get("new.log") is None
    (root / ".peersyncignore").write_text("")
    scan()
    new = index.get("new.log")
    assert new is not None and new.live


@given(
    st.lists(st.sampled_from(["a", "CON", "con.txt", "x.", "x ", "é", "e\u0301", ":", "*", "\x01", "..", ".", "ß",
                              "COM¹", "~1", "b" * 200, "\u0338", "/", "\\", "nul .x"]), min_size=1, max_size=4),
    st.integers(min_value=0, max_value=6),
)
@settings(max_examples=400, deadline=None)
def test_a_path_is_valid_when_its_folder_and_its_name_are(pieces: list[str], depth: int) -> None:
    """The scan checks each distinct name once and the path's length: the same verdict as validate()."""
    name = unicodedata.normalize("NFC", "".join(pieces))
    if "/" in name or not name:
        return  # not a name a folder listing can hold
    folder = "/".join(f"dir{i}" * 40 for i in range(depth))
    rel = f"{folder}/{name}" if folder else name
    assert paths.is_valid(folder) or not folder
    assert paths.is_valid(rel) == (paths.is_valid(name) and len(rel) <= paths.MAX_PATH_CHARS)


def test_scan_reports_an_invalid_name_in_every_folder_and_a_too_long_path(tmp_path: Path) -> None:
    root = tmp_path / "store"
    deep = root / "/".join(["d" * 200] * 5)
    deep.mkdir(parents=True)
    for folder in (root / "one", root / "two"):
        folder.mkdir()
        (folder / "CON.txt").write_text("x")
        (folder / "ok.txt").write_text("x")
    (deep / ("n" * 100)).write_text("x")  # each name is fine, the path is over 1024 characters
    (deep / "short").write_text("x")
    index = Index(tmp_path / "index.db")
    result = Scanner(root, index, Ignore(root), PEER, SETTINGS).scan()
    bad = sorted(p for p, _m, _h in result.problems)
    assert bad == sorted(["one/CON.txt", "two/CON.txt", str(Path(*deep.relative_to(root).parts, "n" * 100).as_posix())])
    assert index.get("one/ok.txt") is not None and index.get("two/ok.txt") is not None
    assert index.get(deep.relative_to(root).as_posix() + "/short") is not None


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need privileges on Windows")
def test_scan_skips_links_and_removes_stale_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "f.txt").write_text("x")
    os.symlink(root / "f.txt", root / "link.txt")
    os.symlink(tmp_path, root / "outside")
    (root / ".peersync-tmp-abc-f.txt").write_text("crash leftover")
    (root / "e\u0301.txt").write_text("nfd")
    index = Index(tmp_path / "index.db")
    Scanner(root, index, Ignore(root), PEER, SETTINGS).scan()
    assert index.get("link.txt") is None and index.get("outside") is None
    assert not (root / ".peersync-tmp-abc-f.txt").exists()
    assert index.get("\u00e9.txt") is not None and (root / "\u00e9.txt").exists()  # renamed to NFC


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="needs O_NOFOLLOW")
def test_a_folder_swapped_for_a_link_while_scanning_is_not_listed(tmp_path: Path, monkeypatch) -> None:
    """Between the stat that saw a folder and its listing, the folder is replaced by a link to a
    folder outside the store: the scan must not list (and later publish) what is behind the link."""
    root = tmp_path / "store"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "mine.txt").write_text("mine")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not the store's")
    target = os.fspath(root / "sub")
    swapped = []

    def swap(path: object) -> None:
        if not swapped and os.fspath(path) == target:  # type: ignore[arg-type]
            os.rename(target, tmp_path / "moved-away")
            os.symlink(outside, target)
            swapped.append(True)

    real_open, real_scandir = os.open, os.scandir

    def opening(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        swap(path)
        return real_open(path, flags, *args, **kwargs)

    def listing(path=".") -> object:  # type: ignore[no-untyped-def]
        if not isinstance(path, int):
            swap(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "open", opening)
    monkeypatch.setattr(os, "scandir", listing)
    monkeypatch.setattr(os, "supports_fd", os.supports_fd | {listing})  # listing by folder fd stays possible
    index = Index(tmp_path / "index.db")
    result = Scanner(root, index, Ignore(root), PEER, SETTINGS).scan()
    monkeypatch.undo()
    assert swapped
    assert index.get("sub/secret.txt") is None
    assert [p for p, _m, _h in result.problems] == ["sub/"]


@pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX links")
def test_a_file_swapped_for_a_link_before_it_is_read_is_not_published(tmp_path: Path, monkeypatch) -> None:
    """Between the walk's stat of a small file and its read, the file is replaced by a link to a file
    outside the store with the same size and mtime: the scan must not record (and later publish)
    what is behind the link; it looks again on the next scan."""
    root = tmp_path / "store"
    root.mkdir()
    mine = root / "mine.txt"
    mine.write_text("mine")
    outside = tmp_path / "secret.txt"
    outside.write_text("nope")  # same size as "mine"
    st = mine.stat()
    os.utime(outside, ns=(st.st_atime_ns, st.st_mtime_ns))
    target = os.fspath(mine)
    swapped = []
    real_open = os.open

    def opening(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not swapped and os.fspath(path) == target:
            os.rename(target, tmp_path / "moved-away")
            os.symlink(outside, target)
            swapped.append(True)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", opening)
    index = Index(tmp_path / "index.db")
    scanner = Scanner(root, index, Ignore(root), PEER, SETTINGS)
    result = scanner.scan()
    monkeypatch.undo()
    assert swapped
    assert result.unstable == ["mine.txt"]
    assert index.get("mine.txt") is None and not scanner.kept
