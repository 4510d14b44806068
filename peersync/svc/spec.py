"""What a service registration says, independent of the platform: the command, the user, the state folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import PeersyncError

#: The arguments after the interpreter: the background service in the foreground.
RUN_ARGS = ("-m", "peersync", "run")


class ServiceError(PeersyncError):
    """systemctl, launchctl or schtasks refused; the message carries its own words."""

    exit_status = 1


@dataclasses.dataclass(frozen=True)
class ServiceSpec:
    """Everything a unit file, plist or task XML is generated from (pure data, no OS calls)."""

    #: Absolute path of the interpreter that runs ``-m peersync run``.
    python: str
    #: The OS user the service belongs to (``DOMAIN\\name`` on Windows); named in the registration.
    user: str
    #: The user's home folder: the service's working directory.
    home: str
    #: ``PEERSYNC_HOME`` passed to the service, or None for the platform's default state folder.
    peersync_home: str | None = None

    def run_args(self) -> list[str]:
        return list(RUN_ARGS)


@dataclasses.dataclass(frozen=True)
class Status:
    """Whether the service is registered with the OS and running, as the OS reports it."""

    kind: str
    path: Path
    registered: bool
    running: bool
    detail: str
