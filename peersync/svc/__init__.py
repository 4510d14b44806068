"""Service registration: run ``peersync run`` for this OS user at logon, restarted when it fails.

One platform module each, picked by :func:`backend_for`:

    systemd.py   Linux: a systemd user unit (``systemctl --user``)
    launchd.py   macOS: a LaunchAgent in the ``gui/<uid>`` domain (``launchctl``)
    windows.py   Windows: a Task Scheduler task at the user's logon (``schtasks``)

Generation is pure (``render_unit``, ``render_plist``, ``render_task`` turn a
:class:`ServiceSpec` into text); everything that touches the machine goes
through a :class:`Host` (a base folder and a command runner), so tests run
every platform's registration on any machine. Registration is per OS user
and idempotent: installing twice leaves the file untouched and says
"already installed". Uninstalling removes the registration and never the
state folder (identity, keys, indexes, versions).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Protocol

from ..errors import RefusedError, UsageError
from ..state import State
from .host import Completed, Host, Runner, system_runner, write_if_changed
from .launchd import Launchd, render_plist
from .spec import ServiceError, ServiceSpec, Status
from .systemd import Systemd, render_unit
from .windows import Windows, render_task, task_name

__all__ = [
    "Backend",
    "Completed",
    "Host",
    "Report",
    "Runner",
    "ServiceError",
    "ServiceSpec",
    "Status",
    "backend_for",
    "ensure_store",
    "install",
    "render_plist",
    "render_task",
    "render_unit",
    "spec_for",
    "status",
    "system_runner",
    "task_name",
    "uninstall",
]


class Backend(Protocol):
    """One platform's registration; every OS call goes through the ``Host`` it is given."""

    kind: str

    def path(self, host: Host) -> Path: ...
    def render(self, spec: ServiceSpec) -> str: ...
    def encode(self, text: str) -> bytes: ...
    def query(self, host: Host) -> Status: ...
    def activate(self, host: Host, written: str, before: Status) -> None: ...
    def restart(self, host: Host) -> None: ...
    def deactivate(self, host: Host) -> None: ...


def backend_for(platform: str) -> Backend:
    """The registration for ``platform`` (a ``sys.platform`` value)."""
    if platform.startswith("linux"):
        return Systemd()
    if platform == "darwin":
        return Launchd()
    if platform in ("win32", "cygwin"):
        return Windows()
    raise UsageError(f"peersync cannot register a service on {platform}",
                     "start `peersync run` from the session's autostart instead")


def spec_for(host: Host) -> ServiceSpec:
    return ServiceSpec(python=host.python, user=host.user, home=str(host.home), peersync_home=host.peersync_home)


@dataclasses.dataclass
class Report:
    """What a service command did, as lines for the user; ``changed`` is False when nothing was touched."""

    changed: bool
    lines: list[str]


# -- checks --------------------------------------------------------------------------


def _check_user(host: Host, state: State) -> None:
    """Refuse to register a service for the wrong user (Invariant 6: per-user isolation)."""
    if host.uid == 0 and host.env.get("SUDO_USER") and host.env.get("SUDO_USER") != "root":
        raise RefusedError(
            "`peersync service install` registers the service for the user who runs it, "
            f"and this runs as root through sudo for {host.env['SUDO_USER']}",
            f"run it as {host.env['SUDO_USER']} without sudo",
        )
    if host.uid is not None and state.root.exists() and hasattr(os, "getuid"):
        owner = state.root.stat().st_uid
        if owner != host.uid:
            raise RefusedError(
                f"the state folder {state.root} belongs to user id {owner}, not to {host.user} (id {host.uid})",
                "each OS user installs the service with their own state folder",
            )
    if state.exists:
        state.identity()  # refuses a state folder copied from another user or machine


def _installed_warning(host: Host) -> str | None:
    if os.path.abspath(sys.executable) != host.python:
        return None
    try:
        importlib.metadata.distribution("peersync")
    except importlib.metadata.PackageNotFoundError:
        return (f"! peersync is not installed in {host.python} (this runs from a checkout), so the service "
                "may not find it: install it with pip, or use scripts/install.sh")
    return None


# -- store setup -------------------------------------------------------------------------


