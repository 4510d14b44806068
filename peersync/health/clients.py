"""The cloud file-sharing clients peersync recognises, as data, and how to find their folders.

Each :class:`CloudClient` lists, per operating system, its process names and
the places where the client itself records its sync folder: a configuration
file with a parser, a registry value, an environment variable. A relay is said
to be "inside Dropbox" only when Dropbox's own configuration says so, never
because a folder happens to be called ``Dropbox``. The one exception, iCloud
Drive, is found from its fixed default folder and is marked as the weakest
evidence (``weak=True``).

Confidence tags in the comments follow docs/reference cloud-clients.md:
[V] checked in a primary source, [V-code] read in a client's own or a
well-known detector's source, [S] community code only, [NF] not found
(a hypothesis). Correcting an entry is a one-line change here; every entry
has a test in tests/test_clients.py.

All machine access goes through :class:`~peersync.health.system.System`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import json
import os
import plistlib
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .system import System

#: (label, path) pairs a parser extracts from a client's configuration.
Found = list[tuple[str, str]]

SYNC_ROOT_MANAGER = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Explorer\\SyncRootManager"


@dataclasses.dataclass(frozen=True)
class Source:
    """One place where a client records its sync folder(s).

    kind:
      ``file``      ``where`` is a path template (``{LOCALAPPDATA}/Dropbox/info.json``,
                    ``*`` allowed); ``parse(path)`` returns (label, folder) pairs.
      ``registry``  ``where`` is a key (``*`` allowed in a component), ``value`` a value name;
                    ``parse(value)`` or, without it, the value is the folder.
      ``env``       ``where`` is an environment variable holding the folder.
      ``syncroot``  the Windows Cloud Files register (SyncRootManager): ``where`` matches the
                    provider part of ``<provider>!<user SID>!<account>``, ``value`` the account
                    part; only this user's SID is read, so another Windows user's folders never count.
      ``folder``    ``where`` is a fixed default folder; found when it exists. Weakest evidence.
    """

    kind: str
    platforms: tuple[str, ...]
    where: str
    value: str = ""
    parse: Callable[..., Found] | None = None
    label: str = ""  # "{key}" is replaced by the matched registry key's last part
    weak: bool = False  # a guess from a default location, not the client's own record
    note: str = ""  # confidence tag and source


@dataclasses.dataclass(frozen=True)
class ConflictPattern:
    """A client's naming of a conflicted or duplicate copy: ``regex`` matches the end of the stem.

    ``distinctive`` patterns (Dropbox's "conflicted copy") are recognised anywhere. The
    others (" (1)", "-COMPUTERNAME") are too common to trust alone: the copy is reported
    only when what is left after removing the decoration is a relay file's name or a
    file beside it.
    """

    regex: str
    distinctive: bool
    example: str  # a copy of "report.txt" as the client names it; a test pins it
    note: str = ""


@dataclasses.dataclass(frozen=True)
class CloudClient:
    key: str
    name: str
    #: Process names by platform, compared case-insensitively.
    processes: dict[str, tuple[str, ...]]
    sources: tuple[Source, ...]
    conflicts: tuple[ConflictPattern, ...] = ()
    #: Regexes over a file name: the client's temporary or partial-transfer files.
    temp_files: tuple[str, ...] = ()
    #: How to make a folder always available offline; ``{path}`` is the relay.
    offline_fix: str = ""


# -- parsers -----------------------------------------------------------------------------------


def parse_dropbox_info(path: Path) -> Found:
    """``info.json``: ``{"personal": {"path": ...}, "business": {"path": ...}}``."""
    data = json.loads(path.read_text("utf-8-sig"))
    out: Found = []
    if isinstance(data, dict):
        for label, account in data.items():
            if isinstance(account, dict) and isinstance(account.get("path"), str):
                out.append((str(label), account["path"]))
    return out


def parse_path_file(path: Path) -> Found:
    """A text file holding one folder path (Box's ``sync_root_folder.txt``); UTF-8 or UTF-16."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = raw.decode("utf-16")
    else:
        text = raw.decode("utf-8-sig", errors="replace")
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return [("", line)] if line else []


_QT_FOLDER = re.compile(r"^\d+\\(Folders|Multifolders|FoldersWithPlaceholders)\\[^\\]+\\localPath=(.*)$")


def parse_qt_folders(path: Path) -> Found:
    """Nextcloud/ownCloud ``*.cfg`` (Qt INI): ``[Accounts]`` ... ``0\\Folders\\1\\localPath=/x/``."""
    out: Found = []
    section = ""
    for raw in path.read_text("utf-8", errors="replace").splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        if section != "Accounts":
            continue
        m = _QT_FOLDER.match(line)
        if m:
            value = m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out.append(("virtual files" if m.group(1) == "FoldersWithPlaceholders" else "", value))
    return out


def parse_drivefs_preferences(value: object) -> Found:
    """``PerAccountPreferences``: ``{"per_account_preferences": [{"key": id, "value": {"mount_point_path": "G"}}]}``."""
    data = json.loads(str(value))
    out: Found = []
    for account in data.get("per_account_preferences", []) if isinstance(data, dict) else []:
        mount = (account.get("value") or {}).get("mount_point_path") if isinstance(account, dict) else None
        if isinstance(mount, str) and mount:
            out.append(("streamed drive", mount))
    return out


def parse_drivefs_plist(path: Path) -> Found:
    """macOS ``com.google.drivefs.settings.plist`` holding the same PerAccountPreferences JSON."""
    with open(path, "rb") as f:
        data = plistlib.load(f)
    value = data.get("PerAccountPreferences") if isinstance(data, dict) else None
    return parse_drivefs_preferences(value) if value else []


def _query_copy(path: Path, queries: Iterable[tuple[str, str]]) -> Found:
    """Run read-only queries on a copy of a live SQLite database (with its -wal), never the original."""
    out: Found = []
    with tempfile.TemporaryDirectory(prefix="peersync-doctor-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                shutil.copyfile(side, copy.with_name(copy.name + suffix))
        db = sqlite3.connect(str(copy), timeout=1)
        try:
            for label, sql in queries:
                try:
                    rows = db.execute(sql).fetchall()
                except sqlite3.Error:
                    continue
                out.extend((label, str(r[0])) for r in rows if r and r[0])
        finally:
            db.close()
    return out


def parse_drivefs_db(path: Path) -> Found:
    """``root_preference_sqlite.db``: mirrored roots, and the streamed drive's mount point."""
    return _query_copy(path, [
        ("mirrored folder", "SELECT last_seen_absolute_path FROM roots"),
        ("streamed drive", "SELECT last_mount_point FROM media WHERE fs_type = 10"),
    ])


def parse_backup_sync_db(path: Path) -> Found:
    """Backup and Sync ``sync_config.db``: table ``data``, ``entry_key = 'local_sync_root_path'``."""
    return _query_copy(path, [("", "SELECT data_value FROM data WHERE entry_key = 'local_sync_root_path'")])


# -- the table -------------------------------------------------------------------------------

# Office owner files, generic temporaries, and the simulator's/clients' ".~tmp" names.
GENERIC_TEMP_FILES = (r"^\.~tmp", r"^~\$", r"\.tmp$")

# Operating-system litter: ignored, never reported.
LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "Icon\r", ".dropbox", ".dropbox.attr"})

_DUPLICATE = r" \(\d+\)"  # "name (1).ext"
_ONEDRIVE_OFFLINE = ('attrib +p -u "{path}" and attrib +p -u /s /d "{path}\\*" '
                     '(or right-click the folder, "Always keep on this device")')

CLIENTS: tuple[CloudClient, ...] = (
    CloudClient(
        key="dropbox",
        name="Dropbox",
        processes={"windows": ("Dropbox.exe",), "darwin": ("Dropbox",), "linux": ("dropbox",)},  # Win [S]; others [NF]
        sources=(
            Source("file", ("windows",), "{LOCALAPPDATA}/Dropbox/info.json", parse=parse_dropbox_info,
                   note="[V-code] Files DropBoxCloudDetector.cs"),
            Source("file", ("windows",), "{APPDATA}/Dropbox/info.json", parse=parse_dropbox_info,
                   note="[V-code] older installs"),
            Source("file", ("windows",),
                   "{LOCALAPPDATA}/Packages/DropboxInc.Dropbox_*/LocalCache/Local/Dropbox/info.json",
                   parse=parse_dropbox_info, note="[S] Microsoft Store install"),
            Source("file", ("darwin", "linux"), "~/.dropbox/info.json", parse=parse_dropbox_info, note="[NF]"),
            Source("syncroot", ("windows",), "Dropbox", note="[S] SyncRootManager ids 'Dropbox!<SID>!<account>'"),
        ),
        conflicts=(
            ConflictPattern(r" \((?:[^()]*'s )?conflicted copy \d{4}-\d{2}-\d{2}(?: \(\d+\))?\)(?: \(\d+\))?", True,
                            "report (Alice's conflicted copy 2026-11-24).txt", "[V] help.dropbox.com; token order [S]"),
            ConflictPattern(r" \((?:Selective Sync|Case|Unicode Encoding) Conflict(?: \d+)?\)", True,
                            "report (Selective Sync Conflict).txt", "[S]"),
        ),
        temp_files=(r"^\.dropbox\.cache$",),
        offline_fix='right-click "{path}" in Dropbox, "Make available offline"',
    ),
    CloudClient(
        key="onedrive-personal",
        name="OneDrive (personal)",
        processes={"windows": ("OneDrive.exe",), "darwin": ("OneDrive",)},  # Win [S]; mac [V]
        sources=(
            Source("registry", ("windows",), "HKCU\\Software\\Microsoft\\OneDrive\\Accounts\\Personal", "UserFolder",
                   label="Personal", note="[S] community code"),
            Source("env", ("windows",), "OneDriveConsumer", label="OneDriveConsumer", note="[NF]"),
            # %OneDrive% names the personal folder, or the business one when only that is signed in [S];
            # a business folder found by the registry outranks it (see find_roots).
            Source("env", ("windows",), "OneDrive", label="OneDrive", note="[S]"),
            Source("syncroot", ("windows",), "OneDrive", "Personal*", label="Personal", note="[S]"),
        ),
        conflicts=(
            ConflictPattern(r"-[A-Za-z0-9][A-Za-z0-9-]{0,14}(?: \(\d+\))?", False, "report-DESKTOP-1234.txt",
                            "[S] keep-both appends the computer name"),
            ConflictPattern(_DUPLICATE, False, "report (2).txt", "[S] duplicate on upload"),
        ),
        offline_fix=_ONEDRIVE_OFFLINE,
    ),
    CloudClient(
        key="onedrive-business",
        name="OneDrive for Business",
        processes={"windows": ("OneDrive.exe",), "darwin": ("OneDrive",)},
        sources=(
            Source("registry", ("windows",), "HKCU\\Software\\Microsoft\\OneDrive\\Accounts\\Business*", "UserFolder",
                   label="{key}", note="[S] community code"),
            Source("env", ("windows",), "OneDriveCommercial", label="OneDriveCommercial", note="[S]"),
            Source("syncroot", ("windows",), "OneDrive", "Business*", label="Business", note="[S]"),
        ),
        conflicts=(
            ConflictPattern(r"-[A-Za-z0-9][A-Za-z0-9-]{0,14}(?: \(\d+\))?", False, "report-LAPTOP-7.txt", "[S]"),
            ConflictPattern(_DUPLICATE, False, "report (2).txt", "[S]"),
        ),
        offline_fix=_ONEDRIVE_OFFLINE,
    ),
    CloudClient(
        key="google-drive",
        name="Google Drive for desktop",
        processes={"windows": ("GoogleDriveFS.exe",), "darwin": ("Google Drive",)},  # Win [S]; mac [NF]
        sources=(
            Source("registry", ("windows",), "HKCU\\Software\\Google\\DriveFS", "PerAccountPreferences",
                   parse=parse_drivefs_preferences, note="[V-code] Files GoogleDriveCloudDetector.cs"),
            Source("file", ("windows",), "{LOCALAPPDATA}/Google/DriveFS/root_preference_sqlite.db",
                   parse=parse_drivefs_db, note="[V-code] Files GoogleDriveCloudDetector.cs"),
            Source("file", ("darwin",), "~/Library/Preferences/com.google.drivefs.settings.plist",
                   parse=parse_drivefs_plist, note="[S]"),
            Source("file", ("darwin",), "~/Library/Application Support/Google/DriveFS/root_preference_sqlite.db",
                   parse=parse_drivefs_db, note="[NF]"),
        ),
        conflicts=(ConflictPattern(_DUPLICATE, False, "report (1).txt", "[S]"),),
        temp_files=(r"^\.tmp\.drive(?:upload|download)$",),  # [S]
        offline_fix='right-click "{path}", "Offline access", "Available offline"',
    ),
    CloudClient(
        key="google-backup-sync",
        name="Google Backup and Sync",
        processes={"windows": ("googledrivesync.exe",), "darwin": ("Backup and Sync",)},  # Win [S]; mac [NF]
        sources=(
            Source("file", ("windows",), "{LOCALAPPDATA}/Google/Drive/user_default/sync_config.db",
                   parse=parse_backup_sync_db, note="[V-code] kolide/launcher gdrive_sync.go (mac path)"),
            Source("file", ("darwin",), "~/Library/Application Support/Google/Drive/user_default/sync_config.db",
                   parse=parse_backup_sync_db, note="[V-code] kolide/launcher gdrive_sync.go"),
        ),
        conflicts=(ConflictPattern(_DUPLICATE, False, "report (1).txt", "[S]"),),
        offline_fix="Backup and Sync keeps every synced file on disk; check that the folder is selected for sync",
    ),
    CloudClient(
        key="box",
        name="Box Drive",
        processes={"windows": ("Box.exe",), "darwin": ("Box",)},  # Win [S]; mac [NF]
        sources=(
            Source("file", ("windows",), "{LOCALAPPDATA}/Box/Box/data/shell/sync_root_folder.txt",
                   parse=parse_path_file, note="[V-code] Files BoxCloudDetector.cs"),
            Source("file", ("windows",), "{LOCALAPPDATA}/Box Sync/sync_root_folder.txt", parse=parse_path_file,
                   label="Box Sync", note="[V-code] legacy Box Sync"),
            Source("file", ("darwin",), "~/Library/Application Support/Box/Box/data/shell/sync_root_folder.txt",
                   parse=parse_path_file, note="[NF]"),
            Source("syncroot", ("windows",), "Box", note="[S]"),
        ),
        conflicts=(),  # [NF]: Box's naming of conflicted copies is not documented
        offline_fix='right-click "{path}", "Make Available Offline"',
    ),
    CloudClient(
        key="icloud",
        name="iCloud Drive",
        processes={"windows": ("iCloudDrive.exe", "iCloudServices.exe"), "darwin": ("bird",)},  # Win [S]; mac [NF]
        sources=(
            Source("syncroot", ("windows",), "iCloud*", note="[S] Store app registers a Cloud Files root"),
            # Weakest evidence: the default folders, not a record written by the client. [NF]
            Source("folder", ("windows",), "{USERPROFILE}/iCloudDrive", weak=True, note="[NF] default folder"),
            Source("folder", ("darwin",), "~/Library/Mobile Documents/com~apple~CloudDocs", weak=True,
                   note="[NF] default folder"),
        ),
        conflicts=(ConflictPattern(r" \d+", False, "report 2.txt", "[NF] commonly 'name 2.ext'"),),
        offline_fix='right-click "{path}", "Always keep on this device" (macOS: "Keep Downloaded")',
    ),
    CloudClient(
        key="nextcloud",
        name="Nextcloud",
        processes={"windows": ("nextcloud.exe",), "darwin": ("nextcloud", "Nextcloud"), "linux": ("nextcloud",)},  # [S]
        sources=(
            Source("file", ("windows",), "{APPDATA}/Nextcloud/nextcloud.cfg", parse=parse_qt_folders, note="[S]"),
            Source("file", ("darwin",), "~/Library/Preferences/Nextcloud/nextcloud.cfg", parse=parse_qt_folders,
                   note="[S]"),
            Source("file", ("linux",), "{XDG_CONFIG_HOME}/Nextcloud/nextcloud.cfg", parse=parse_qt_folders, note="[S]"),
            Source("file", ("linux",),
                   "~/.var/app/com.nextcloud.desktopclient.nextcloud/config/Nextcloud/nextcloud.cfg",
                   parse=parse_qt_folders, note="[NF] Flatpak"),
        ),
        conflicts=(
            ConflictPattern(r" \(conflicted copy (?:[^()]* )?\d{4}-\d{2}-\d{2} \d{6}\)(?: \(\d+\))?", True,
                            "report (conflicted copy 2026-11-24 101500).txt", "[V] Nextcloud desktop manual"),
            ConflictPattern(r"_conflict(?:-[^.]*?)?-\d{8}-\d{6}(?: \(\d+\))?", True,
                            "report_conflict-20261124-101500.txt", "[S] older clients"),
        ),
        temp_files=(r"^\..+\.~[0-9a-f]+$",),  # [S] partial downloads ".name.~1a2b"
        offline_fix='right-click "{path}", "Always available locally" (virtual files mode)',
    ),
    CloudClient(
        key="owncloud",
        name="ownCloud",
        processes={"windows": ("owncloud.exe",), "darwin": ("owncloud",), "linux": ("owncloud",)},  # [S]/[NF]
        sources=(
            Source("file", ("windows",), "{APPDATA}/ownCloud/owncloud.cfg", parse=parse_qt_folders, note="[NF]"),
            Source("file", ("darwin",), "~/Library/Preferences/ownCloud/owncloud.cfg", parse=parse_qt_folders,
                   note="[NF]"),
            Source("file", ("linux",), "{XDG_CONFIG_HOME}/ownCloud/owncloud.cfg", parse=parse_qt_folders, note="[NF]"),
        ),
        conflicts=(
            ConflictPattern(r"_conflict(?:-[^.]*?)?-\d{8}-\d{6}(?: \(\d+\))?", True,
                            "report_conflict-20261124-101500.txt", "[S] owncloud/android#815"),
        ),
        temp_files=(r"^\..+\.~[0-9a-f]+$",),  # [S]
        offline_fix='right-click "{path}", "Always available locally" (virtual files mode)',
    ),
)


# -- discovery ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClientRoot:
    """A folder that a client's own configuration says it keeps in sync."""

    client: CloudClient
    label: str  # "personal", "Business1", "mirrored folder"...
    path: str
    evidence: str  # where it was read, for the finding
    weak: bool = False
    rank: int = 0  # lower is stronger evidence: 0 configuration, 1 specific variable, 2 generic, 3 default folder

    @property
    def title(self) -> str:
        if self.label and self.label.casefold() not in self.client.name.casefold():
            return f"{self.client.name} ({self.label})"
        return self.client.name


def _template_vars(system: System) -> dict[str, str]:
    env = {k.upper(): v for k, v in system.env.items()}
    home = str(system.home)
    return {
        "USERPROFILE": env.get("USERPROFILE", home),
        "LOCALAPPDATA": env.get("LOCALAPPDATA", os.path.join(home, "AppData", "Local")),
        "APPDATA": env.get("APPDATA", os.path.join(home, "AppData", "Roaming")),
        "XDG_CONFIG_HOME": env.get("XDG_CONFIG_HOME", os.path.join(home, ".config")),
    }


def expand(template: str, system: System) -> str:
    """A path template with ``~`` and ``{LOCALAPPDATA}``-style names filled in for this user."""
    text = template
    if text.startswith("~/"):
        text = str(system.home) + text[1:]
    return text.format(**_template_vars(system))


def _expand_env(value: str, system: System) -> str:
    """``%USERPROFILE%\\x`` (REG_EXPAND_SZ values come back unexpanded)."""
    env = {k.upper(): v for k, v in system.env.items()}
    env.setdefault("USERPROFILE", str(system.home))
    return re.sub(r"%([^%]+)%", lambda m: env.get(m.group(1).upper(), m.group(0)), value)


def _registry_keys(pattern: str, system: System) -> list[str]:
    """Registry keys matching a path with ``*`` in some components."""
    parts = pattern.split("\\")
    keys = [parts[0]]
    for part in parts[1:]:
        nxt: list[str] = []
        for k in keys:
            if any(c in part for c in "*?["):
                nxt.extend(f"{k}\\{s}" for s in system.registry_subkeys(k)
                           if fnmatch.fnmatch(s.casefold(), part.casefold()))
            else:
                nxt.append(f"{k}\\{part}")
        keys = nxt
    return keys


def _from_source(src: Source, system: System) -> list[tuple[str, str, str]]:
    """(label, path, evidence) found by one source; raises on unreadable input (the caller notes it)."""
    out: list[tuple[str, str, str]] = []
    if src.kind == "file":
        pattern = expand(src.where, system)
        paths = sorted(glob.glob(pattern), key=os.path.getmtime, reverse=True) if "*" in pattern else [pattern]
        for p in paths:
            if os.path.isfile(p) and src.parse is not None:
                out.extend((src.label or label, folder, p) for label, folder in src.parse(Path(p)))
    elif src.kind == "registry":
        for key in _registry_keys(src.where, system):
            values = system.registry_values(key)
            if src.value not in values:
                continue
            raw = values[src.value]
            found = src.parse(raw) if src.parse else [("", str(raw))]
            label = src.label.replace("{key}", key.rsplit("\\", 1)[-1])
            out.extend((label or lab, folder, f"{key}\\{src.value}") for lab, folder in found)
    elif src.kind == "env":
        for name, value in system.env.items():
            if name.upper() == src.where.upper() and value:
                out.append((src.label, value, f"%{src.where}%"))
    elif src.kind == "syncroot":
        sid = system.user_sid()
        if sid:
            for sub in system.registry_subkeys(SYNC_ROOT_MANAGER):
                provider, _, rest = sub.partition("!")
                owner, _, account = rest.partition("!")
                if owner != sid or not fnmatch.fnmatch(provider.casefold(), src.where.casefold()):
                    continue
                if src.value and not fnmatch.fnmatch(account.casefold(), src.value.casefold()):
                    continue
                key = f"{SYNC_ROOT_MANAGER}\\{sub}\\UserSyncRoots"
                folder = system.registry_values(key).get(sid)
                if isinstance(folder, str) and folder:
                    out.append((src.label, folder, key))
    elif src.kind == "folder":
        p = expand(src.where, system)
        if os.path.isdir(p):
            out.append((src.label, p, f"{p} (default folder only)"))
    return out


def _rank(src: Source) -> int:
    if src.weak:
        return 3
    if src.kind == "env":
        return 2 if src.where.upper() == "ONEDRIVE" else 1
    return 0


def find_roots(system: System, clients: Iterable[CloudClient] = CLIENTS) -> tuple[list[ClientRoot], list[str]]:
    """Every sync folder this user's cloud clients record, and the sources that could not be read.

    When two sources name the same folder, the strongest evidence wins (a registry
    key beats ``%OneDrive%``, which beats a default folder); ties go to table order.
    """
    best: dict[str, ClientRoot] = {}
    problems: list[str] = []
    for client in clients:
        for src in client.sources:
            if system.platform not in src.platforms:
                continue
            try:
                found = _from_source(src, system)
            except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError,
                    sqlite3.Error, plistlib.InvalidFileException) as exc:
                problems.append(f"{client.name}: {src.where} could not be read ({exc.__class__.__name__})")
                continue
            for label, folder, evidence in found:
                folder = clean_path(_expand_env(folder, system))
                if not folder:
                    continue
                root = ClientRoot(client, label, folder, evidence, src.weak, _rank(src))
                k = norm_path(folder, system.platform)
                if k not in best or root.rank < best[k].rank:
                    best[k] = root
    return list(best.values()), problems


