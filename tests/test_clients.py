"""The cloud-client table: each client's folder is found from its own configuration, on a faked machine.

Every test fakes one user's machine in ``tmp_path`` (the home folder, and
%LOCALAPPDATA% / %APPDATA% inside it), with registry values as a dict and a
process list, through :class:`peersync.health.FakeSystem`. A Windows user is
acted out on Linux: only strings and files are involved.
"""

from __future__ import annotations

import dataclasses
import json
import plistlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from cloudsim import CONFLICT_STYLES, conflict_copy_name

from peersync.health import CLIENTS, Doctor, FakeSystem, ProcInfo, RealSystem, find_roots, locate
from peersync.health import clients as cl
from peersync.health.checks import parse_standby
from peersync.health.winattrs import (
    FILE_ATTRIBUTE_PINNED,
    FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS,
    FILE_ATTRIBUTE_UNPINNED,
    is_placeholder,
    placeholder_flags,
)
from peersync.state import State

FIXTURES = Path(__file__).parent / "fixtures" / "clients"
USER = "alice"
SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
OTHER_SID = "S-1-5-21-1004336348-1177238915-682003330-1002"
SRM = cl.SYNC_ROOT_MANAGER


@dataclasses.dataclass
class Case:
    """One faked machine: where the relay is, and which client should be found holding it."""

    key: str  # the expected client
    platform: str
    relay: str
    process: str  # the client's process name on that platform
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    registry: dict[str, dict[str, object]] = dataclasses.field(default_factory=dict)
    sid: str | None = None
    label: str = ""  # expected in the root's label, if set
    weak: bool = False
    proc_user: str = USER


def win_env(home: Path) -> dict[str, str]:
    return {"USERPROFILE": str(home), "LOCALAPPDATA": str(home / "AppData" / "Local"),
            "APPDATA": str(home / "AppData" / "Roaming"), "USERNAME": USER}


def put(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, "utf-8")
    else:
        path.write_bytes(data)
    return path


def dropbox_info(personal: Path, business: Path) -> str:
    text = (FIXTURES / "dropbox-info.json").read_text("utf-8")
    return text.replace("{PERSONAL}", json.dumps(str(personal))[1:-1]).replace(
        "{BUSINESS}", json.dumps(str(business))[1:-1])


# -- one builder per client and way of finding it ------------------------------------------------


def dropbox_windows(home: Path) -> Case:
    put(home / "AppData/Local/Dropbox/info.json", dropbox_info(home / "Dropbox", home / "Dropbox (Contoso)"))
    return Case("dropbox", "windows", str(home / "Dropbox" / "peersync-relay"), "Dropbox.exe", win_env(home),
                label="personal", proc_user=f"DESKTOP-1\\{USER}")


def dropbox_business_windows_roaming(home: Path) -> Case:
    """Older Dropbox installs keep info.json under %APPDATA%."""
    put(home / "AppData/Roaming/Dropbox/info.json", dropbox_info(home / "Dropbox", home / "Dropbox (Contoso)"))
    return Case("dropbox", "windows", str(home / "Dropbox (Contoso)" / "relay"), "Dropbox.exe", win_env(home),
                label="business")


def dropbox_windows_store_app(home: Path) -> Case:
    put(home / "AppData/Local/Packages/DropboxInc.Dropbox_wkt4tmf9z4xay/LocalCache/Local/Dropbox/info.json",
        dropbox_info(home / "Dropbox", home / "Dropbox (Contoso)"))
    return Case("dropbox", "windows", str(home / "Dropbox" / "relay"), "Dropbox.exe", win_env(home))


def dropbox_linux(home: Path) -> Case:
    put(home / ".dropbox/info.json", json.dumps({"personal": {"path": str(home / "Dropbox")}}))
    return Case("dropbox", "linux", str(home / "Dropbox" / "relay"), "dropbox")


def dropbox_macos(home: Path) -> Case:
    put(home / ".dropbox/info.json", json.dumps({"personal": {"path": str(home / "Dropbox")}}))
    return Case("dropbox", "darwin", str(home / "Dropbox" / "Relay"), "Dropbox")


