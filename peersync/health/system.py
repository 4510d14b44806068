"""The seam between the doctor and the machine: home, environment, registry, processes, attributes.

Every question the health checks ask the operating system goes through a
:class:`System`. :class:`RealSystem` asks the machine it runs on;
:class:`FakeSystem` answers from values a test gives it, so a test on Linux can
act out a Windows user with OneDrive in the registry, a Dropbox process owned
by another user and online-only files in the relay.

Files (a client's configuration files, the relay itself) are *not* behind the
seam: tests write real files under a temporary folder and point ``home`` and
the environment (``LOCALAPPDATA``, ``APPDATA``...) at it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

#: Seconds a helper program (``powercfg``, ``whoami``) may take before it is abandoned.
COMMAND_TIMEOUT = 3.0


def platform_name(raw: str | None = None) -> str:
    """``windows``, ``darwin`` or ``linux`` (anything else is reported as its sys.platform)."""
    raw = raw or sys.platform
    if raw.startswith("win"):
        return "windows"
    if raw.startswith("linux"):
        return "linux"
    return raw


def same_user(process_user: str | None, me: str, platform: str) -> bool:
    """True if a process owner (``DOMAIN\\alice`` on Windows) is the user ``me``."""
    if not process_user:
        return False
    name = process_user.rsplit("\\", 1)[-1]
    if platform == "windows":
        return name.casefold() == me.rsplit("\\", 1)[-1].casefold()
    return name == me


@dataclasses.dataclass(frozen=True)
class ProcInfo:
    """One running process as the checks see it."""

    pid: int
    name: str
    #: Owner as psutil reports it; None when it may not be read (usually another user's process).
    username: str | None
    create_time: float | None = None
    cmdline: tuple[str, ...] = ()


class System:
    """What the health checks may ask the machine. Subclasses answer for real or from test data."""

    platform: str  # "windows", "darwin" or "linux"
    home: Path
    env: Mapping[str, str]
    user: str  # this OS user's login name

    # -- Windows registry ("HKCU\\Software\\..." paths) -------------------------------

    def registry_values(self, key: str) -> dict[str, object]:
        """The values of a registry key by name; empty when the key is absent."""
        return {}

    def registry_subkeys(self, key: str) -> list[str]:
        """The names of a key's subkeys; empty when the key is absent."""
        return []

    def user_sid(self) -> str | None:
        """This user's Windows security identifier (``S-1-5-21-...``), if known."""
        return None

    # -- processes ------------------------------------------------------------------

    def processes(self) -> list[ProcInfo]:
        return []

    def process(self, pid: int) -> ProcInfo | None:
        for p in self.processes():
            if p.pid == pid:
                return p
        return None

    # -- files ----------------------------------------------------------------------

    def file_attributes(self, path: str, st: os.stat_result | None) -> int:
        """Windows file attributes of ``path`` (0 elsewhere). ``st`` is its lstat when the caller has it."""
        return 0

    def disk_usage(self, path: str) -> tuple[int, int]:
        """(total, free) bytes of the filesystem holding ``path``."""
        usage = shutil.disk_usage(path)
        return usage.total, usage.free

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a folder. On a dead network share this is the call that hangs."""
        return os.path.isdir(path)

    def realpath(self, path: str) -> str:
        return path

    # -- commands and time --------------------------------------------------------------

    def powercfg(self, *args: str) -> str | None:
        """The output of ``powercfg ARGS`` (Windows), or None when it cannot be run."""
        return None

    def now(self) -> float:
        return time.time()


class RealSystem(System):
    """The machine peersync runs on."""

    def __init__(self) -> None:
        self.platform = platform_name()
        self.home = Path.home()
        self.env = dict(os.environ)
        self.user = _login_name()
        self._processes: list[ProcInfo] | None = None
        self._sid: str | None | bool = False

    def registry_values(self, key: str) -> dict[str, object]:
        if sys.platform != "win32":
            return {}
        import winreg

        out: dict[str, object] = {}
        try:
            handle = winreg.OpenKey(_hive(key), key.partition("\\")[2])
        except (OSError, KeyError):
            return out
        with handle:
            i = 0
            while True:
                try:
                    name, value, _kind = winreg.EnumValue(handle, i)
                except OSError:
                    break
                out[name] = value
                i += 1
        return out

    def registry_subkeys(self, key: str) -> list[str]:
        if sys.platform != "win32":
            return []
        import winreg

        out: list[str] = []
        try:
            handle = winreg.OpenKey(_hive(key), key.partition("\\")[2])
        except (OSError, KeyError):
            return out
        with handle:
            i = 0
            while True:
                try:
                    out.append(winreg.EnumKey(handle, i))
                except OSError:
                    break
                i += 1
        return out

    def user_sid(self) -> str | None:
        if self._sid is False:
            self._sid = None
            if self.platform == "windows":
                out = _run(["whoami", "/user", "/fo", "csv", "/nh"])
                # "desktop-1\alice","S-1-5-21-..."
                if out and out.strip().count('"') >= 4:
                    self._sid = out.strip().split(",")[-1].strip().strip('"') or None
        return self._sid if isinstance(self._sid, str) else None

    def processes(self) -> list[ProcInfo]:
        if self._processes is None:
            import psutil

            found = []
            for p in psutil.process_iter(["pid", "name", "username"], ad_value=None):
                info = p.info
                found.append(ProcInfo(int(info["pid"]), str(info.get("name") or ""), info.get("username")))
            self._processes = found
        return self._processes

    def process(self, pid: int) -> ProcInfo | None:
        import psutil

        try:
            p = psutil.Process(pid)
        except (psutil.NoSuchProcess, ValueError):
            return None
        # Another user's process may refuse some questions; it still exists.
        name, user, created, cmd = "", None, None, ()
        try:
            with p.oneshot():
                try:
                    name = p.name()
                    created = p.create_time()
                    user = p.username()
                    cmd = tuple(p.cmdline())
                except psutil.AccessDenied:
                    pass
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return None
        return ProcInfo(pid, name, user, created, cmd)

    def file_attributes(self, path: str, st: os.stat_result | None) -> int:
        if self.platform != "windows":
            return 0
        try:
            # lstat opens the reparse point itself, so an online-only file is not downloaded.
            st = st or os.stat(path, follow_symlinks=False)
        except OSError:
            return 0
        return int(getattr(st, "st_file_attributes", 0))

    def realpath(self, path: str) -> str:
        try:
            return os.path.realpath(path)
        except (OSError, ValueError):
            return path

    def powercfg(self, *args: str) -> str | None:
        if self.platform != "windows":
            return None
        return _run(["powercfg", *args])


class FakeSystem(System):
    """A machine made of test data: registry keys, processes, attributes and recorded command output.

    ``registry`` maps a key path to its values (``{"HKCU\\Software\\X": {"Name": "value"}}``);
    subkeys are inferred from the paths. ``attributes`` maps a path (as a string) to its
    Windows attributes. ``powercfg_output`` is what ``powercfg`` prints, or a callable.
    """

    def __init__(
        self,
        platform: str,
        home: Path,
        env: Mapping[str, str] | None = None,
        *,
        user: str = "alice",
        registry: Mapping[str, Mapping[str, object]] | None = None,
        sid: str | None = None,
        processes: list[ProcInfo] | None = None,
        attributes: Mapping[str, int] | None = None,
        powercfg_output: str | Callable[[tuple[str, ...]], str | None] | None = None,
        disk: tuple[int, int] | None = None,
        slow_dirs: Mapping[str, float] | None = None,
        now: float | None = None,
    ) -> None:
        self.platform = platform
        self.home = home
        self.env = dict(env or {})
        self.user = user
        self.registry = {k.casefold(): (k, dict(v)) for k, v in (registry or {}).items()}
        self.sid = sid
        self.procs = list(processes or [])
        self.attributes = {os.path.normpath(k): v for k, v in (attributes or {}).items()}
        self.powercfg_output = powercfg_output
        self.disk = disk
        self.slow_dirs = dict(slow_dirs or {})
        self._now = now

    def registry_values(self, key: str) -> dict[str, object]:
        hit = self.registry.get(key.casefold())
        return dict(hit[1]) if hit else {}

    def registry_subkeys(self, key: str) -> list[str]:
        prefix = key.casefold().rstrip("\\") + "\\"
        out: list[str] = []
        for folded, (original, _values) in self.registry.items():
            if folded.startswith(prefix):
                child = original[len(prefix):].split("\\", 1)[0]
                if child and child not in out:
                    out.append(child)
        return out

    def user_sid(self) -> str | None:
        return self.sid

    def processes(self) -> list[ProcInfo]:
        return list(self.procs)

    def file_attributes(self, path: str, st: os.stat_result | None) -> int:
        return self.attributes.get(os.path.normpath(path), 0)

    def disk_usage(self, path: str) -> tuple[int, int]:
        return self.disk if self.disk is not None else super().disk_usage(path)

    def is_dir(self, path: str) -> bool:
        delay = self.slow_dirs.get(path)
        if delay:
            time.sleep(delay)
        return super().is_dir(path)

    def powercfg(self, *args: str) -> str | None:
        if callable(self.powercfg_output):
            return self.powercfg_output(args)
        return self.powercfg_output

    def now(self) -> float:
        return self._now if self._now is not None else time.time()


# -- helpers for the real machine ------------------------------------------------------------


def _login_name() -> str:
    if hasattr(os, "getuid"):
        try:
            import pwd

            return pwd.getpwuid(os.getuid()).pw_name
        except (KeyError, ImportError):
            pass
    from ..state import os_user

    return os_user()


def _hive(key: str) -> int:
    """The winreg constant for a key's first part (``HKCU``, ``HKLM``); KeyError for others."""
    if sys.platform != "win32":
        raise KeyError(key)
    import winreg

    hives = {"HKCU": winreg.HKEY_CURRENT_USER, "HKEY_CURRENT_USER": winreg.HKEY_CURRENT_USER,
             "HKLM": winreg.HKEY_LOCAL_MACHINE, "HKEY_LOCAL_MACHINE": winreg.HKEY_LOCAL_MACHINE}
    return hives[key.partition("\\")[0].upper()]


def _run(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL, errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None
