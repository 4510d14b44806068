"""Service registration (peersync.svc) and the sysadmins' install scripts (scripts/).

Every platform's registration runs here on any machine: the unit file, plist
and task XML are pure text that the tests parse, and every systemctl,
launchctl or schtasks call goes through a fake that behaves like the real
tool (enabled, loaded, running) and records its arguments. install.sh runs end
to end in a temporary home with a fake systemctl (or launchctl) on PATH.
Only what needs a missing tool is skipped: ``systemd-analyze``,
``shellcheck``, ``pwsh``.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import os
import plistlib
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import textwrap
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from peersync import svc
from peersync.errors import RefusedError, StateError, UsageError
from peersync.state import State
from peersync.store import init_store, make_invite
from peersync.svc.host import Completed, Host
from peersync.svc.windows import NS as TASK_NS

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
T = f"{{{TASK_NS}}}"
POSIX = sys.platform != "win32"


# -- a fake machine ------------------------------------------------------------------------


class FakeOS:
    """systemctl --user, launchctl and schtasks as far as registration uses them, with their state."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.enabled = False  # systemd: enabled; launchd/schtasks: loaded / registered
        self.running = False
        self.fail: dict[str, Completed] = {}  # a verb that fails, and how

    def mutating(self) -> list[list[str]]:
        queries = {"is-enabled", "is-active", "print", "/Query"}
        return [c for c in self.calls if not queries & set(c)]

    def __call__(self, argv: Sequence[str]) -> Completed:
        argv = list(argv)
        self.calls.append(argv)
        tool, args = argv[0], argv[1:]
        for verb, result in self.fail.items():
            if verb in args:
                return result
        if tool == "systemctl":
            assert args[0] == "--user", "a user unit is driven with systemctl --user only"
            verb = args[1]
            if verb == "is-enabled":
                return Completed(0 if self.enabled else 1, "enabled\n" if self.enabled else "disabled\n")
            if verb == "is-active":
                return Completed(0 if self.running else 3, "active\n" if self.running else "inactive\n")
            if verb == "enable":
                self.enabled = True
                self.running = self.running or "--now" in args
            elif verb == "disable":
                self.enabled = False
                self.running = self.running and "--now" not in args
            elif verb == "restart":
                self.running = True
            return Completed(0)
        if tool == "launchctl":
            verb = args[0]
            if verb == "print":
                if not self.enabled:
                    return Completed(113, "", f'Could not find service "{args[1]}" in domain for user gui')
                return Completed(0, f"{args[1]} = {{\n\tstate = {'running' if self.running else 'waiting'}\n}}\n")
            if verb == "bootstrap":
                if self.enabled:
                    return Completed(5, "", "Bootstrap failed: 5: Input/output error")
                self.enabled = self.running = True  # RunAtLoad
            elif verb == "bootout":
                if not self.enabled:
                    return Completed(3, "", "Boot-out failed: 3: No such process")
                self.enabled = self.running = False
            elif verb == "kickstart":
                self.running = True
            return Completed(0)
        if tool == "schtasks":
            verb = args[0]
            if verb == "/Query":
                if not self.enabled:
                    return Completed(1, "", "ERROR: The system cannot find the file specified.")
                return Completed(0, f'"\\{args[2]}","N/A","{"Running" if self.running else "Ready"}"\n')
            if verb == "/Create":
                self.enabled = True
            elif verb == "/Run":
                self.running = True
            elif verb == "/End":
                self.running = False
            elif verb == "/Delete":
                self.enabled = self.running = False
            return Completed(0, "SUCCESS\n")
        return Completed(127, "", f"{tool} is not installed")


PLATFORMS = ["linux", "darwin", "win32"]


def make_host(tmp_path: Path, platform: str, fake: FakeOS, *, user: str | None = None,
              peersync_home: str | None = None, python: str | None = None, **env: str) -> Host:
    home = tmp_path / "home"
    home.mkdir(parents=True, exist_ok=True)
    if user is None:
        user = "PC\\alice" if platform == "win32" else "alice"
    uid = None if platform == "win32" else (os.getuid() if POSIX else 501)
    return Host(platform, home, user, uid, python or sys.executable, peersync_home, fake, dict(env))


@pytest.fixture
def state(tmp_path: Path) -> State:
    return State(tmp_path / "state")


def spec(**kw: str | None) -> svc.ServiceSpec:
    values: dict[str, str | None] = {"python": "/home/alice/.local/share/peersync/venv/bin/python",
                                     "user": "alice", "home": "/home/alice", "peersync_home": None}
    values.update(kw)
    return svc.ServiceSpec(**values)  # type: ignore[arg-type]


# -- the systemd user unit ----------------------------------------------------------------------


