"""Hostile-path validation, NFC normalisation and case-fold keys for store-relative paths.

Every path that arrives in a bundle was written by someone else and carried by
an untrusted cloud service, so it is treated as an attack until proven
otherwise (DESIGN.md, invariant 4). A *store-relative path* is a non-empty
string of ``/``-separated components, NFC-normalised, that names the same
single file on Linux, macOS and Windows and can never name anything outside
the store.

The rules are deliberately stricter than any one filesystem: a path that is
legal on the author's machine but not on some receiver's would stall that
receiver forever, so every peer refuses it up front with the same reason.

Decisions a caller must know:

* ``validate`` normalises first, then checks; what it returns is NFC and is a
  fixed point (``validate(validate(p)) == validate(p)``).
* Leading dots are fine (``.hidden``, ``...x``); a *trailing* dot or space is
  not, because Windows silently strips it and ``a.`` would overwrite ``a``.
  A component made only of dots (``.``, ``..``, ``...``) is therefore refused.
* Reserved device names are refused on every OS and under any extension
  (``con.txt``, ``aux.tar.gz``), including ``COM0``/``LPT0`` and ``CLOCK$``,
  which newer and older Windows versions also reserve. Names that merely
  start with one (``CONTRACT.txt``, ``console.log``) are fine.
* ``case_key`` over-reports on purpose: ``str.casefold`` folds ``ß`` to
  ``ss`` although NTFS does not, so a rare false conflict is reported rather
  than a real one missed on some other case-insensitive filesystem.
* ``to_relative`` is purely lexical and does *not* normalise: on Linux an NFD
  and an NFC name are two different files, so the caller decides (usually by
  passing the result to ``validate``).
* 8.3 short names (``LONGFO~1``) are not refused: they cannot escape the
  store, and refusing every ``~1`` would reject real file names.
"""

from __future__ import annotations

import os
import re
import stat
import unicodedata
from pathlib import Path, PurePath
from typing import Any

from peersync.errors import PathError

__all__ = [
    "LinkCheck",
    "MAX_NAME_CHARS",
    "MAX_PATH_CHARS",
    "case_key",
    "inside_without_links",
    "is_valid",
    "join",
    "to_relative",
    "validate",
]

MAX_PATH_CHARS = 1024
"""Longest store-relative path, in characters of its NFC form."""

MAX_NAME_CHARS = 255
"""Longest single component, in characters *and* in UTF-8 bytes (ext4 counts bytes, NTFS UTF-16 units)."""

# Characters Windows refuses in a file name, besides controls, '/', '\\' and ':'
# (which get reasons of their own).
_WINDOWS_INVALID = frozenset('<>"|?*')
# The first control character or character Windows refuses: one search, not a loop per character.
_BAD_CHAR = re.compile(r'[\x00-\x1f\x7f<>"|?*]')

# Device names Windows resolves to a device in any folder and under any
# extension. Superscript digits count as digits to Win32 (COM¹ is a port).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"{dev}{digit}" for dev in ("COM", "LPT") for digit in "0123456789\u00b9\u00b2\u00b3"}
)

# NFC never shrinks a string by more than the longest canonical decomposition
# (4 characters), so anything this long cannot pass the length check; refusing
# it before normalising keeps a huge hostile string from costing real work.
_PRE_NFC_LIMIT = 32 * MAX_PATH_CHARS

# A reparse tag with this bit set "names another entity" (symlink, junction,
# WSL link): IsReparseTagNameSurrogate in the Windows SDK. Cloud placeholders
# (OneDrive Files On-Demand) are reparse points without it and are plain folders.
_NAME_SURROGATE_BIT = 0x20000000


def validate(path: str) -> str:
    """Return ``path`` NFC-normalised, or raise PathError saying why it is unsafe."""
    if not isinstance(path, str):
        raise PathError(repr(path), "not a string")
    if not path:
        raise PathError(path, "empty path")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError(path, "not valid Unicode (lone surrogate)") from None
    if len(path) > _PRE_NFC_LIMIT:
        raise PathError(path, f"longer than {MAX_PATH_CHARS} characters")

    nfc = unicodedata.normalize("NFC", path)

    if len(nfc) > MAX_PATH_CHARS:
        raise PathError(path, f"longer than {MAX_PATH_CHARS} characters")
    if nfc.startswith(("//", "\\\\")):
        raise PathError(path, "UNC or device prefix")
    if nfc[0] in "/\\":
        raise PathError(path, "absolute path")
    if len(nfc) >= 2 and nfc[1] == ":" and nfc[0].isascii() and nfc[0].isalpha():
        raise PathError(path, "drive letter")
    if "\\" in nfc:
        raise PathError(path, "backslash")
    if ":" in nfc:
        raise PathError(path, "':' (drive letter or NTFS stream)")
    bad = _BAD_CHAR.search(nfc)
    if bad is not None:
        ch = bad.group()
        if ch not in _WINDOWS_INVALID:
            raise PathError(path, f"control character U+{ord(ch):04X}")
        raise PathError(path, f"character {ch!r} is invalid on Windows")

    for name in nfc.split("/"):
        _check_component(path, name)
    return nfc