def dropbox_syncroot(home: Path) -> Case:
    """Dropbox registered as a Cloud Files provider: found from SyncRootManager, for this SID only."""
    reg = {
        f"{SRM}\\Dropbox!{SID}!dbid:AADS_xyz\\UserSyncRoots": {SID: str(home / "Dropbox")},
        f"{SRM}\\Dropbox!{OTHER_SID}!dbid:AADS_abc\\UserSyncRoots": {OTHER_SID: str(home / "Bob's Dropbox")},
    }
    return Case("dropbox", "windows", str(home / "Dropbox" / "relay"), "Dropbox.exe", win_env(home), reg, SID)


def onedrive_personal_registry(home: Path) -> Case:
    reg = {"HKCU\\Software\\Microsoft\\OneDrive\\Accounts\\Personal": {
        "UserFolder": str(home / "OneDrive"), "UserEmail": "alice@example.invalid"}}
    return Case("onedrive-personal", "windows", str(home / "OneDrive" / "peersync"), "OneDrive.exe",
                win_env(home), reg, label="Personal", proc_user=f"LAPTOP-7\\{USER.upper()}")


def onedrive_personal_env(home: Path) -> Case:
    env = dict(win_env(home), OneDrive=str(home / "OneDrive"))
    return Case("onedrive-personal", "windows", str(home / "OneDrive" / "relay"), "OneDrive.exe", env)


def onedrive_personal_syncroot(home: Path) -> Case:
    reg = {f"{SRM}\\OneDrive!{SID}!Personal|ae8e5f2d\\UserSyncRoots": {SID: str(home / "OneDrive")},
           f"{SRM}\\OneDrive!{OTHER_SID}!Personal|0000\\UserSyncRoots": {OTHER_SID: str(home)}}
    return Case("onedrive-personal", "windows", str(home / "OneDrive" / "relay"), "OneDrive.exe", win_env(home),
                reg, SID)


def onedrive_business_registry(home: Path) -> Case:
    """A business-only user: %OneDrive% names the business folder too; the registry's label wins."""
    folder = home / "OneDrive - Contoso"
    reg = {"HKCU\\Software\\Microsoft\\OneDrive\\Accounts\\Business1": {
        "UserFolder": str(folder), "DisplayName": "Contoso"}}
    env = dict(win_env(home), OneDrive=str(folder))
    return Case("onedrive-business", "windows", str(folder / "Sales" / "relay"), "OneDrive.exe", env, reg,
                label="Business1")


def onedrive_business_env(home: Path) -> Case:
    env = dict(win_env(home), OneDriveCommercial=str(home / "OneDrive - Contoso"))
    return Case("onedrive-business", "windows", str(home / "OneDrive - Contoso" / "relay"), "OneDrive.exe", env)


def google_drive_registry(home: Path) -> Case:
    """Streamed Google Drive on drive letter G: (the registry gives just "G")."""
    prefs = {"per_account_preferences": [{"key": "108397542208085523603",
                                          "value": {"mount_point_path": "G", "machine_root_doc_id": "x"}}]}
    reg = {"HKCU\\Software\\Google\\DriveFS": {"PerAccountPreferences": json.dumps(prefs)}}
    return Case("google-drive", "windows", "G:\\My Drive\\peersync-relay", "GoogleDriveFS.exe", win_env(home), reg)


def google_drive_mirror_db(home: Path) -> Case:
    """A mirrored My Drive folder, recorded in root_preference_sqlite.db with a \\\\?\\ prefix."""
    db_path = home / "AppData/Local/Google/DriveFS/root_preference_sqlite.db"
    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE roots(id INTEGER, title TEXT, last_seen_absolute_path TEXT, is_my_drive INTEGER)")
    db.execute("CREATE TABLE media(id INTEGER, fs_type INTEGER, last_mount_point TEXT)")
    db.execute("INSERT INTO roots VALUES(1, 'My Drive', ?, 1)", ("\\\\?\\" + str(home / "My Drive"),))
    db.execute("INSERT INTO media VALUES(1, 10, 'H:\\')")
    db.commit()
    db.close()
    return Case("google-drive", "windows", str(home / "My Drive" / "relay"), "GoogleDriveFS.exe", win_env(home))