def parse_unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#", ";"),
                                       strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def systemd_words(line: str) -> list[str]:
    """A command line as systemd splits it (double quotes, C escapes), then its %% and $$ undone."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


def test_unit_runs_this_python_for_this_user_and_restarts_on_failure() -> None:
    unit = parse_unit(svc.render_unit(spec()))
    assert unit.sections() == ["Unit", "Service", "Install"]
    assert unit["Service"]["ExecStart"] == "/home/alice/.local/share/peersync/venv/bin/python -m peersync run"
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "default.target"  # started with the user's session
    assert "alice" in unit["Unit"]["Description"]
    assert "Environment" not in unit["Service"]  # no PEERSYNC_HOME: the platform's default state folder


def test_unit_carries_peersync_home_when_set() -> None:
    unit = parse_unit(svc.render_unit(spec(peersync_home="/srv/peersync/alice")))
    assert unit["Service"]["Environment"] == "PEERSYNC_HOME=/srv/peersync/alice"


def test_unit_quotes_odd_paths_so_systemd_reads_them_back() -> None:
    """Spaces, quotes, backslashes, % (a systemd specifier) and $ (a variable) survive the round trip."""
    python = '/opt/my apps/100% "py"\\$HOME/bin/python'
    home = "/data/peer sync/50%$x"
    unit = parse_unit(svc.render_unit(spec(python=python, peersync_home=home)))
    assert systemd_words(unit["Service"]["ExecStart"]) == [python, "-m", "peersync", "run"]
    env = shlex.split(unit["Service"]["Environment"])
    assert [e.replace("%%", "%") for e in env] == [f"PEERSYNC_HOME={home}"]


def test_unit_refuses_a_path_with_a_line_break() -> None:
    with pytest.raises(svc.ServiceError):
        svc.render_unit(spec(peersync_home="/tmp/a\n[Service]\nExecStartPre=/bin/evil"))


def _verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), HOME=str(tmp_path), SYSTEMD_LOG_COLOR="0")
    return subprocess.run(["systemd-analyze", "verify", "--user", str(unit)], capture_output=True, text=True,
                          env=env, timeout=60)


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = svc.render_unit(spec(python=sys.executable, peersync_home=str(tmp_path / "state dir")))
    unit = tmp_path / "peersync.service"
    unit.write_text(text)
    parse_unit(text)  # the parse above runs everywhere; only the tool's opinion needs the tool
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    done = _verify(unit, tmp_path)
    assert done.returncode == 0 and "peersync.service" not in done.stderr, done.stderr
    # ...and the check can fail: systemd only warns about a bad Restart= value.
    unit.write_text(text.replace("Restart=on-failure", "Restart=sometimes"))
    assert "peersync.service" in _verify(unit, tmp_path).stderr


# -- the launchd LaunchAgent ---------------------------------------------------------------------


def test_plist_starts_at_load_and_restarts_after_a_failure() -> None:
    plist = plistlib.loads(svc.render_plist(spec()).encode())
    assert plist["Label"] == "net.peersync.agent"
    assert plist["ProgramArguments"] == ["/home/alice/.local/share/peersync/venv/bin/python", "-m", "peersync", "run"]
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert "EnvironmentVariables" not in plist
    plist = plistlib.loads(svc.render_plist(spec(peersync_home="/Users/alice/ps")).encode())
    assert plist["EnvironmentVariables"] == {"PEERSYNC_HOME": "/Users/alice/ps"}


# -- the Windows task -------------------------------------------------------------------------

WIN = {"python": "C:\\Users\\alice\\AppData\\Local\\peersync\\venv\\Scripts\\python.exe",
       "user": "PC\\alice", "home": "C:\\Users\\alice"}

#: The order in which Task Scheduler itself exports a task's settings.
SETTINGS_ORDER = ["MultipleInstancesPolicy", "DisallowStartIfOnBatteries", "StopIfGoingOnBatteries",
                  "AllowHardTerminate", "StartWhenAvailable", "RunOnlyIfNetworkAvailable", "IdleSettings",
                  "AllowStartOnDemand", "Enabled", "Hidden", "RunOnlyIfIdle", "WakeToRun", "ExecutionTimeLimit",
                  "Priority", "RestartOnFailure"]


def task(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{T}Task", "every element is in the Task Scheduler namespace"
    return root


def one(root: ET.Element, path: str) -> str:
    """The text of the one element at ``path`` ("Settings/Priority"), every step in the task namespace."""
    found = root.findall("/".join(T + step for step in path.split("/")))
    assert len(found) == 1, (path, len(found))
    return found[0].text or ""


def windows_argv(command_line: str) -> list[str]:
    """Split a command line the way the C runtime (CommandLineToArgvW) does."""
    args: list[str] = []
    word, quoted, backslashes, any_char = "", False, 0, False
    for ch in command_line + " ":
        if ch == "\\":
            backslashes += 1
            continue
        if ch == '"':
            word += "\\" * (backslashes // 2)
            if backslashes % 2:
                word += '"'
            else:
                quoted = not quoted
            backslashes, any_char = 0, True
            continue
        word += "\\" * backslashes
        backslashes = 0
        if ch in " \t" and not quoted:
            if word or any_char:
                args.append(word)
            word, any_char = "", False
        else:
            word += ch
    return args


def test_task_xml_runs_at_this_users_logon_without_admin_rights_and_restarts() -> None:
    root = task(svc.render_task(svc.ServiceSpec(**WIN)))
    assert root.get("version") == "1.2"
    assert one(root, "RegistrationInfo/URI") == "\\peersync-alice"
    assert "PC\\alice" in one(root, "RegistrationInfo/Description")
    triggers = root.find(f"{T}Triggers")
    assert triggers is not None and [t.tag for t in triggers] == [f"{T}LogonTrigger"]
    assert one(root, "Triggers/LogonTrigger/UserId") == "PC\\alice", "this user's logon, not anyone's"
    assert one(root, "Triggers/LogonTrigger/Enabled") == "true"
    assert one(root, "Principals/Principal/UserId") == "PC\\alice"
    assert one(root, "Principals/Principal/LogonType") == "InteractiveToken"
    assert one(root, "Principals/Principal/RunLevel") == "LeastPrivilege"
    assert one(root, "Settings/RestartOnFailure/Interval") == "PT1M"
    assert 1 <= int(one(root, "Settings/RestartOnFailure/Count")) <= 999
    assert one(root, "Settings/ExecutionTimeLimit") == "PT0S", "the default limit would stop it after 72 h"
    assert one(root, "Settings/MultipleInstancesPolicy") == "IgnoreNew"
    assert one(root, "Settings/DisallowStartIfOnBatteries") == "false"
    assert one(root, "Settings/IdleSettings/StopOnIdleEnd") == "false"
    settings = root.find(f"{T}Settings")
    assert settings is not None and [c.tag.removeprefix(T) for c in settings] == SETTINGS_ORDER
    principal = root.find(f"{T}Principals/{T}Principal")
    actions = root.find(f"{T}Actions")
    assert principal is not None and actions is not None and actions.get("Context") == principal.get("id")
    assert one(root, "Actions/Exec/Command").endswith("\\Scripts\\pythonw.exe"), "no console window at logon"
    assert windows_argv(one(root, "Actions/Exec/Arguments")) == ["-m", "peersync", "run"]
    assert one(root, "Actions/Exec/WorkingDirectory") == "C:\\Users\\alice"


def test_task_xml_passes_peersync_home_as_an_argument() -> None:
    """A task cannot set environment variables: PEERSYNC_HOME travels through python -m peersync.svc."""
    home = "D:\\peer sync\\alice\\"
    root = task(svc.render_task(svc.ServiceSpec(**WIN, peersync_home=home)))
    assert windows_argv(one(root, "Actions/Exec/Arguments")) == ["-m", "peersync.svc", "--home", home, "run"]


def test_task_xml_escapes_odd_user_names() -> None:
    root = task(svc.render_task(svc.ServiceSpec(**{**WIN, "user": "CORP\\O'Brien & <Sons>"})))
    assert one(root, "Principals/Principal/UserId") == "CORP\\O'Brien & <Sons>"
    assert one(root, "RegistrationInfo/URI") == "\\peersync-O_Brien____Sons_"


def test_two_windows_users_get_two_tasks() -> None:
    """Task names are machine-wide: each user's task is named after them, so they never collide."""
    names = {svc.task_name(u) for u in ("PC\\alice", "PC\\bob", "CORP\\bob smith")}
    assert names == {"peersync-alice", "peersync-bob", "peersync-bob_smith"}