def _check_component(path: str, name: str) -> None:
    """Raise PathError if one NFC component of ``path`` is unsafe."""
    if not name:
        raise PathError(path, "empty component ('//' or trailing '/')")
    if name in (".", ".."):
        raise PathError(path, f"{name!r} component")
    if name[-1] in ". ":
        raise PathError(path, "component ends in '.' or ' ' (Windows strips it)")
    if len(name) > MAX_NAME_CHARS or len(name.encode("utf-8")) > MAX_NAME_CHARS:
        raise PathError(path, f"component longer than {MAX_NAME_CHARS} characters or UTF-8 bytes")
    # Win32 looks at the part before the first dot, trailing spaces dropped:
    # "con.txt", "CON .tar.gz" and "Nul" all open the device.
    stem = name.split(".", 1)[0].rstrip(" ")
    if stem.upper() in _RESERVED:
        raise PathError(path, f"Windows reserved name {stem!r}")


def is_valid(path: str) -> bool:
    """True when ``validate(path)`` would succeed."""
    try:
        validate(path)
    except PathError:
        return False
    return True


def case_key(path: str) -> str:
    """The key under which ``path`` collides with others on a case-insensitive filesystem.

    NFC, then ``str.casefold()``, then NFC again (casefolding can leave a
    decomposed sequence). Meant for paths that already passed ``validate``.
    """
    folded = unicodedata.normalize("NFC", path).casefold()
    return unicodedata.normalize("NFC", folded)


def to_relative(root: Path, absolute: Path) -> str:
    """The ``/``-joined path of ``absolute`` under ``root``; ValueError if outside or the root itself.

    Lexical only (no symlink resolution, no Unicode normalisation).
    """
    rel = PurePath(absolute).relative_to(PurePath(root))
    parts = rel.parts
    if not parts:
        raise ValueError(f"{absolute} is the store root itself, not a path inside it")
    if ".." in parts:
        raise ValueError(f"{absolute} is not inside {root}")
    return "/".join(parts)


def join(root: Path, rel: str) -> Path:
    """``root`` joined with ``rel`` once it is validated; PathError if unsafe.

    Lexical only: nothing is resolved, because resolving follows symlinks. It
    cannot leave ``root``: ``validate`` lets through only paths made of plain
    names ('/' between them, no '.', '..', empty name, drive, root, backslash
    or ':'), so the join adds exactly those names under ``root``.
    """
    return Path(root) / validate(rel)


def join_str(root: str, rel: str) -> str:
    """:func:`join` as a plain string (the per-file paths of an apply: a Path costs ~10 us to build)."""
    nfc = validate(rel)
    return os.path.join(root, nfc if os.sep == "/" else nfc.replace("/", os.sep))


def inside_without_links(root: Path, rel: str) -> bool:
    """True when no existing parent folder of ``rel`` under ``root`` is a symlink or junction.

    ``root`` itself is trusted (a store may live behind a link the user made),
    the last component is not examined (an atomic rename replaces a link
    rather than following it), and folders that do not exist yet are fine.
    An invalid ``rel`` or a folder that cannot be examined gives False: when
    in doubt, do not write.
    """
    try:
        parts = validate(rel).split("/")
    except PathError:
        return False
    current = Path(root)
    for name in parts[:-1]:
        current = current / name
        try:
            st = os.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            return True
        except OSError:
            return False
        if _is_redirect(st):
            return False
    return True


class LinkCheck:
    """:func:`inside_without_links` for one pass over a store (a publish, a snapshot), remembered per
    folder: the files of a folder found free of links cost no further lstat. Only a local program
    can make a folder a link; the check stays a moment's, as it is for one file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._free: set[str] = set()

    def __call__(self, rel: str) -> bool:
        folder = rel.rpartition("/")[0]
        if folder in self._free:
            return True
        if not inside_without_links(self.root, rel):
            return False
        self._free.add(folder)
        return True


def _is_redirect(st: Any) -> bool:
    """True when an ``os.lstat`` result is a symlink, a junction or another name-surrogate reparse point.

    A reparse point whose tag is unknown counts as a redirect (fail closed).
    """
    if stat.S_ISLNK(st.st_mode):
        return True
    attributes = getattr(st, "st_file_attributes", 0)
    if attributes & stat.FILE_ATTRIBUTE_REPARSE_POINT:
        tag = getattr(st, "st_reparse_tag", 0)
        return tag == 0 or bool(tag & _NAME_SURROGATE_BIT)
    return False
