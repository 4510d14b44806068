"""Windows: ``peersync run`` as a Task Scheduler task that starts at this user's logon.

The task runs as the user who installs it, only in their interactive session
(LogonType InteractiveToken), without elevation (RunLevel LeastPrivilege), so
no administrator rights are needed to register it. Task names share one
machine-wide namespace, so the task is named after the user
(``peersync-<user>``): two Windows users on one laptop get two tasks, one
peer each. A copy of the XML is kept in ``%LOCALAPPDATA%\\peersync\\service``
so a second install can tell that nothing changed.
"""

from __future__ import annotations

import csv
import io
import ntpath
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from .host import Completed, Host, safe_name
from .spec import ServiceError, ServiceSpec, Status

KIND = "Task Scheduler task"
NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"


def task_name(user: str) -> str:
    """The task's name for ``user`` (``DOMAIN\\alice`` -> ``peersync-alice``)."""
    return f"peersync-{safe_name(user)}"


def action(spec: ServiceSpec) -> tuple[str, str]:
    """The command and its argument string.

    ``pythonw.exe`` beside the interpreter runs without a console window at
    logon. A task cannot set environment variables, so a ``PEERSYNC_HOME``
    travels as ``python -m peersync.svc --home DIR run``.
    """
    folder, exe = ntpath.split(spec.python)
    command = ntpath.join(folder, "pythonw.exe") if exe.lower() == "python.exe" else spec.python
    args = ["-m", "peersync", "run"]
    if spec.peersync_home:
        args = ["-m", "peersync.svc", "--home", spec.peersync_home, "run"]
    return command, subprocess.list2cmdline(args)


def render_task(spec: ServiceSpec) -> str:
    """The task XML for ``spec`` (declared UTF-16, as schtasks reads it); same spec, same text."""
    ET.register_namespace("", NS)

    def el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        child = ET.SubElement(parent, f"{{{NS}}}{tag}", attrs)
        if text is not None:
            child.text = text
        return child

    task = ET.Element(f"{{{NS}}}Task", {"version": "1.2"})
    info = el(task, "RegistrationInfo")
    el(info, "Author", spec.user)
    el(info, "Description", f"peersync folder sync for {spec.user}. Written by `peersync service install`; "
                            "`peersync service uninstall` removes it.")
    el(info, "URI", "\\" + task_name(spec.user))

    logon = el(el(task, "Triggers"), "LogonTrigger")
    el(logon, "Enabled", "true")
    el(logon, "UserId", spec.user)  # this user's logon only, not anyone's
    el(logon, "Delay", "PT30S")  # let the cloud client start first

    principal = el(el(task, "Principals"), "Principal", id="Author")
    el(principal, "UserId", spec.user)
    el(principal, "LogonType", "InteractiveToken")  # runs in the user's session, stores no password
    el(principal, "RunLevel", "LeastPrivilege")  # no elevation, no admin rights

    settings = el(task, "Settings")
    el(settings, "MultipleInstancesPolicy", "IgnoreNew")
    el(settings, "DisallowStartIfOnBatteries", "false")  # roaming laptops sync on battery too
    el(settings, "StopIfGoingOnBatteries", "false")
    el(settings, "AllowHardTerminate", "true")
    el(settings, "StartWhenAvailable", "true")
    el(settings, "RunOnlyIfNetworkAvailable", "false")  # the relay is a local folder
    idle = el(settings, "IdleSettings")
    el(idle, "StopOnIdleEnd", "false")
    el(idle, "RestartOnIdle", "false")
    el(settings, "AllowStartOnDemand", "true")
    el(settings, "Enabled", "true")
    el(settings, "Hidden", "false")
    el(settings, "RunOnlyIfIdle", "false")
    el(settings, "WakeToRun", "false")
    el(settings, "ExecutionTimeLimit", "PT0S")  # no time limit: it runs all session long
    el(settings, "Priority", "7")
    restart = el(settings, "RestartOnFailure")
    el(restart, "Interval", "PT1M")
    el(restart, "Count", "999")

    command, arguments = action(spec)
    exec_ = el(el(task, "Actions", Context="Author"), "Exec")
    el(exec_, "Command", command)
    el(exec_, "Arguments", arguments)
    el(exec_, "WorkingDirectory", spec.home)

    ET.indent(task, space="  ")
    return '<?xml version="1.0" encoding="UTF-16"?>\n' + ET.tostring(task, encoding="unicode") + "\n"


class Windows:
    kind = KIND

    def path(self, host: Host) -> Path:
        return host.local_appdata / "peersync" / "service" / "peersync-task.xml"

    def render(self, spec: ServiceSpec) -> str:
        return render_task(spec)

    def encode(self, text: str) -> bytes:
        return text.encode("utf-16")  # with a byte-order mark, as Task Scheduler exports it

    def _ctl(self, host: Host, *args: str) -> Completed:
        return host.run(["schtasks", *args])

    def _must(self, host: Host, *args: str) -> None:
        done = self._ctl(host, *args)
        if not done.ok:
            raise ServiceError(
                f"`schtasks {' '.join(args)}` failed ({done.detail()})",
                "run `peersync service install` again as the user in their own session, "
                "not as an administrator or another user",
            )

    def query(self, host: Host) -> Status:
        path = self.path(host)
        name = task_name(host.user)
        done = self._ctl(host, "/Query", "/TN", name, "/FO", "CSV", "/NH")
        if not done.ok:
            return Status(KIND, path, False, False, "not installed" if not path.exists() else "not registered")
        rows = [r for r in csv.reader(io.StringIO(done.stdout)) if r]
        state = rows[0][-1] if rows else "unknown"
        return Status(KIND, path, True, state.strip().lower() == "running", state.strip() or "unknown")

    def activate(self, host: Host, written: str, before: Status) -> None:
        name = task_name(host.user)
        if written != "unchanged" or not before.registered:
            if before.running:
                self._ctl(host, "/End", "/TN", name)
            self._must(host, "/Create", "/XML", str(self.path(host)), "/TN", name, "/F")
            before = Status(KIND, before.path, True, False, "")
        if not before.running:
            self._must(host, "/Run", "/TN", name)

    def restart(self, host: Host) -> None:
        name = task_name(host.user)
        self._ctl(host, "/End", "/TN", name)
        self._must(host, "/Run", "/TN", name)

    def deactivate(self, host: Host) -> None:
        name = task_name(host.user)
        if self._ctl(host, "/Query", "/TN", name).ok:
            self._ctl(host, "/End", "/TN", name)
            self._must(host, "/Delete", "/TN", name, "/F")
        self.path(host).unlink(missing_ok=True)
