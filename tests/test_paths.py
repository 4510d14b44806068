"""Tests for peersync.paths: every path in a bundle is hostile until validated (DESIGN.md invariant 4)."""

from __future__ import annotations

import os
import stat
import sys
import unicodedata
from pathlib import Path, PurePosixPath, PureWindowsPath
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peersync import paths
from peersync.errors import PathError, PeersyncError
from peersync.paths import (
    MAX_NAME_CHARS,
    MAX_PATH_CHARS,
    case_key,
    inside_without_links,
    is_valid,
    join,
    join_str,
    to_relative,
    validate,
)

# --------------------------------------------------------------------------- #
# Hostile paths                                                                #
# --------------------------------------------------------------------------- #

_TOO_LONG_PATH = "/".join(["d" * 200] * 5) + "/" + "f" * 20
assert len(_TOO_LONG_PATH) == MAX_PATH_CHARS + 1

HOSTILE: list[tuple[object, str, str]] = [
    # (path, a word of the reason it must be refused for, the attack or oddity it pins)
    # Escaping the store (zip-slip / tar-slip, CVE-2018-1002200 and friends).
    ("../x", "'..'", "classic traversal out of the store"),
    ("a/../../b", "'..'", "traversal hidden after a harmless component"),
    ("a/..", "'..'", "'..' as the last component names the parent"),
    ("..", "'..'", "the parent folder itself"),
    ("/etc/passwd", "absolute", "absolute POSIX path"),
    ("\\Windows\\win.ini", "absolute", "absolute path on the current Windows drive"),
    ("C:\\x", "drive letter", "absolute Windows path with drive letter"),
    ("C:x", "drive letter", "drive-relative: C:x means 'x in the cwd of drive C' on Windows"),
    ("c:foo", "drive letter", "lower-case drive-relative path"),
    ("C:", "drive letter", "bare drive letter"),
    ("\\\\server\\share", "UNC", "UNC path: would write to another machine"),
    ("//server/share", "UNC", "UNC path with forward slashes, which Win32 accepts"),
    ("\\\\?\\C:\\x", "UNC", "Win32 long-path prefix bypasses all normalisation"),
    ("\\\\.\\PhysicalDrive0", "UNC", "Win32 device namespace: raw disk"),
    ("a\\b", "backslash", "backslash is a separator on Windows only: one name on Linux, two on Windows"),
    ("a\\..\\..\\b", "backslash", "traversal that only works on Windows"),
    # Windows device names: opening them talks to a device, not a file.
    ("CON", "reserved", "console device"),
    ("con.txt", "reserved", "reserved name with an extension is still the device"),
    ("Nul", "reserved", "reserved names are case-insensitive"),
    ("aux.tar.gz", "reserved", "Win32 looks only at the part before the first dot"),
    ("COM1", "reserved", "serial port"),
    ("LPT9.log", "reserved", "printer port with extension"),
    ("a/PRN/b", "reserved", "reserved name as a folder in the middle of the path"),
    ("COM\u00b9", "reserved", "COM¹: Win32 treats superscript digits as digits"),
    ("lpt\u00b2.txt", "reserved", "LPT² with extension"),
    ("CONIN$", "reserved", "console input buffer"),
    ("conout$.txt", "reserved", "console output buffer with extension"),
    ("CON .txt", "reserved", "Win32 drops trailing spaces before the dot: still CON"),
    ("COM0", "reserved", "COM0 is listed as reserved in current Windows docs"),
    # NTFS alternate data streams and other ':' tricks.
    ("file.txt:stream", "stream", "NTFS alternate data stream hides data in a file"),
    ("file.txt::$DATA", "stream", "explicit default stream: a classic IIS source-disclosure trick"),
    ("dir:$I30:$INDEX_ALLOCATION", "stream", "folder index stream: creates a folder, bypasses name checks"),
    # Control characters and Windows-invalid characters.
    ("a\x00b", "control", "NUL byte truncates the path in C APIs"),
    ("a\nb", "control", "newline breaks logs and line-based tools"),
    ("\x7f", "control", "DEL control character"),
    ("a\x1bb", "control", "ESC: terminal escape injection when the path is printed"),
    ("a\tb", "control", "tab"),
    ("a?b", "invalid on Windows", "'?' is a wildcard, invalid on Windows"),
    ("a*b", "invalid on Windows", "'*' is a wildcard, invalid on Windows"),
    ("a<b", "invalid on Windows", "'<' invalid on Windows"),
    ("a>b", "invalid on Windows", "'>' invalid on Windows"),
    ('a"b', "invalid on Windows", "'\"' invalid on Windows"),
    ("a|b", "invalid on Windows", "'|' invalid on Windows"),
    # Names Windows silently changes, so two bundle paths land on one file.
    ("name.", "ends in", "Windows strips the trailing dot: collides with 'name'"),
    ("name ", "ends in", "Windows strips the trailing space: collides with 'name'"),
    ("dir./file", "ends in", "trailing dot on a folder"),
    ("...", "ends in", "dots only: Windows strips it to nothing"),
    (" ", "ends in", "a single space"),
    # Malformed structure.
    ("", "empty path", "empty path"),
    ("a/./b", "'.' component", "'.' component: two spellings of one path"),
    ("./a", "'.' component", "leading '.' component"),
    ("a//b", "empty component", "empty component"),
    ("a/", "empty component", "trailing slash: empty last component"),
    ("/", "absolute", "root alone"),
    # Length.
    ("x" * 5000, "longer than 1024", "5000-character name"),
    ("y" * 300, "component longer", "300-character component exceeds every filesystem's name limit"),
    ("\u00e9" * 128, "component longer", "128 characters but 256 UTF-8 bytes: too long for ext4"),
    (_TOO_LONG_PATH, "longer than 1024", "1025 characters, every component short: over the whole-path limit"),
    # Not text.
    ("a\ud800b", "surrogate", "lone surrogate: cannot be encoded to UTF-8, e.g. from os.fsdecode"),
    ("\udcff", "surrogate", "surrogateescape byte smuggled from a non-UTF-8 file name"),
    (b"a", "not a string", "bytes, not str"),
    (None, "not a string", "not a string at all"),
    (42, "not a string", "not a string at all"),
]