# -- paths -------------------------------------------------------------------------------------


def clean_path(path: str) -> str:
    """A folder as a client recorded it, made comparable: no quotes, no ``\\\\?\\``, ``G`` -> ``G:\\``."""
    p = path.strip().strip('"').strip()
    if p.startswith("\\\\?\\UNC\\"):
        p = "\\\\" + p[8:]
    elif p.startswith("\\\\?\\") or p.startswith("//?/"):
        p = p[4:]
    if re.fullmatch(r"[A-Za-z]:?[\\/]?", p):
        p = p[0].upper() + ":\\"
    return p


def norm_path(path: str, platform: str) -> str:
    """A comparison key: '/' separators, no '.' or '..', case-folded where the OS ignores case."""
    p = clean_path(path).replace("\\", "/")
    lead = "//" if p.startswith("//") else "/" if p.startswith("/") else ""
    parts: list[str] = []
    for part in p.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts:
            parts.pop()
            continue
        parts.append(part)
    out = lead + "/".join(parts)
    return out.casefold() if platform in ("windows", "darwin") else out


def is_inside(child: str, parent: str, platform: str) -> bool:
    c, p = norm_path(child, platform), norm_path(parent, platform)
    return c == p or c.startswith(p.rstrip("/") + "/")


def locate(path: str, roots: Iterable[ClientRoot], system: System) -> ClientRoot | None:
    """The client folder holding ``path``: the innermost one, the strongest evidence on a tie."""
    real = system.realpath(path)
    hits = [r for r in roots
            if is_inside(real, system.realpath(r.path), system.platform) or is_inside(path, r.path, system.platform)]
    if not hits:
        return None
    return min(hits, key=lambda r: (-len(norm_path(r.path, system.platform)), r.rank))