def google_drive_macos_plist(home: Path) -> Case:
    prefs = {"per_account_preferences": [{"key": "1", "value": {"mount_point_path": str(home / "GoogleDrive")}}]}
    with open(put(home / "Library/Preferences/com.google.drivefs.settings.plist", b""), "wb") as f:
        plistlib.dump({"PerAccountPreferences": json.dumps(prefs)}, f)
    return Case("google-drive", "darwin", str(home / "GoogleDrive" / "My Drive" / "relay"), "Google Drive")


def google_backup_and_sync(home: Path) -> Case:
    db_path = home / "AppData/Local/Google/Drive/user_default/sync_config.db"
    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE data(entry_key TEXT, data_key TEXT, data_value TEXT)")
    db.execute("INSERT INTO data VALUES('user_email', 'value', 'alice@example.invalid')")
    db.execute("INSERT INTO data VALUES('local_sync_root_path', 'value', ?)", ("\\\\?\\" + str(home / "Google Drive"),))
    db.commit()
    db.close()
    return Case("google-backup-sync", "windows", str(home / "Google Drive" / "relay"), "googledrivesync.exe",
                win_env(home))


def box_drive(home: Path) -> Case:
    """Box writes sync_root_folder.txt; read as UTF-16 with a byte-order mark as well as UTF-8."""
    put(home / "AppData/Local/Box/Box/data/shell/sync_root_folder.txt", str(home / "Box").encode("utf-16"))
    return Case("box", "windows", str(home / "Box" / "relay"), "Box.exe", win_env(home))


def box_sync_legacy(home: Path) -> Case:
    put(home / "AppData/Local/Box Sync/sync_root_folder.txt", str(home / "Box Sync") + "\r\n")
    return Case("box", "windows", str(home / "Box Sync" / "relay"), "Box.exe", win_env(home), label="Box Sync")


def icloud_windows_default_folder(home: Path) -> Case:
    (home / "iCloudDrive").mkdir()
    return Case("icloud", "windows", str(home / "iCloudDrive" / "relay"), "iCloudDrive.exe", win_env(home), weak=True)


def icloud_windows_syncroot(home: Path) -> Case:
    reg = {f"{SRM}\\iCloudDrive!{SID}!Account\\UserSyncRoots": {SID: str(home / "iCloudDrive")}}
    return Case("icloud", "windows", str(home / "iCloudDrive" / "relay"), "iCloudDrive.exe", win_env(home), reg, SID)


def icloud_macos(home: Path) -> Case:
    (home / "Library/Mobile Documents/com~apple~CloudDocs").mkdir(parents=True)
    return Case("icloud", "darwin", str(home / "Library/Mobile Documents/com~apple~CloudDocs/relay"), "bird",
                weak=True)


def nextcloud_windows(home: Path) -> Case:
    put(home / "AppData/Roaming/Nextcloud/nextcloud.cfg",
        (FIXTURES / "nextcloud.cfg").read_text("utf-8").replace("{ROOT}", home.as_posix()))
    return Case("nextcloud", "windows", str(home / "Nextcloud" / "relay"), "nextcloud.exe", win_env(home))


def nextcloud_linux_virtual_files(home: Path) -> Case:
    put(home / ".config/Nextcloud/nextcloud.cfg",
        (FIXTURES / "nextcloud.cfg").read_text("utf-8").replace("{ROOT}", home.as_posix()))
    return Case("nextcloud", "linux", str(home / "Nextcloud Work" / "relay"), "nextcloud", label="virtual files")


def owncloud_linux(home: Path) -> Case:
    put(home / "xdg/ownCloud/owncloud.cfg",
        f"[Accounts]\n0\\Folders\\1\\localPath={home.as_posix()}/ownCloud/\n0\\url=https://oc.example.invalid\n")
    return Case("owncloud", "linux", str(home / "ownCloud" / "relay"), "owncloud",
                env={"XDG_CONFIG_HOME": str(home / "xdg")})