@pytest.mark.parametrize(("path", "reason", "why"), HOSTILE, ids=[repr(p)[:40] for p, _, _ in HOSTILE])
def test_hostile_paths_are_refused(path: object, reason: str, why: str) -> None:
    with pytest.raises(PathError) as info:
        validate(path)  # type: ignore[arg-type]
    assert reason in info.value.reason, f"refused for the wrong reason; this case pins: {why}"
    assert not is_valid(path)  # type: ignore[arg-type]


def test_there_are_at_least_forty_hostile_cases() -> None:
    assert len(HOSTILE) >= 40


# --------------------------------------------------------------------------- #
# Good paths                                                                   #
# --------------------------------------------------------------------------- #

GOOD = [
    "a",
    "dir/sub/file.txt",
    "Devis été/Ünïcode.docx",
    "Quote 2024 final (v2).docx",
    " leading space.txt",  # Windows keeps leading spaces; only trailing ones are stripped
    ".hidden",
    ".config/app/settings.json",
    "...x",  # allowed: only a trailing dot is stripped by Windows, leading dots are kept
    "a.b.c",
    "CONTRACT.txt",  # starts with CON but is not CON
    "console.log",
    "CONFIG",
    "NULL",
    "auxiliary/prn-report.pdf",
    "COM10",  # only COM0-COM9 are devices
    "LPT",
    "com1x.txt",
    "~$Quote.docx",  # Office lock file: legal name ('$' and '~' are fine)
    "日本語/ファイル.txt",
    "emoji 🎉.png",
    "semi;colon,comma=equals+plus[brackets]{braces}#hash%percent&amp@at!bang'quote`tick",
    "x" * MAX_NAME_CHARS,
    "\u00e9" * 127 + "a",  # exactly 255 UTF-8 bytes
    "/".join(["d" * 200] * 5) + "/" + "f" * 19,  # exactly 1024 characters
]


@pytest.mark.parametrize("path", GOOD)
def test_good_paths_are_accepted_unchanged(path: str) -> None:
    assert validate(path) == path
    assert is_valid(path)


def test_length_limits_are_exact() -> None:
    assert len(GOOD[-1]) == MAX_PATH_CHARS
    assert not is_valid(GOOD[-1] + "f")
    assert not is_valid("x" * (MAX_NAME_CHARS + 1))
    assert len(("\u00e9" * 127 + "a").encode()) == MAX_NAME_CHARS
    assert not is_valid("\u00e9" * 127 + "ab")


def test_path_error_carries_path_and_reason() -> None:
    with pytest.raises(PathError) as info:
        validate("a/../../etc/passwd")
    error = info.value
    assert isinstance(error, PeersyncError)
    assert error.path == "a/../../etc/passwd"
    assert error.reason == "'..' component"
    assert "unsafe path" in error.sentence()