def test_task_file_is_utf16_as_schtasks_reads_it(tmp_path: Path, state: State) -> None:
    fake = FakeOS()
    host = make_host(tmp_path, "win32", fake, LOCALAPPDATA=str(tmp_path / "lad"))
    svc.install(host, state)
    data = (tmp_path / "lad" / "peersync" / "service" / "peersync-task.xml").read_bytes()
    assert data.startswith(b"\xff\xfe")
    assert data.decode("utf-16").startswith('<?xml version="1.0" encoding="UTF-16"?>')
    assert task(data.decode("utf-16")) is not None
    create = [c for c in fake.calls if "/Create" in c]
    assert create == [["schtasks", "/Create", "/XML", str(tmp_path / "lad" / "peersync" / "service" /
                                                           "peersync-task.xml"), "/TN", "peersync-alice", "/F"]]


def test_svc_main_passes_home_to_peersync(tmp_path: Path) -> None:
    home, relay = tmp_path / "the home", tmp_path / "relay"
    relay.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PEERSYNC_HOME"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "peersync.svc", "--home", str(home), "init", str(tmp_path / "s"),
                           "--relay", str(relay)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (home / "identity.json").exists()


# -- install, again, status, uninstall on every platform ------------------------------------------------


@pytest.mark.parametrize("platform", PLATFORMS)
def test_install_twice_changes_nothing_and_uninstall_keeps_the_data(tmp_path: Path, state: State,
                                                                    platform: str) -> None:
    fake = FakeOS()
    host = make_host(tmp_path, platform, fake)
    relay = tmp_path / "relay"
    relay.mkdir()
    backend = svc.backend_for(platform)
    path = backend.path(host)

    first = svc.install(host, state, store=str(tmp_path / "quotes"), relay=str(relay))
    assert first.changed and "Created store quotes" in first.lines[0]
    assert path.is_file() and fake.enabled and fake.running
    assert str(path).startswith(str(host.home)), "the registration lives in this user's own profile"
    before = path.stat()

    fake.calls.clear()
    again = svc.install(host, state, store=str(tmp_path / "quotes"), relay=str(relay))
    assert not again.changed
    assert "already set up" in again.lines[0] and "already installed" in again.lines[1]
    assert fake.mutating() == [], "a second install touches nothing"
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), "the file was not rewritten"

    st, report = svc.status(host)
    assert st.registered and st.running and "running" in report.lines[0]

    removed = svc.uninstall(host, state)
    assert removed.changed and not path.exists() and not fake.enabled and not fake.running
    assert str(state.root) in removed.lines[-1]
    assert (state.root / "identity.key").exists() and (state.root / "config.json").exists()
    assert (tmp_path / "quotes" / ".peersync").exists()
    st, report = svc.status(host)
    assert not st.registered and not st.running and "not installed" in report.lines[0]
    assert not svc.uninstall(host, state).changed