def owncloud_windows(home: Path) -> Case:
    put(home / "AppData/Roaming/ownCloud/owncloud.cfg",
        f"[Accounts]\n0\\Folders\\1\\localPath={home.as_posix()}/ownCloud/\n")
    return Case("owncloud", "windows", str(home / "ownCloud" / "relay"), "owncloud.exe", win_env(home))


CASES: list[Callable[[Path], Case]] = [
    dropbox_windows, dropbox_business_windows_roaming, dropbox_windows_store_app, dropbox_linux, dropbox_macos,
    dropbox_syncroot, onedrive_personal_registry, onedrive_personal_env, onedrive_personal_syncroot,
    onedrive_business_registry, onedrive_business_env, google_drive_registry, google_drive_mirror_db,
    google_drive_macos_plist, google_backup_and_sync, box_drive, box_sync_legacy, icloud_windows_default_folder,
    icloud_windows_syncroot, icloud_macos, nextcloud_windows, nextcloud_linux_virtual_files, owncloud_linux,
    owncloud_windows,
]


def machine(case: Case, home: Path, processes: list[ProcInfo] | None = None) -> FakeSystem:
    if processes is None:
        processes = [ProcInfo(4, "System", "NT AUTHORITY\\SYSTEM"), ProcInfo(4711, case.process, case.proc_user)]
    return FakeSystem(case.platform, home, case.env, user=USER, registry=case.registry, sid=case.sid,
                      processes=processes)


def cloud_checks(system: FakeSystem, home: Path, relay: str) -> dict[str, object]:
    doctor = Doctor(State(home / "no-state"), system)
    doctor.check_relay_cloud("relay:t", relay)
    return {c.id: c for c in doctor.checks}


@pytest.mark.parametrize("build", CASES, ids=lambda f: f.__name__)
def test_relay_inside_a_client_folder_is_recognised_and_its_process_found(build, tmp_path):
    case = build(tmp_path)
    system = machine(case, tmp_path)
    roots, problems = find_roots(system)
    assert problems == []
    hit = locate(case.relay, roots, system)
    assert hit is not None, roots
    assert hit.client.key == case.key
    assert case.label in hit.label
    assert hit.weak is case.weak
    checks = cloud_checks(system, tmp_path, case.relay)
    cloud, client = checks["relay:t:cloud"], checks["relay:t:client"]
    assert cloud.status == "ok" and hit.client.name in cloud.finding  # type: ignore[attr-defined]
    assert ("weakest evidence" in cloud.finding) is case.weak  # type: ignore[attr-defined]
    assert client.status == "ok", client  # type: ignore[attr-defined]


@pytest.mark.parametrize("build", CASES, ids=lambda f: f.__name__)
def test_client_not_running_is_a_warning(build, tmp_path):
    case = build(tmp_path)
    checks = cloud_checks(machine(case, tmp_path, processes=[]), tmp_path, case.relay)
    client = checks["relay:t:client"]
    assert client.status == "warn" and "not running" in client.finding  # type: ignore[attr-defined]


@pytest.mark.parametrize("build", [dropbox_windows, onedrive_personal_registry, nextcloud_linux_virtual_files],
                         ids=lambda f: f.__name__)
def test_client_running_only_for_another_user_is_a_warning(build, tmp_path):
    """Cloud clients are per user: bob's OneDrive does not upload alice's relay."""
    case = build(tmp_path)
    others = [ProcInfo(900, case.process, "DESKTOP-1\\bob"), ProcInfo(901, case.process, None)]
    checks = cloud_checks(machine(case, tmp_path, processes=others), tmp_path, case.relay)
    client = checks["relay:t:client"]
    assert client.status == "warn"  # type: ignore[attr-defined]
    assert "bob" in client.finding and "not for alice" in client.finding  # type: ignore[attr-defined]


def test_every_client_in_the_table_has_a_case(tmp_path):
    covered = set()
    for i, build in enumerate(CASES):
        home = tmp_path / str(i)
        home.mkdir()
        covered.add(build(home).key)
    assert covered == {c.key for c in CLIENTS}


