"""What never syncs: peersync's own files, editors' lock and temporary files, and user patterns.

User patterns come from ``.peersyncignore`` at the store root (gitignore
syntax, itself synced so every peer shares them), the per-store ``exclude``
setting, and one-off ``--exclude`` options.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pathspec

MARKER = ".peersync"
IGNORE_FILE = ".peersyncignore"

# Always ignored, whatever the user's patterns say.
BUILTIN = [
    f"/{MARKER}",
    ".peersync-tmp-*",
    # Office owner files ("~$Quote.docx") and save temporaries: Word "~WRD0000.tmp" and
    # "~WRL0001.tmp", PowerPoint "ppt1A2B.tmp", Excel an 8-hex-digit name with or without ".tmp".
    "~$*",
    "~*.tmp",
    "ppt*.tmp",
    "[0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F][0-9A-F].tmp",
    # LibreOffice save temporaries ("lu12345abcd.tmp").
    "lu*.tmp",
    # LibreOffice lock files (".~lock.Quote.odt#").
    ".~lock.*#",
    # Operating system litter.
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    "$RECYCLE.BIN/",
    # Cloud clients' own bookkeeping, should a store sit inside a synced folder.
    ".dropbox",
    ".dropbox.attr",
    ".dropbox.cache/",
]


# Excel saves through a file named by 8 hex digits with no extension; a folder of that name
# (a date such as "20240115") is a user's and syncs.
EXCEL_TEMP = re.compile(r"^[0-9A-F]{8}$")
# The same name as the last component of a path: part of the one-regex shortcut below.
EXCEL_TEMP_ANYWHERE = r"^(?s:.*/)?[0-9A-F]{8}$"


# What pathspec's gitignore patterns start with when they match a name in any folder.
_ANY_FOLDER = "^(?:.+/)?"
# Regex syntax that gives a group's name a meaning beyond capturing: such a pattern is not merged.
_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")
_GROUP_REFERENCE = re.compile(r"\(\?P=|\(\?\(")


def any_match_regex(specs: Sequence[pathspec.PathSpec[Any]], extra: Sequence[str] = ()) -> re.Pattern[str] | None:
    """One regex that matches a path exactly when some pattern of ``specs`` (or regex of ``extra``) does.

    A path that no pattern matches is not ignored whatever the patterns' order and
    negations, so one C-level search settles the common case and only the rare path
    that some pattern matches is given to pathspec for its full gitignore rules.
    Patterns that match a name in any folder are merged behind one shared prefix.
    None (no shortcut) if a pattern is not a plain regex pattern.
    """
    anywhere: list[str] = []
    anchored: list[str] = []
    for spec in specs:
        for pattern in spec.patterns:
            if pattern.include is None:
                continue  # a comment or blank line: matches nothing
            regex = getattr(pattern, "regex", None)
            if not isinstance(regex, re.Pattern) or not isinstance(regex.pattern, str):
                return None
            text = regex.pattern
            if regex.flags & ~re.UNICODE or _GROUP_REFERENCE.search(text):
                return None
            text = _NAMED_GROUP.sub("(?:", text)  # names must be unique in one regex; matching ignores them
            if text.startswith(_ANY_FOLDER):
                anywhere.append(text[len(_ANY_FOLDER):])
            else:
                anchored.append(text)
    # Every branch starts at the path's start, so one leading '^' lets a search give up at once.
    if not all(t.startswith("^") for t in [*anchored, *extra]):
        return None
    branches = [f"(?:{t[1:]})" for t in [*anchored, *extra]]
    if anywhere:
        branches.append(_ANY_FOLDER[1:] + "(?:" + "|".join(f"(?:{t})" for t in anywhere) + ")")
    try:
        return re.compile("^(?:" + "|".join(branches) + ")") if branches else re.compile(r"(?!)")
    except re.error:
        return None


class Ignore:
    def __init__(self, root: Path, extra: Iterable[str] = ()) -> None:
        lines = list(extra) + self._file_lines(root)
        self._user = pathspec.GitIgnoreSpec.from_lines(lines)
        # Every rule in force, as text: two Ignores with the same rules decide every path alike.
        self.rules = "\n".join([*BUILTIN, "", *lines])
        self._builtin = pathspec.GitIgnoreSpec.from_lines(BUILTIN)
        self._any = any_match_regex([self._builtin, self._user], [EXCEL_TEMP_ANYWHERE])
        # pathspec turns these separators into '/' before matching; the shortcut must too.
        self._seps = [s for s in (os.sep, os.altsep) if s and s != "/"]
        # For a caller that makes many checks (a scan): if this regex does not match a path as a
        # folder listing yields it (a folder's path + "/" + one name, "/" after a folder), then
        # ``ignored`` is False for it. None when there is no shortcut: always ask ``ignored``.
        self.shortcut = self._any

    @staticmethod
    def _file_lines(root: Path) -> list[str]:
        try:
            return (root / IGNORE_FILE).read_text("utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """True if ``rel`` (a store-relative '/' path) must not sync."""
        key = rel + "/" if is_dir else rel
        if self._any is not None:
            probe = key
            for sep in self._seps:
                probe = probe.replace(sep, "/")
            if probe.startswith(("/", "./")):  # as pathspec normalises it
                probe = probe[1:] if probe[0] == "/" else probe[2:]
            if self._any.search(probe) is None:
                return False  # no pattern matches at all (a scan's usual answer, in one regex search)
        if not is_dir and EXCEL_TEMP.match(rel.rpartition("/")[2]):
            return True
        return bool(self._builtin.match_file(key) or self._user.match_file(key))