def test_systemd_commands(tmp_path: Path, state: State) -> None:
    fake = FakeOS()
    host = make_host(tmp_path, "linux", fake)
    svc.install(host, state)
    assert host.home / ".config" / "systemd" / "user" / "peersync.service" == svc.backend_for("linux").path(host)
    assert fake.mutating() == [["systemctl", "--user", "daemon-reload"],
                               ["systemctl", "--user", "enable", "--now", "peersync.service"]]
    fake.calls.clear()
    svc.uninstall(host, state)
    assert ["systemctl", "--user", "disable", "--now", "peersync.service"] in fake.calls


def test_launchd_commands(tmp_path: Path, state: State) -> None:
    fake = FakeOS()
    host = make_host(tmp_path, "darwin", fake)
    svc.install(host, state)
    plist = host.home / "Library" / "LaunchAgents" / "net.peersync.agent.plist"
    uid = host.uid
    assert fake.mutating() == [["launchctl", "enable", f"gui/{uid}/net.peersync.agent"],
                               ["launchctl", "bootstrap", f"gui/{uid}", str(plist)]]
    fake.calls.clear()
    svc.uninstall(host, state)
    assert fake.mutating() == [["launchctl", "bootout", f"gui/{uid}/net.peersync.agent"]]


def test_windows_commands(tmp_path: Path, state: State) -> None:
    fake = FakeOS()
    host = make_host(tmp_path, "win32", fake)
    svc.install(host, state)
    xml = host.home / "AppData" / "Local" / "peersync" / "service" / "peersync-task.xml"
    assert fake.mutating() == [["schtasks", "/Create", "/XML", str(xml), "/TN", "peersync-alice", "/F"],
                               ["schtasks", "/Run", "/TN", "peersync-alice"]]
    fake.calls.clear()
    svc.uninstall(host, state)
    assert fake.mutating() == [["schtasks", "/End", "/TN", "peersync-alice"],
                               ["schtasks", "/Delete", "/TN", "peersync-alice", "/F"]]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_install_after_an_upgrade_rewrites_and_restarts(tmp_path: Path, state: State, platform: str) -> None:
    fake = FakeOS()
    svc.install(make_host(tmp_path, platform, fake), state)
    fake.calls.clear()
    moved = make_host(tmp_path, platform, fake, python=str(tmp_path / "new venv" / "bin" / "python"))
    report = svc.install(moved, state)
    assert report.changed and "updated" in report.lines[0]
    assert fake.enabled and fake.running
    assert str(tmp_path / "new venv") in svc.backend_for(platform).path(moved).read_bytes().decode(
        "utf-16" if platform == "win32" else "utf-8")
    if platform == "linux":
        assert fake.mutating() == [["systemctl", "--user", "daemon-reload"],
                                   ["systemctl", "--user", "enable", "peersync.service"],
                                   ["systemctl", "--user", "restart", "peersync.service"]]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_install_starts_a_stopped_service_without_rewriting(tmp_path: Path, state: State, platform: str) -> None:
    fake = FakeOS()
    host = make_host(tmp_path, platform, fake)
    svc.install(host, state)
    fake.running = False
    mtime = svc.backend_for(platform).path(host).stat().st_mtime_ns
    report = svc.install(host, state)
    assert fake.running and "started it" in report.lines[0]
    assert svc.backend_for(platform).path(host).stat().st_mtime_ns == mtime