# --------------------------------------------------------------------------- #
# NFC and idempotence                                                          #
# --------------------------------------------------------------------------- #


def test_nfd_input_is_returned_as_nfc() -> None:
    """macOS (HFS+) hands out NFD names; the index and bundles use NFC so both spellings are one path."""
    nfd = unicodedata.normalize("NFD", "Devis été/Ünïcode.docx")
    assert nfd != "Devis été/Ünïcode.docx"
    out = validate(nfd)
    assert out == "Devis été/Ünïcode.docx"
    assert unicodedata.is_normalized("NFC", out)


def test_checks_apply_to_the_nfc_form() -> None:
    """Lengths are counted after NFC, so a macOS NFD name is judged by what is actually stored."""
    nfd_name = "e\u0301" * 100  # 300 UTF-8 bytes as NFD, 200 as NFC: fits
    assert len(nfd_name.encode()) > MAX_NAME_CHARS
    assert validate(nfd_name) == "\u00e9" * 100
    nfd_path = "/".join(["e\u0301" * 120] * 5)  # 1204 characters before NFC, 604 after
    assert len(nfd_path) > MAX_PATH_CHARS
    assert validate(nfd_path) == "/".join(["\u00e9" * 120] * 5)


def test_canonical_singletons_are_mapped_before_checking() -> None:
    """U+212A KELVIN SIGN and U+037E GREEK QUESTION MARK are canonically K and ';'."""
    assert validate("\u212aelvin") == "Kelvin"
    assert validate("a\u037eb") == "a;b"


def test_validate_is_idempotent_on_good_paths() -> None:
    for path in GOOD:
        once = validate(path)
        assert validate(once) == once


_FRAGMENTS = [
    "/", "\\", ".", "..", ":", " ", "a", "B", "CON", "nul", "com", "\u00b9", "$",
    ".txt", "e\u0301", "\u00e9", "\u212a", "\u037e", "\x00", "\x7f", "?", "ß", "SS",
    "\ud800", "//", "C:", "\u0301",
]

_path_like = st.lists(
    st.one_of(
        st.sampled_from(_FRAGMENTS),
        st.text(alphabet=st.characters(exclude_categories=()), max_size=8),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_path_like)
def test_validate_either_refuses_or_returns_a_fixed_point(path: str) -> None:
    """For any text: PathError, or an NFC result that validates to itself and joins inside the root."""
    try:
        out = validate(path)
    except PathError:
        assert not is_valid(path)
        return
    assert is_valid(out)
    assert validate(out) == out
    assert unicodedata.is_normalized("NFC", out)
    assert out == unicodedata.normalize("NFC", path)
    root = Path("/store/root")
    target = join(root, out)
    assert target.parts[: len(root.parts)] == root.parts
    assert len(target.parts) == len(root.parts) + out.count("/") + 1
    assert Path(join_str(str(root), path)) == target  # the string form names the same file


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=40))
def test_validate_never_raises_anything_but_path_error(path: str) -> None:
    try:
        validate(path)
    except PathError:
        pass


# --------------------------------------------------------------------------- #
# case_key                                                                     #
# --------------------------------------------------------------------------- #


def test_case_key_collides_on_case() -> None:
    """Windows and macOS see Quote.DOCX and quote.docx as one file: a conflict, not an overwrite."""
    assert case_key("Quote.DOCX") == case_key("quote.docx")
    assert case_key("Dir/Sub/A.txt") == case_key("dir/sub/a.TXT")


def test_case_key_folds_sharp_s() -> None:
    """casefold maps ß to ss: over-reporting is safer than missing a collision."""
    assert case_key("Straße.txt") == case_key("STRASSE.TXT")


def test_case_key_ignores_normalisation_form() -> None:
    """APFS and NTFS users may produce NFD and NFC spellings of the same name."""
    assert case_key(unicodedata.normalize("NFD", "Été.txt")) == case_key("été.TXT")


def test_case_key_keeps_different_names_apart() -> None:
    assert case_key("a/b") != case_key("a/c")
    assert case_key("ab") != case_key("a/b")


# --------------------------------------------------------------------------- #
# to_relative and join                                                         #
# --------------------------------------------------------------------------- #


def test_to_relative_joins_with_slashes(tmp_path: Path) -> None:
    assert to_relative(tmp_path, tmp_path / "a" / "b.txt") == "a/b.txt"
    assert to_relative(tmp_path, tmp_path / "x") == "x"


