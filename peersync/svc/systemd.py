"""Linux: ``peersync run`` as a systemd user unit, ``~/.config/systemd/user/peersync.service``.

A user unit belongs to one OS user: it lives in that user's home, runs in
that user's systemd manager (started at their first login, or at boot with
``loginctl enable-linger``) and is driven with ``systemctl --user``.
"""

from __future__ import annotations

import re
from pathlib import Path

from .host import Completed, Host
from .spec import ServiceError, ServiceSpec, Status

KIND = "systemd user unit"
UNIT = "peersync.service"

_PLAIN = re.compile(r"[A-Za-z0-9_./:+@=,-]+")


def _quote(word: str, *, exec_line: bool) -> str:
    """One word as systemd reads it back: double quotes with C escapes when needed.

    ``%`` starts a specifier everywhere (``%%`` is a literal one); in command
    lines ``$`` starts a variable (``$$`` is a literal one).
    """
    if "\n" in word or "\r" in word:
        raise ServiceError(f"{word!r} holds a line break, which a systemd unit cannot carry",
                           "use a path without line breaks")
    escaped = word.replace("%", "%%")
    if exec_line:
        escaped = escaped.replace("$", "$$")
    if _PLAIN.fullmatch(word):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(spec: ServiceSpec) -> str:
    """The unit file's text for ``spec``: the same spec always gives the same bytes."""
    exec_start = " ".join(_quote(w, exec_line=True) for w in [spec.python, *spec.run_args()])
    lines = [
        f"# Written by `peersync service install` for {spec.user}; `peersync service uninstall` removes it.",
        "[Unit]",
        f"Description=peersync folder sync for {spec.user.replace('%', '%%')}",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
    ]
    if spec.peersync_home:
        lines.append("Environment=" + _quote(f"PEERSYNC_HOME={spec.peersync_home}", exec_line=False))
    lines += [
        # peersync run exits 0 after SIGTERM and non-zero when it fails: restart only then.
        "Restart=on-failure",
        "RestartSec=30",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ]
    return "\n".join(lines)


def unit_dir(host: Host) -> Path:
    config = host.env.get("XDG_CONFIG_HOME", "")
    base = Path(config) if config and Path(config).is_absolute() else host.home / ".config"
    return base / "systemd" / "user"


class Systemd:
    kind = KIND

    def path(self, host: Host) -> Path:
        return unit_dir(host) / UNIT

    def render(self, spec: ServiceSpec) -> str:
        return render_unit(spec)

    def encode(self, text: str) -> bytes:
        return text.encode("utf-8")

    def _ctl(self, host: Host, *args: str) -> Completed:
        return host.run(["systemctl", "--user", *args])

    def _must(self, host: Host, *args: str) -> None:
        done = self._ctl(host, *args)
        if done.returncode == 127:
            raise ServiceError(f"systemctl is not available on this machine ({done.detail()})",
                               "start `peersync run` from your session's autostart instead")
        if not done.ok:
            raise ServiceError(
                f"`systemctl --user {' '.join(args)}` failed ({done.detail()})",
                "run `peersync service install` again from the user's own login session (for a user "
                "who is not logged in, `loginctl enable-linger USER` first); the unit file is in place",
            )

    def query(self, host: Host) -> Status:
        path = self.path(host)
        if not path.exists():
            return Status(KIND, path, False, False, "not installed")
        enabled = self._ctl(host, "is-enabled", UNIT).stdout.strip()
        active = self._ctl(host, "is-active", UNIT).stdout.strip()
        return Status(KIND, path, enabled == "enabled", active == "active",
                      f"{enabled or 'unknown'}, {active or 'unknown'}")

    def activate(self, host: Host, written: str, before: Status) -> None:
        if written != "unchanged":
            self._must(host, "daemon-reload")
        if written == "replaced" and before.running:
            self._must(host, "enable", UNIT)
            self._must(host, "restart", UNIT)
        else:
            self._must(host, "enable", "--now", UNIT)

    def restart(self, host: Host) -> None:
        self._must(host, "restart", UNIT)

    def deactivate(self, host: Host) -> None:
        self._ctl(host, "disable", "--now", UNIT)  # fails harmlessly when it was never loaded
        self.path(host).unlink(missing_ok=True)
        self._ctl(host, "daemon-reload")
        self._ctl(host, "reset-failed", UNIT)