@pytest.mark.parametrize("platform", PLATFORMS)
def test_install_restart_restarts_a_running_service(tmp_path: Path, state: State, platform: str) -> None:
    fake = FakeOS()
    host = make_host(tmp_path, platform, fake)
    svc.install(host, state)
    fake.calls.clear()
    report = svc.install(host, state, restart=True)
    assert "restarted" in report.lines[0] and fake.running
    assert fake.mutating(), "a restart command was sent"


def test_peersync_home_reaches_the_registration(tmp_path: Path, state: State) -> None:
    for platform in PLATFORMS:
        host = make_host(tmp_path / platform, platform, FakeOS(), peersync_home=str(state.root))
        svc.install(host, state)
        data = svc.backend_for(platform).path(host).read_bytes()
        text = data.decode("utf-16" if platform == "win32" else "utf-8")
        assert str(state.root) in text, platform


def test_a_failing_systemctl_is_one_clear_sentence(tmp_path: Path, state: State) -> None:
    """Over SSH without a user session, systemctl --user cannot reach the user's manager."""
    fake = FakeOS()
    fake.fail["enable"] = Completed(1, "", "Failed to connect to bus: No medium found")
    host = make_host(tmp_path, "linux", fake)
    with pytest.raises(svc.ServiceError) as caught:
        svc.install(host, state)
    sentence = caught.value.sentence()
    assert "Failed to connect to bus" in sentence and "enable-linger" in sentence and "\n" not in sentence
    assert svc.backend_for("linux").path(host).exists(), "the unit stays, so a retry only has to enable it"
    fake.fail = {"daemon-reload": Completed(127, "", "systemctl is not installed or not on PATH")}
    host.python = "/elsewhere/python"  # a changed unit, so it is reloaded
    with pytest.raises(svc.ServiceError) as caught:
        svc.install(host, state)
    assert "autostart" in caught.value.sentence()


def test_unsupported_platform_is_a_usage_error(tmp_path: Path, state: State) -> None:
    with pytest.raises(UsageError):
        svc.install(make_host(tmp_path, "aix", FakeOS()), state)


# -- setting up the store ---------------------------------------------------------------------------


def test_invite_joins_once(tmp_path: Path, state: State) -> None:
    relay = tmp_path / "relay"
    relay.mkdir()
    creator = State(tmp_path / "creator")
    cfg = init_store(creator, tmp_path / "office", relay, "quotes")
    code = make_invite(cfg, creator.store_secrets(cfg.id), creator.identity())
    fake = FakeOS()
    host = make_host(tmp_path, "linux", fake)
    first = svc.install(host, state, store=str(tmp_path / "laptop"), relay=str(relay), invite=code)
    assert first.lines[0].startswith("Joined store quotes")
    assert [s.id for s in state.stores()] == [cfg.id]
    again = svc.install(host, state, store=str(tmp_path / "laptop"), relay=str(relay), invite=code)
    assert "already set up" in again.lines[0] and not again.changed


def test_store_options_go_together(tmp_path: Path, state: State) -> None:
    host = make_host(tmp_path, "linux", FakeOS())
    for store, relay, invite in (("x", None, None), (None, "y", None), ("x", None, "PSYNC")):
        with pytest.raises(UsageError):
            svc.install(host, state, store=store, relay=relay, invite=invite)
    assert not svc.backend_for("linux").path(host).exists(), "a refused install registers nothing"


def test_install_without_a_store_says_what_to_do(tmp_path: Path, state: State) -> None:
    report = svc.install(make_host(tmp_path, "linux", FakeOS()), state)
    assert any("peersync init" in line for line in report.lines)


# -- per-user isolation --------------------------------------------------------------------------