def ensure_store(state: State, store: str | None, relay: str | None, invite: str | None,
                 name: str | None = None) -> tuple[bool, str] | None:
    """Set up the store the install options name, unless this peer already keeps it.

    ``--store`` and ``--relay`` run ``init`` when the folder is not yet one of
    this peer's stores; with ``--invite`` they run ``join`` unless this peer
    already keeps the invited store there. Returns whether it changed anything
    and a line for the user, or None when no store option was given.
    """
    from ..store import init_store, join_store, read_invite

    if store is None and relay is None and invite is None:
        return None
    if store is None or relay is None:
        raise UsageError("--store and --relay go together (and --invite needs both)",
                         "give the store folder and this machine's relay folder")
    folder = Path(store).expanduser().absolute()
    relay_dir = Path(relay).expanduser().absolute()
    if invite is not None:
        store_id = read_invite(invite)["store"]
        kept = [s for s in state.stores() if s.id == store_id and s.root == folder]
    else:
        kept = [s for s in state.stores() if s.root == folder]
    if kept:
        cfg = kept[0]
        note = "" if Path(cfg.relay) == relay_dir else f" (its relay stays {cfg.relay})"
        return False, f"Store {cfg.name} is already set up in {cfg.path}{note}."
    if invite is not None:
        cfg, present = join_store(state, invite, folder, relay_dir)
        later = "" if present else "; it syncs once your cloud client has delivered the relay"
        return True, f"Joined store {cfg.name} in {cfg.path}, relayed through {cfg.relay}{later}."
    cfg = init_store(state, folder, relay_dir, name)
    return True, f"Created store {cfg.name} in {cfg.path}, relayed through {cfg.relay}."


# -- commands --------------------------------------------------------------------------


def install(host: Host, state: State, *, store: str | None = None, relay: str | None = None,
            invite: str | None = None, name: str | None = None, restart: bool = False) -> Report:
    """Set up the named store if needed, then register and start the service for ``host.user``."""
    backend = backend_for(host.platform)
    _check_user(host, state)
    lines: list[str] = []
    setup = ensure_store(state, store, relay, invite, name)
    store_changed = False
    if setup:
        store_changed, line = setup
        lines.append(line)
    path = backend.path(host)
    data = backend.encode(backend.render(spec_for(host)))
    before = backend.query(host)
    unchanged = path.exists() and path.read_bytes() == data
    where = f"{backend.kind} {path}"
    if unchanged and before.registered and before.running:
        if restart:
            backend.restart(host)
            lines.append(f"peersync service restarted for {host.user} ({where}).")
            return Report(True, lines)
        lines.append(f"peersync service already installed for {host.user} and running ({where}).")
        return Report(store_changed, lines)
    written = write_if_changed(path, data)
    backend.activate(host, written, before)
    if written == "unchanged":
        lines.append(f"peersync service already installed for {host.user}; started it ({where}).")
    else:
        verb = "installed" if written == "created" else "updated"
        lines.append(f"peersync service {verb} for {host.user} and started ({where}); "
                     "it starts at each logon and restarts when it fails.")
    if not state.stores():
        lines.append("! this peer keeps no store yet: the service waits for one. "
                     "Run `peersync init` or `peersync join`.")
    warning = _installed_warning(host)
    if warning:
        lines.append(warning)
    return Report(True, lines)


def uninstall(host: Host, state: State) -> Report:
    """Stop the service and remove its registration; the state folder, data and keys stay."""
    backend = backend_for(host.platform)
    before = backend.query(host)
    path = backend.path(host)
    if not path.exists() and not before.registered:
        return Report(False, [f"peersync service is not installed for {host.user}; nothing to remove."])
    backend.deactivate(host)
    return Report(True, [
        f"peersync service removed for {host.user} ({backend.kind} {path}).",
        f"Data and keys are kept in {state.root}; the stores' folders are untouched.",
    ])


def status(host: Host) -> tuple[Status, Report]:
    """Whether the service is registered and running for ``host.user``."""
    backend = backend_for(host.platform)
    st = backend.query(host)
    if st.registered:
        line = (f"{'✓' if st.running else '✗'} peersync service for {host.user} is registered "
                f"and {'running' if st.running else 'not running'} ({st.kind} {st.path}: {st.detail}).")
    elif st.path.exists():
        line = f"✗ {st.kind} {st.path} exists but is not registered ({st.detail}): run `peersync service install`."
    else:
        line = f"✗ peersync service is not installed for {host.user}: run `peersync service install`."
    return st, Report(False, [line])