# -- names the clients leave behind ----------------------------------------------------------------


def split_ext(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    return name[:dot], name[dot:]


@dataclasses.dataclass(frozen=True)
class ConflictMatch:
    client: CloudClient
    original: str  # the name the copy was made from


_COMPILED: dict[str, re.Pattern[str]] = {}


def _compiled(regex: str) -> re.Pattern[str]:
    if regex not in _COMPILED:
        _COMPILED[regex] = re.compile(regex)
    return _COMPILED[regex]


def match_conflict(name: str, known: Callable[[str], bool], clients: Iterable[CloudClient] = CLIENTS,
                   prefer: CloudClient | None = None) -> ConflictMatch | None:
    """The client whose conflicted-copy naming explains ``name``, if any.

    ``known(base)`` says whether ``base`` is a name the copy could have been made
    from (a relay file's name, or a file beside it); it is required for the
    non-distinctive patterns. ``prefer`` (the client that holds the relay) wins
    when several clients name copies the same way.
    """
    stem, ext = split_ext(name)
    ordered = list(clients)
    if prefer is not None and prefer in ordered:
        ordered.remove(prefer)
        ordered.insert(0, prefer)
    for distinctive in (True, False):
        for client in ordered:
            for pat in client.conflicts:
                if pat.distinctive != distinctive:
                    continue
                rx = _compiled(pat.regex)
                for i in range(1, len(stem)):
                    if rx.fullmatch(stem, i):
                        base = stem[:i] + ext
                        if distinctive or known(base):
                            return ConflictMatch(client, base)
    return None


def match_temp(name: str, clients: Iterable[CloudClient] = CLIENTS) -> str | None:
    """Who leaves files named like ``name`` in transit: a client's name, "cloud client" or None."""
    for client in clients:
        for rx in client.temp_files:
            if _compiled(rx).search(name):
                return client.name
    for rx in GENERIC_TEMP_FILES:
        if _compiled(rx).search(name):
            return "a cloud client or editor"
    return None


def describe_roots(roots: Iterable[ClientRoot]) -> str:
    return "; ".join(f"{r.title} at {r.path}" for r in roots)