def test_a_folder_merely_named_like_a_client_is_not_recognised(tmp_path):
    """Only the client's own records count: ~/Dropbox without info.json is just a folder."""
    (tmp_path / "Dropbox").mkdir()
    (tmp_path / "OneDrive").mkdir()
    system = FakeSystem("windows", tmp_path, win_env(tmp_path), user=USER)
    roots, _ = find_roots(system)
    assert roots == []
    checks = cloud_checks(system, tmp_path, str(tmp_path / "Dropbox" / "relay"))
    assert checks["relay:t:cloud"].status == "info"  # type: ignore[attr-defined]
    assert "relay:t:client" not in checks


def test_another_windows_users_sync_root_is_not_ours(tmp_path):
    """SyncRootManager lists every user's roots on the machine; only our SID's count (Invariant 6)."""
    reg = {f"{SRM}\\OneDrive!{OTHER_SID}!Personal|1\\UserSyncRoots": {OTHER_SID: str(tmp_path / "OneDrive")}}
    system = FakeSystem("windows", tmp_path, win_env(tmp_path), user=USER, registry=reg, sid=SID)
    assert find_roots(system)[0] == []


def test_sibling_with_a_longer_name_is_not_inside(tmp_path):
    put(tmp_path / ".dropbox/info.json", json.dumps({"personal": {"path": str(tmp_path / "Dropbox")}}))
    system = FakeSystem("linux", tmp_path, user=USER)
    roots, _ = find_roots(system)
    assert locate(str(tmp_path / "Dropbox2" / "relay"), roots, system) is None
    assert locate(str(tmp_path / "dropbox" / "relay"), roots, system) is None  # Linux is case-sensitive


def test_unreadable_configuration_is_noted_not_fatal(tmp_path):
    put(tmp_path / ".dropbox/info.json", "{not json")
    put(tmp_path / ".config/Nextcloud/nextcloud.cfg", "[Accounts]\n0\\Folders\\1\\localPath=/srv/nc/\n")
    roots, problems = find_roots(FakeSystem("linux", tmp_path, user=USER))
    assert [r.client.key for r in roots] == ["nextcloud"]
    assert len(problems) == 1 and "Dropbox" in problems[0]


def test_innermost_root_wins(tmp_path):
    """A Nextcloud folder inside a Dropbox folder: the relay belongs to the inner one."""
    put(tmp_path / ".dropbox/info.json", json.dumps({"personal": {"path": str(tmp_path / "Dropbox")}}))
    put(tmp_path / ".config/Nextcloud/nextcloud.cfg",
        f"[Accounts]\n0\\Folders\\1\\localPath={tmp_path / 'Dropbox' / 'nc'}/\n")
    system = FakeSystem("linux", tmp_path, user=USER)
    hit = locate(str(tmp_path / "Dropbox" / "nc" / "relay"), find_roots(system)[0], system)
    assert hit is not None and hit.client.key == "nextcloud"


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize("child,parent,inside", [
    ("C:\\Users\\Alice\\Dropbox\\relay", "c:/users/alice/dropbox", True),
    ("\\\\?\\C:\\Users\\Alice\\Dropbox\\relay", "C:\\Users\\Alice\\Dropbox\\", True),
    ("C:\\Users\\Alice\\Dropbox2\\relay", "C:\\Users\\Alice\\Dropbox", False),
    ("G:\\My Drive\\relay", "G", True),
    ("G:\\My Drive\\relay", "H:", False),
    ("C:\\Users\\Alice\\Dropbox\\..\\OneDrive\\relay", "C:\\Users\\Alice\\Dropbox", False),
    ("\\\\server\\share\\relay", "\\\\?\\UNC\\server\\share", True),
])
def test_windows_paths(child, parent, inside):
    assert cl.is_inside(child, parent, "windows") is inside


# -- names the services leave behind -------------------------------------------------------------------


@pytest.mark.parametrize("client,pattern", [(c, p) for c in CLIENTS for p in c.conflicts],
                         ids=lambda x: getattr(x, "key", None) or getattr(x, "example", ""))
def test_each_conflict_pattern_recognises_its_example(client, pattern):
    match = cl.match_conflict(pattern.example, known=lambda base: base == "report.txt", clients=[client])
    assert match is not None and match.original == "report.txt"