def test_refuses_to_register_for_root_under_sudo(tmp_path: Path, state: State) -> None:
    """`sudo peersync service install` would register root's service, not the user's."""
    host = make_host(tmp_path, "linux", FakeOS(), SUDO_USER="alice")
    host.uid = 0
    with pytest.raises(RefusedError) as caught:
        svc.install(host, state)
    assert "alice" in caught.value.sentence()
    assert not svc.backend_for("linux").path(host).exists()


@pytest.mark.skipif(not POSIX, reason="numeric owners are POSIX")
def test_refuses_another_users_state_folder(tmp_path: Path, state: State) -> None:
    state.root.mkdir()
    host = make_host(tmp_path, "linux", FakeOS())
    host.uid = os.getuid() + 1
    with pytest.raises(RefusedError) as caught:
        svc.install(host, state)
    assert str(state.root) in caught.value.sentence()


def test_refuses_a_copied_state_folder(tmp_path: Path, state: State, monkeypatch: pytest.MonkeyPatch) -> None:
    """A state folder copied from another user must re-join, not start a service with a borrowed identity."""
    monkeypatch.delenv("PEERSYNC_ALLOW_COPIED_STATE", raising=False)
    relay = tmp_path / "relay"
    relay.mkdir()
    init_store(state, tmp_path / "s", relay, None)
    info = state.root / "identity.json"
    info.write_text(info.read_text().replace(f'"user": "{state.identity().user}"', '"user": "mallory"'))
    host = make_host(tmp_path, "linux", FakeOS())
    with pytest.raises(StateError):
        svc.install(host, state)
    assert not svc.backend_for("linux").path(host).exists()


# -- the command line --------------------------------------------------------------------------------


FAKE_TOOL = textwrap.dedent("""\
    #!/bin/sh
    # A stand-in for systemctl / launchctl: records its arguments; 'enabled' and 'running' are files.
    dir=$(dirname "$0")
    echo "$(basename "$0") $*" >> "$dir/calls.log"
    case "$*" in
        *is-enabled*) [ -e "$dir/enabled" ] && { echo enabled; exit 0; }; echo disabled; exit 1 ;;
        *is-active*) [ -e "$dir/running" ] && { echo active; exit 0; }; echo inactive; exit 3 ;;
        *"enable --now"*) touch "$dir/enabled" "$dir/running" ;;
        *"disable --now"*) rm -f "$dir/enabled" "$dir/running" ;;
        print*) [ -e "$dir/enabled" ] || exit 113; echo "state = running" ;;
        bootstrap*) touch "$dir/enabled" "$dir/running" ;;
        bootout*) rm -f "$dir/enabled" "$dir/running" ;;
    esac
    exit 0
    """)


@pytest.fixture
def fake_home(tmp_path: Path) -> dict[str, str]:
    """A user's environment with a temporary HOME and fake systemctl/launchctl first on PATH."""
    if not POSIX:
        pytest.skip("the fake systemctl is a shell script; Windows registration is tested through its XML")
    home, bin_dir = tmp_path / "home", tmp_path / "fakebin"
    home.mkdir()
    bin_dir.mkdir()
    for tool in ("systemctl", "launchctl"):
        (bin_dir / tool).write_text(FAKE_TOOL)
        (bin_dir / tool).chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("XDG_", "PEERSYNC_", "SUDO_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    return env


def calls(env: dict[str, str]) -> list[str]:
    log = Path(env["PATH"].split(os.pathsep)[0]) / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def registration_path(home: Path) -> Path:
    if sys.platform == "darwin":
        return home / "Library" / "LaunchAgents" / "net.peersync.agent.plist"
    return home / ".config" / "systemd" / "user" / "peersync.service"


def test_cli_service_commands(tmp_path: Path, fake_home: dict[str, str]) -> None:
    env = dict(fake_home, PYTHONPATH=str(ROOT), PEERSYNC_HOME=str(tmp_path / "state"))
    (tmp_path / "relay").mkdir()

    def peersync(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "peersync", "service", *args], capture_output=True, text=True,
                              env=env, timeout=120)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    assert peersync("status").returncode == 1
    done = peersync("install", "--store", str(tmp_path / "quotes"), "--relay", str(tmp_path / "relay"))
    assert done.returncode == 0, done.stderr
    assert "Created store" in done.stdout and "installed" in done.stdout
    text = registration_path(Path(fake_home["HOME"])).read_text()
    assert sys.executable in text and str(tmp_path / "state") in text
    done = peersync("install", "--store", str(tmp_path / "quotes"), "--relay", str(tmp_path / "relay"))
    assert done.returncode == 0 and "already installed" in done.stdout
    done = peersync("status")
    assert done.returncode == 0 and "running" in done.stdout
    assert peersync("install", "--store", str(tmp_path / "x")).returncode == 2  # --relay missing
    done = peersync("uninstall")
    assert done.returncode == 0 and not registration_path(Path(fake_home["HOME"])).exists()
    assert (tmp_path / "state" / "identity.key").exists()
    assert peersync("status").returncode == 1


