"""macOS: ``peersync run`` as a launchd LaunchAgent, ``~/Library/LaunchAgents/net.peersync.agent.plist``.

A LaunchAgent in the user's own ``~/Library/LaunchAgents`` runs in that
user's GUI session (the ``gui/<uid>`` domain), starts at their login
(RunAtLoad) and is started again when it exits with a failure
(KeepAlive / SuccessfulExit false).
"""

from __future__ import annotations

import plistlib
from pathlib import Path
from typing import Any

from .host import Completed, Host
from .spec import ServiceError, ServiceSpec, Status

KIND = "launchd LaunchAgent"
LABEL = "net.peersync.agent"


def render_plist(spec: ServiceSpec) -> str:
    """The plist's text for ``spec``: the same spec always gives the same bytes."""
    plist: dict[str, Any] = {
        "Label": LABEL,
        "ProgramArguments": [spec.python, *spec.run_args()],
        "RunAtLoad": True,
        # Restart when it fails, not after a clean stop (peersync run exits 0 on SIGTERM).
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 30,
        "ProcessType": "Background",
        "WorkingDirectory": spec.home,
        # What the service prints before its own log file is open (peersync logs to its state folder).
        "StandardOutPath": str(Path(spec.home) / "Library" / "Logs" / "peersync-service.log"),
        "StandardErrorPath": str(Path(spec.home) / "Library" / "Logs" / "peersync-service.log"),
    }
    if spec.peersync_home:
        plist["EnvironmentVariables"] = {"PEERSYNC_HOME": spec.peersync_home}
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=True).decode("utf-8")


class Launchd:
    kind = KIND

    def path(self, host: Host) -> Path:
        return host.home / "Library" / "LaunchAgents" / f"{LABEL}.plist"

    def render(self, spec: ServiceSpec) -> str:
        return render_plist(spec)

    def encode(self, text: str) -> bytes:
        return text.encode("utf-8")

    def _domain(self, host: Host) -> str:
        if host.uid is None:
            raise ServiceError("the user id is unknown, so the launchd domain cannot be named")
        return f"gui/{host.uid}"

    def _ctl(self, host: Host, *args: str) -> Completed:
        return host.run(["launchctl", *args])

    def _must(self, host: Host, *args: str) -> None:
        done = self._ctl(host, *args)
        if done.returncode == 127:
            raise ServiceError(f"launchctl is not available on this machine ({done.detail()})",
                               "start `peersync run` from your session's autostart instead")
        if not done.ok:
            raise ServiceError(
                f"`launchctl {' '.join(args)}` failed ({done.detail()})",
                "run `peersync service install` again as the user in their own login session (an MDM "
                "uses `launchctl asuser UID sudo -u USER ...`); the plist is in place and loads at their next login",
            )

    def query(self, host: Host) -> Status:
        path = self.path(host)
        if not path.exists():
            return Status(KIND, path, False, False, "not installed")
        done = self._ctl(host, "print", f"{self._domain(host)}/{LABEL}")
        if not done.ok:
            return Status(KIND, path, False, False, "not loaded")
        running = any(line.strip() == "state = running" for line in done.stdout.splitlines())
        return Status(KIND, path, True, running, "running" if running else "loaded, not running")

    def activate(self, host: Host, written: str, before: Status) -> None:
        domain = self._domain(host)
        if before.registered and written != "unchanged":
            self._ctl(host, "bootout", f"{domain}/{LABEL}")  # reload the changed plist
            before = Status(KIND, before.path, False, False, "")
        self._must(host, "enable", f"{domain}/{LABEL}")  # clears an earlier `launchctl disable`
        if not before.registered:
            self._must(host, "bootstrap", domain, str(self.path(host)))
        elif not before.running:
            self._must(host, "kickstart", f"{domain}/{LABEL}")

    def restart(self, host: Host) -> None:
        self._must(host, "kickstart", "-k", f"{self._domain(host)}/{LABEL}")

    def deactivate(self, host: Host) -> None:
        self._ctl(host, "bootout", f"{self._domain(host)}/{LABEL}")  # fails harmlessly when not loaded
        self.path(host).unlink(missing_ok=True)