def test_to_relative_windows_paths_use_forward_slashes() -> None:
    """The bundle form is always '/'-separated, whatever the local separator."""
    root = PureWindowsPath("C:/Users/rep/Store")
    assert to_relative(root, root / "Devis" / "q.docx") == "Devis/q.docx"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "outside",
    [
        PurePosixPath("/elsewhere/file"),
        PurePosixPath("/store"),
        PurePosixPath("/store/../etc/passwd"),
        PurePosixPath("/storefront/x"),  # shares a string prefix with the root, not a folder prefix
        PurePosixPath("relative/x"),
    ],
)
def test_to_relative_refuses_outside_and_root(outside: PurePosixPath) -> None:
    with pytest.raises(ValueError):
        to_relative(PurePosixPath("/store"), outside)  # type: ignore[arg-type]


def test_to_relative_round_trips_with_join(tmp_path: Path) -> None:
    for rel in GOOD:
        assert to_relative(tmp_path, join(tmp_path, rel)) == rel


def test_join_builds_path_inside_root(tmp_path: Path) -> None:
    assert join(tmp_path, "a/b/c.txt") == tmp_path / "a" / "b" / "c.txt"


def test_join_returns_nfc_path(tmp_path: Path) -> None:
    nfd = unicodedata.normalize("NFD", "é.txt")
    assert join(tmp_path, nfd) == tmp_path / "é.txt"


@pytest.mark.parametrize("path", [p for p, _, _ in HOSTILE if isinstance(p, str)])
def test_join_refuses_hostile_paths(tmp_path: Path, path: str) -> None:
    with pytest.raises(PathError):
        join(tmp_path, path)
    with pytest.raises(PathError):
        join_str(str(tmp_path), path)


# --------------------------------------------------------------------------- #
# inside_without_links with a real file system                                 #
# --------------------------------------------------------------------------- #


def _symlink_or_skip(link: Path, target: Path) -> None:
    try:
        link.symlink_to(target, target_is_directory=True)
    except (OSError, NotImplementedError) as exc:  # Windows without symlink privilege
        pytest.skip(f"cannot create symlinks here: {exc}")