# -- install.sh end to end --------------------------------------------------------------------------


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(dest: Path) -> Path:
    """A wheel of this checkout, made with zipfile alone.

    pip builds a folder with the project's build backend (setuptools >= 68),
    which an offline machine may lack; a wheel installs with ``--no-index``
    anywhere. It also stands for the usual fleet layout: the scripts next to
    a wheel on a share.
    """
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version
    dist = f"peersync-{version.group(1)}"
    wheel = dest / f"{dist}-py3-none-any.whl"
    records = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        def add(name: str, data: bytes) -> None:
            zf.writestr(name, data)
            records.append(_record_line(name, data))

        for path in sorted((ROOT / "peersync").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                add(path.relative_to(ROOT).as_posix(), path.read_bytes())
        metadata = f"Metadata-Version: 2.1\nName: peersync\nVersion: {version.group(1)}\n"
        add(f"{dist}.dist-info/METADATA", metadata.encode())
        add(f"{dist}.dist-info/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        add(f"{dist}.dist-info/entry_points.txt", b"[console_scripts]\npeersync = peersync.cli:main\n")
        records.append(f"{dist}.dist-info/RECORD,,")
        zf.writestr(f"{dist}.dist-info/RECORD", "\n".join(records) + "\n")
    return wheel


def dependencies_dir(dest: Path) -> Path:
    """This environment's installed packages, except peersync and the packaging tools, for PYTHONPATH.

    The new virtual environment is offline, so peersync's dependencies come
    from the environment running the tests; peersync itself (and pip) must
    come from the new environment.
    """
    dest.mkdir()
    skip = ("peersync", "__editable__", "pip", "setuptools", "_distutils_hack", "wheel", "__pycache__", "_virtualenv")
    for site in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        for entry in Path(site).iterdir():
            if entry.name.lower().startswith(skip) or entry.suffix == ".pth" or (dest / entry.name).exists():
                continue
            (dest / entry.name).symlink_to(entry)
    return dest


def run_script(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"{script.name} {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_install_sh_end_to_end(tmp_path: Path, fake_home: dict[str, str]) -> None:
    home = Path(fake_home["HOME"])
    share = tmp_path / "share"  # a fleet share: the scripts next to a wheel
    share.mkdir()
    for name in ("install.sh", "uninstall.sh"):
        shutil.copy2(SCRIPTS / name, share / name)
    build_wheel(share)
    env = dict(fake_home, PYTHONPATH=str(dependencies_dir(tmp_path / "deps")),
               PEERSYNC_PIP_ARGS="--no-index --no-deps")
    relay, store = tmp_path / "Dropbox" / "peersync", tmp_path / "Quotes"
    relay.mkdir(parents=True)
    options = ("--python", sys.executable, "--store", str(store), "--relay", str(relay))

    done = run_script(share / "install.sh", env, *options)
    assert "installed" in done.stdout, done.stdout
    data_dir = home / ("Library/Application Support" if sys.platform == "darwin" else ".local/share") / "peersync"
    venv_python = data_dir / "venv" / "bin" / "python"
    unit = registration_path(home)
    if sys.platform == "darwin":
        assert plistlib.loads(unit.read_bytes())["ProgramArguments"] == [str(venv_python), "-m", "peersync", "run"]
    else:
        parsed = parse_unit(unit.read_text())
        assert parsed["Service"]["ExecStart"] == f"{venv_python} -m peersync run"
        assert parsed["Service"]["Restart"] == "on-failure"
        assert "Environment" not in parsed["Service"]
        assert "systemctl --user enable --now peersync.service" in calls(env)
    assert (data_dir / "identity.key").exists() and (store / ".peersync").exists()
    assert os.readlink(home / ".local" / "bin" / "peersync") == str(data_dir / "venv" / "bin" / "peersync")

    before, n_calls = unit.stat(), len(calls(env))
    done = run_script(share / "install.sh", env, *options)
    assert "already installed" in done.stdout and "already set up" in done.stdout, done.stdout
    after = unit.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    again = calls(env)[n_calls:]
    assert again and all(re.search(r"is-enabled|is-active|^launchctl print", c) for c in again), again

    done = run_script(share / "uninstall.sh", env)
    assert not unit.exists() and not (data_dir / "venv").exists()
    assert not (home / ".local" / "bin" / "peersync").exists()
    assert (data_dir / "identity.key").exists() and (data_dir / "config.json").exists(), "data and keys are kept"
    assert (store / ".peersync").exists()
    assert str(data_dir) in done.stdout


def test_install_sh_refuses_bad_options(tmp_path: Path, fake_home: dict[str, str]) -> None:
    for args in (["--store", "x"], ["--invite", "CODE"], ["--frobnicate"]):
        done = subprocess.run(["bash", str(SCRIPTS / "install.sh"), *args], capture_output=True, text=True,
                              env=fake_home, timeout=60)
        assert done.returncode == 2 and done.stderr.startswith("install.sh: "), done.stderr
    assert not (Path(fake_home["HOME"]) / ".local").exists(), "nothing was installed"


def test_install_sh_refuses_sudo(tmp_path: Path, fake_home: dict[str, str]) -> None:
    """`sudo install.sh` would install for root; a fake `id` plays root so this runs as anyone."""
    bin_dir = tmp_path / "rootbin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 0\n")
    (bin_dir / "id").chmod(0o755)
    env = dict(fake_home, SUDO_USER="alice", PATH=f"{bin_dir}{os.pathsep}{fake_home['PATH']}")
    for script in ("install.sh", "uninstall.sh"):
        done = subprocess.run(["bash", str(SCRIPTS / script)], capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2 and "as alice, without sudo" in done.stderr, done.stderr


# -- the scripts themselves ---------------------------------------------------------------------------


def test_shell_scripts_are_shellcheck_clean() -> None:
    scripts = [SCRIPTS / "install.sh", SCRIPTS / "uninstall.sh"]
    for script in scripts:
        assert script.read_text().startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in script.read_text()
        if POSIX:
            assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is executable"
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    done = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout


PS_SCRIPTS = [SCRIPTS / "install-windows.ps1", SCRIPTS / "uninstall-windows.ps1"]


def ps_params(script: Path) -> set[str]:
    block = re.search(r"param\((.*?)\n\)", script.read_text(), re.S)
    assert block, script
    return set(re.findall(r"\$([A-Za-z]+)\s*(?:=|,|$)", block.group(1), re.M))


def test_windows_scripts_take_the_documented_parameters() -> None:
    """pwsh is not here to run them: pin what sysadmins script against."""
    install, uninstall = (p.read_text() for p in PS_SCRIPTS)
    assert {"Source", "Store", "Relay", "Invite"} <= ps_params(PS_SCRIPTS[0])
    assert "Venv" in ps_params(PS_SCRIPTS[1])
    for text in (install, uninstall):
        assert "RunAsAdministrator" not in text and "Set-ExecutionPolicy" not in text
        assert "Set-StrictMode -Version Latest" in text and "$ErrorActionPreference = 'Stop'" in text
        assert "Join-Path $env:LOCALAPPDATA 'peersync" in text
    assert "'service', 'install'" in install and "service uninstall" in uninstall
    assert "Scripts\\python.exe" in install and "-m venv" in install
    # The fallback in uninstall-windows.ps1 names the task exactly as peersync.svc does.
    rule = re.search(r"'peersync-' \+ \(\$env:USERNAME -replace '([^']+)', '_'\)", uninstall)
    assert rule
    for user in ("alice", "bob smith", "O'Brien"):
        assert f"peersync-{re.sub(rule.group(1), '_', user)}" == svc.task_name(f"PC\\{user}")
    assert "Remove-Item" in uninstall and "$dataDir" not in re.findall(r"Remove-Item[^\n]*", uninstall)[-1]


def test_windows_scripts_parse_in_powershell() -> None:
    pwsh = shutil.which("pwsh") or shutil.which("powershell")
    if pwsh is None:
        pytest.skip("PowerShell (pwsh) is not installed")
    for script in PS_SCRIPTS:
        command = ("$errors = $null; [System.Management.Automation.Language.Parser]::ParseFile("
                   f"'{script}', [ref]$null, [ref]$errors) | Out-Null; "
                   "$errors | ForEach-Object { $_.ToString() }; exit $errors.Count")
        done = subprocess.run([pwsh, "-NoProfile", "-NonInteractive", "-Command", command], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (script.name, done.stdout, done.stderr)


def test_cli_has_the_service_subcommands() -> None:
    from peersync.cli import build_parser

    parser = build_parser()
    command = next(a for a in parser._actions if a.dest == "command")
    service = command.choices["service"]  # type: ignore[index]
    actions = next(a for a in service._actions if a.dest == "action")
    assert set(actions.choices) == {"install", "uninstall", "status"}
    install = actions.choices["install"]
    options = {o for a in install._actions for o in a.option_strings}
    assert {"--store", "--relay", "--invite"} <= options


def test_public_surface_is_pinned() -> None:
    assert svc.__all__ == sorted(svc.__all__)
    assert all(hasattr(svc, name) for name in svc.__all__)

