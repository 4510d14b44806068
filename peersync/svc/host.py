"""The seam between service registration and the machine: who runs it, where files go, how commands run.

Everything the platform modules do to the operating system goes through a
:class:`Host`: its ``home`` is the base directory below which the unit file,
plist or task copy is written, and its ``run`` callable executes
``systemctl``, ``launchctl`` or ``schtasks``. ``Host.current()`` describes the
real machine; tests build one with a temporary home and a runner that records
commands, so every platform's registration runs on any machine.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .. import fsutil


@dataclasses.dataclass(frozen=True)
class Completed:
    """What a command did: its exit status and its output."""

    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def detail(self) -> str:
        """The command's own explanation, one line, for an error message."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return text[-1] if text else f"exit status {self.returncode}"


#: Runs one command (argv, no shell) and reports what it did. It never raises for a
#: failing command; a missing program is exit status 127.
Runner = Callable[[Sequence[str]], Completed]


def system_runner(argv: Sequence[str]) -> Completed:
    """The real runner: ``subprocess.run`` with captured text output and a time limit."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=120, errors="replace")
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]} is not installed or not on PATH")
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"{argv[0]} did not answer within 120 seconds")
    return Completed(done.returncode, done.stdout or "", done.stderr or "")


def windows_user(env: Mapping[str, str]) -> str:
    """``DOMAIN\\name`` as Task Scheduler's UserId wants it (the machine name on a local account)."""
    name = env.get("USERNAME") or getpass.getuser()
    domain = env.get("USERDOMAIN", "")
    return f"{domain}\\{name}" if domain and "\\" not in name else name


def safe_name(user: str) -> str:
    """``user`` reduced to letters, digits, ``.``, ``_`` and ``-`` (for a task name)."""
    short = user.rsplit("\\", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", short) or "user"


@dataclasses.dataclass
class Host:
    """One OS user on one machine, as service registration sees it."""

    #: ``sys.platform`` of the target: "linux", "darwin" or "win32". Selects the platform module.
    platform: str
    #: The user's home folder. Unit files, plists and the task copy are written below it.
    home: Path
    #: The OS user the service runs as; on Windows ``DOMAIN\\name``.
    user: str
    #: Numeric user id on POSIX (launchd's ``gui/<uid>`` domain; state-folder ownership); None on Windows.
    uid: int | None
    #: Absolute path of the Python that runs ``-m peersync run`` (kept unresolved: a venv's
    #: ``bin/python`` is a symlink whose target is outside the venv).
    python: str
    #: ``PEERSYNC_HOME`` to pass to the service, or None for the platform default.
    peersync_home: str | None
    #: Runs systemctl / launchctl / schtasks.
    run: Runner = system_runner
    #: Environment variables read during registration (``SUDO_USER``, ``LOCALAPPDATA``).
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def current(cls, run: Runner = system_runner) -> Host:
        """This process's user, interpreter and ``PEERSYNC_HOME`` on this machine."""
        env = dict(os.environ)
        if sys.platform == "win32":
            user = windows_user(env)
            uid = None
        else:
            try:
                user = getpass.getuser()
            except Exception:  # no login name (some containers)
                user = str(os.getuid())
            uid = os.getuid()
        peersync_home = env.get("PEERSYNC_HOME") or None
        if peersync_home:
            peersync_home = str(Path(peersync_home).expanduser().absolute())
        return cls(sys.platform, Path.home(), user, uid, os.path.abspath(sys.executable), peersync_home, run, env)

    @property
    def local_appdata(self) -> Path:
        """``%LOCALAPPDATA%`` (Windows), where the task's XML copy is kept."""
        value = self.env.get("LOCALAPPDATA")
        return Path(value) if value else self.home / "AppData" / "Local"


def write_if_changed(path: Path, data: bytes) -> str:
    """Write ``data`` atomically unless ``path`` already holds exactly it.

    Returns "created", "replaced" or "unchanged": an unchanged file is not
    touched at all (same inode, same modification time).
    """
    try:
        if path.read_bytes() == data:
            return "unchanged"
        outcome = "replaced"
    except FileNotFoundError:
        outcome = "created"
    fsutil.atomic_write(path, data, mode=0o644)
    return outcome
