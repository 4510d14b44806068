"""What never syncs: peersync's own files, editors' lock and temporary files, and user patterns.

User patterns come from ``.peersyncignore`` at the store root (gitignore
syntax, itself synced so every peer shares them), the per-store ``exclude``
setting, and one-off ``--exclude`` options.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

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


class Ignore:
    def __init__(self, root: Path, extra: Iterable[str] = ()) -> None:
        self._user = pathspec.GitIgnoreSpec.from_lines(list(extra) + self._file_lines(root))
        self._builtin = pathspec.GitIgnoreSpec.from_lines(BUILTIN)

    @staticmethod
    def _file_lines(root: Path) -> list[str]:
        try:
            return (root / IGNORE_FILE).read_text("utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def ignored(self, rel: str, is_dir: bool = False) -> bool:
        """True if ``rel`` (a store-relative '/' path) must not sync."""
        if not is_dir and EXCEL_TEMP.match(rel.rpartition("/")[2]):
            return True
        key = rel + "/" if is_dir else rel
        return self._builtin.match_file(key) or self._user.match_file(key)