@pytest.mark.parametrize("style", CONFLICT_STYLES)
@pytest.mark.parametrize("name", ["heartbeat.json", "peer.json", "store.json", "000000000012.psb"])
@pytest.mark.parametrize("n", [0, 1])
def test_cloud_copies_of_relay_files_are_recognised(style, name, n):
    """The simulator's copies (named as each service names them) of every relay file."""
    copy = conflict_copy_name(name, style, user="Bob", computer="DESKTOP-1235", n=n)
    match = cl.match_conflict(copy, known=lambda base: base == name)
    assert match is not None and match.original == name, copy
    expected = {"dropbox": "Dropbox", "nextcloud": "Nextcloud", "onedrive": "OneDrive (personal)",
                "gdrive": "OneDrive (personal)"}[style]
    assert match.client.name == expected


def test_the_client_holding_the_relay_names_an_ambiguous_copy():
    """" (1)" is how OneDrive, Google Drive and others name a duplicate: the relay's client is named."""
    google = next(c for c in CLIENTS if c.key == "google-drive")
    match = cl.match_conflict("heartbeat (1).json", known=lambda b: b == "heartbeat.json", prefer=google)
    assert match is not None and match.client is google


@pytest.mark.parametrize("name", ["heartbeat.json", "peer.json", "store.json", "000000000001.psb",
                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "bundles", "snapshots"])
def test_relay_layout_names_are_never_copies(name):
    assert cl.match_conflict(name, known=lambda base: True) is None


def test_common_patterns_need_a_known_original():
    """"notes (1).txt" may be a user's own file; it is a copy only beside "notes.txt"."""
    assert cl.match_conflict("notes (1).txt", known=lambda base: False) is None
    assert cl.match_conflict("notes-DESKTOP-9.txt", known=lambda base: False) is None
    assert cl.match_conflict("notes (Bob's conflicted copy 2024-01-02).txt", known=lambda base: False) is not None


@pytest.mark.parametrize("name,who", [
    (".~tmp-000000000003.psb", "a cloud client or editor"),
    ("~$Quote.docx", "a cloud client or editor"),
    ("upload.tmp", "a cloud client or editor"),
    (".dropbox.cache", "Dropbox"),
    (".tmp.driveupload", "Google Drive for desktop"),
    (".heartbeat.json.~1a2b3c", "Nextcloud"),
    ("000000000003.psb", None),
    ("heartbeat.json", None),
])
def test_temporary_file_names(name, who):
    assert cl.match_temp(name) == who


# -- attributes, power plan, the real machine --------------------------------------------------------------


def test_placeholder_attributes():
    online_only = FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS | FILE_ATTRIBUTE_UNPINNED
    assert is_placeholder(online_only)
    assert len(placeholder_flags(online_only)) == 2
    assert not is_placeholder(FILE_ATTRIBUTE_PINNED | 0x20)  # pinned + archive: kept on disk


@pytest.mark.parametrize("fixture,expected", [
    ("powercfg-standbyidle-en.txt", (1800, 900)),
    ("powercfg-standbyidle-fr.txt", (0, 900)),
])
def test_powercfg_output_is_read_whatever_the_language(fixture, expected):
    assert parse_standby((FIXTURES / fixture).read_text("utf-8")) == expected
    assert parse_standby("Access denied.") is None


def test_real_machine_discovery_does_not_crash():
    roots, problems = find_roots(RealSystem())
    assert isinstance(roots, list) and isinstance(problems, list)


def test_real_machine_with_nothing_installed_reports_no_client(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))
    for var in ("XDG_CONFIG_HOME", "LOCALAPPDATA", "APPDATA", "OneDrive", "OneDriveCommercial", "OneDriveConsumer"):
        monkeypatch.delenv(var, raising=False)
    system = RealSystem()
    assert find_roots(system) == ([], [])
    doctor = Doctor(State(tmp_path / "state"), system)
    doctor.check_cloud_clients()
    (check,) = doctor.checks
    assert check.status == "info" and "no recognised cloud client" in check.finding