def test_plain_folders_are_fine(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert inside_without_links(tmp_path, "a/b/c.txt")
    assert inside_without_links(tmp_path, "top.txt")


def test_missing_folders_are_fine(tmp_path: Path) -> None:
    """apply creates missing parents itself; they cannot be links yet."""
    (tmp_path / "a").mkdir()
    assert inside_without_links(tmp_path, "a/new/deeper/file.txt")
    assert inside_without_links(tmp_path, "nothing/here.txt")


def test_a_file_where_a_folder_should_be_is_not_a_link(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    assert inside_without_links(tmp_path, "f/child.txt")


def test_symlink_out_of_the_store_is_refused(tmp_path: Path) -> None:
    """A local link 'docs -> /elsewhere' must not let a bundle's 'docs/x' write outside the store."""
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    _symlink_or_skip(root / "docs", outside)
    assert not inside_without_links(root, "docs/x.txt")
    assert not inside_without_links(root, "docs/new/deeper.txt")
    # join is lexical: it gives the in-store path, and only the link check catches the redirect.
    assert join(root, "docs/x.txt") == root / "docs" / "x.txt"
    assert not list(outside.iterdir())


def test_symlink_deeper_in_the_path_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    _symlink_or_skip(root / "a" / "b" / "c", outside)
    assert inside_without_links(root, "a/b/file.txt")
    assert not inside_without_links(root, "a/b/c/file.txt")


def test_symlink_inside_the_store_is_also_refused(tmp_path: Path) -> None:
    """Even an in-store link is refused: its target can be swapped for an outside one later."""
    root = tmp_path / "store"
    (root / "real").mkdir(parents=True)
    _symlink_or_skip(root / "alias", root / "real")
    assert not inside_without_links(root, "alias/file.txt")


def test_dangling_symlink_is_refused(tmp_path: Path) -> None:
    """A link to a folder that does not exist yet would be created and followed on write."""
    root = tmp_path / "store"
    root.mkdir()
    _symlink_or_skip(root / "later", tmp_path / "not-yet")
    assert not inside_without_links(root, "later/file.txt")


def test_the_root_itself_may_be_a_symlink(tmp_path: Path) -> None:
    """Users put stores behind links (macOS /tmp, a redirected Documents folder); that is their choice."""
    real = tmp_path / "real"
    (real / "a").mkdir(parents=True)
    _symlink_or_skip(tmp_path / "linked", real)
    assert inside_without_links(tmp_path / "linked", "a/file.txt")


def test_the_last_component_is_not_examined(tmp_path: Path) -> None:
    """apply renames over the target, which replaces a link instead of following it."""
    root = tmp_path / "store"
    root.mkdir()
    _symlink_or_skip(root / "file.txt", tmp_path)
    assert inside_without_links(root, "file.txt")


def test_invalid_relative_path_is_refused(tmp_path: Path) -> None:
    assert not inside_without_links(tmp_path, "../escape.txt")
    assert not inside_without_links(tmp_path, "a/CON/x")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_unreadable_folder_fails_closed(tmp_path: Path) -> None:
    """When a parent cannot be examined, do not write."""
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    locked.chmod(0)
    try:
        assert not inside_without_links(tmp_path, "locked/inner/x.txt")
    finally:
        locked.chmod(0o700)


def test_lstat_error_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any error other than 'does not exist' while examining a parent means: do not write."""
    (tmp_path / "a").mkdir()

    def denied(p: os.PathLike[str] | str) -> object:
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr(os, "lstat", denied)
    assert not inside_without_links(tmp_path, "a/x.txt")
    assert inside_without_links(tmp_path, "x.txt")  # no parent folder to examine


# --------------------------------------------------------------------------- #
# Windows reparse points, judged from lstat results                            #
# --------------------------------------------------------------------------- #


# Defined in the stat module only on Windows; values from winnt.h.
_TAG_MOUNT_POINT = 0xA0000003  # junction ("mklink /J") or mounted volume
_TAG_SYMLINK = 0xA000000C


def _fake_stat(attributes: int = 0, tag: int = 0, mode: int = stat.S_IFDIR | 0o755) -> SimpleNamespace:
    return SimpleNamespace(st_mode=mode, st_file_attributes=attributes, st_reparse_tag=tag)


def test_junction_counts_as_a_link() -> None:
    """'mklink /J' junctions are not symlinks to os.path.islink before 3.12, but redirect writes all the same."""
    st_ = _fake_stat(stat.FILE_ATTRIBUTE_REPARSE_POINT, _TAG_MOUNT_POINT)
    assert paths._is_redirect(st_)


def test_windows_symlink_reparse_point_counts_as_a_link() -> None:
    st_ = _fake_stat(stat.FILE_ATTRIBUTE_REPARSE_POINT, _TAG_SYMLINK)
    assert paths._is_redirect(st_)


def test_wsl_symlink_counts_as_a_link() -> None:
    """IO_REPARSE_TAG_LX_SYMLINK: a link made inside WSL on an NTFS folder."""
    assert paths._is_redirect(_fake_stat(stat.FILE_ATTRIBUTE_REPARSE_POINT, 0xA000001D))


def test_onedrive_placeholder_folder_is_not_a_link() -> None:
    """Files On-Demand folders are cloud reparse points (IO_REPARSE_TAG_CLOUD_*), not redirects.

    Refusing them would stall every store inside a OneDrive-backed Documents folder.
    """
    assert not paths._is_redirect(_fake_stat(stat.FILE_ATTRIBUTE_REPARSE_POINT, 0x9000601A))


def test_unknown_reparse_tag_fails_closed() -> None:
    assert paths._is_redirect(_fake_stat(stat.FILE_ATTRIBUTE_REPARSE_POINT, 0))


def test_plain_folder_stat_is_not_a_link() -> None:
    assert not paths._is_redirect(_fake_stat())
    assert not paths._is_redirect(SimpleNamespace(st_mode=stat.S_IFDIR | 0o755))  # POSIX: no attributes


def test_posix_symlink_mode_is_a_link() -> None:
    assert paths._is_redirect(SimpleNamespace(st_mode=stat.S_IFLNK | 0o777))


def test_inside_without_links_uses_the_reparse_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A junction on disk (faked here through lstat) makes the path unsafe."""
    (tmp_path / "junction").mkdir()
    real_lstat = os.lstat

    def fake_lstat(p: os.PathLike[str] | str) -> object:
        if Path(p).name == "junction":
            return _fake_stat(stat.FILE_ATTRIBUTE_REPARSE_POINT, _TAG_MOUNT_POINT)
        return real_lstat(p)

    monkeypatch.setattr(os, "lstat", fake_lstat)
    assert not inside_without_links(tmp_path, "junction/file.txt")
    assert inside_without_links(tmp_path, "other/file.txt")
