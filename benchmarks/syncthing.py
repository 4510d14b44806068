"""Two Syncthing instances on 127.0.0.1 sharing one folder, driven through the REST API.

Each instance has its own home (``--home``) and a generated config: GUI/API on
127.0.0.1 at a free port with a random API key, sync protocol listening on
tcp://127.0.0.1:PORT, discovery, relays, NAT, STUN, usage and crash reporting
and upgrades off. The devices are introduced to each other by ID with their
127.0.0.1 addresses. Only the processes started here are ever stopped.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .common import BenchError, RssSampler, free_port, start, stop, wait_for

FOLDER = "bench"


class Instance:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.gui_port = free_port()
        self.listen_port = free_port()
        self.apikey = secrets.token_urlsafe(24)
        self.device_id = ""
        self.proc: subprocess.Popen[Any] | None = None

    def generate(self) -> None:
        r = subprocess.run(["syncthing", "generate", f"--home={self.home}", "--no-default-folder",
                            "--skip-port-probing"], capture_output=True, text=True, timeout=120)
        m = re.search(r"Device ID:\s*([A-Z0-9-]{63})", r.stdout + r.stderr)
        if r.returncode != 0 or not m:
            raise BenchError(f"syncthing generate failed: {r.stderr[-500:]}")
        self.device_id = m.group(1)

    def api(self, method: str, path: str, params: dict[str, str] | None = None, body: Any = None,
            timeout: float = 600) -> Any:
        url = f"http://127.0.0.1:{self.gui_port}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={"X-API-Key": self.apikey})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")

    def status(self) -> dict[str, Any]:
        return self.api("GET", "/rest/db/status", {"folder": FOLDER}, timeout=60)  # type: ignore[no-any-return]


def _set(parent: ET.Element, tag: str, value: str) -> None:
    el = parent.find(tag)
    if el is None:
        el = ET.SubElement(parent, tag)
    el.text = value


class SyncthingPair:
    """``a`` and ``b`` are the folder paths; the folder has ID ``bench`` on both."""

    def __init__(self, base: Path, a: Path, b: Path, *, watcher: bool = False, watcher_delay: int = 1,
                 rescan_s: int = 0) -> None:
        self.base = base
        self.paths = (a, b)
        self.inst = (Instance(base / "st-home-a"), Instance(base / "st-home-b"))
        self.watcher, self.watcher_delay, self.rescan_s = watcher, watcher_delay, rescan_s
        self.sampler: RssSampler | None = None

    # -- configuration ------------------------------------------------------------

    def _configure(self, me: Instance, other: Instance, path: Path) -> None:
        cfg_path = me.home / "config.xml"
        tree = ET.parse(cfg_path)
        root = tree.getroot()
        gui = root.find("gui")
        assert gui is not None
        gui.set("enabled", "true")
        gui.set("tls", "false")
        _set(gui, "address", f"127.0.0.1:{me.gui_port}")
        _set(gui, "apikey", me.apikey)
        opts = root.find("options")
        assert opts is not None
        for el in opts.findall("listenAddress"):
            opts.remove(el)
        _set(opts, "listenAddress", f"tcp://127.0.0.1:{me.listen_port}")
        for tag, value in {
            "globalAnnounceEnabled": "false", "localAnnounceEnabled": "false", "relaysEnabled": "false",
            "natEnabled": "false", "urAccepted": "-1", "urSeen": "3", "autoUpgradeIntervalH": "0",
            "crashReportingEnabled": "false", "startBrowser": "false", "stunKeepaliveStartS": "0",
            "announceLANAddresses": "false", "setLowPriority": "false", "reconnectionIntervalS": "5",
            "progressUpdateIntervalS": "-1",
        }.items():
            _set(opts, tag, value)
        for el in opts.findall("globalAnnounceServer"):
            opts.remove(el)
        # The other device, by ID, at its 127.0.0.1 address.
        mine = root.find("device")
        assert mine is not None
        peer = ET.fromstring(ET.tostring(mine))
        peer.set("id", other.device_id)
        peer.set("name", other.home.name)
        for el in peer.findall("address"):
            peer.remove(el)
        addr = ET.Element("address")
        addr.text = f"tcp://127.0.0.1:{other.listen_port}"
        peer.insert(0, addr)
        root.insert(list(root).index(mine) + 1, peer)
        # The folder, shared with both, modelled on the generated defaults.
        template = root.find("defaults/folder")
        assert template is not None
        folder = ET.fromstring(ET.tostring(template))
        folder.set("id", FOLDER)
        folder.set("label", FOLDER)
        folder.set("path", str(path))
        folder.set("type", "sendreceive")
        folder.set("rescanIntervalS", str(self.rescan_s))
        folder.set("fsWatcherEnabled", "true" if self.watcher else "false")
        folder.set("fsWatcherDelayS", str(self.watcher_delay))
        for el in folder.findall("device"):
            folder.remove(el)
        for dev in (me, other):
            d = ET.Element("device", {"id": dev.device_id, "introducedBy": ""})
            ET.SubElement(d, "encryptionPassword").text = ""
            folder.insert(1, d)
        root.insert(0, folder)
        tree.write(cfg_path)

    # -- life cycle ---------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        for inst in self.inst:
            inst.generate()
        a, b = self.inst
        for path in self.paths:
            (path / ".stfolder").mkdir(parents=True, exist_ok=True)
        self._configure(a, b, self.paths[0])
        self._configure(b, a, self.paths[1])
        env = {"STNOUPGRADE": "1", "STNODEFAULTFOLDER": "1", "STNORESTART": "1", "HOME": str(self.base),
               "PATH": "/usr/bin:/bin"}
        for inst in self.inst:
            inst.proc = start(["syncthing", "serve", f"--home={inst.home}", "--no-browser", "--no-restart",
                               "--no-upgrade", f"--logfile={inst.home / 'syncthing.log'}"], env=env,
                              log_path=inst.home / "stdout.log")
        self.sampler = RssSampler([i.proc.pid for i in self.inst if i.proc])
        self.sampler.__enter__()
        for inst in self.inst:
            def up(inst: Instance = inst) -> bool:
                return inst.api("GET", "/rest/system/ping", timeout=5) is not None

            wait_for(up, timeout, f"syncthing API on port {inst.gui_port}", interval=0.2)
        wait_for(self.connected, timeout, "the two syncthing instances to connect", interval=0.2)

    def connected(self) -> bool:
        a, b = self.inst
        conns = a.api("GET", "/rest/system/connections", timeout=10)["connections"]
        return bool(conns.get(b.device_id, {}).get("connected"))

    def idle(self, i: int) -> bool:
        return self.inst[i].status().get("state") == "idle"

    def in_sync(self, files: int) -> bool:
        """Both have ``files`` files, nothing needed, both idle."""
        for inst in self.inst:
            s = inst.status()
            if s.get("state") != "idle" or s.get("needTotalItems", 1) != 0 or s.get("localFiles") != files:
                return False
        return True

    def scan(self, i: int, timeout: float = 3600) -> None:
        """POST /rest/db/scan (returns when the scan is done) on instance ``i``."""
        self.inst[i].api("POST", "/rest/db/scan", {"folder": FOLDER}, timeout=timeout)

    def peak_rss(self) -> int:
        """Largest RSS of either instance since start or the last reset, in KiB."""
        return max(self.sampler.peak.values()) // 1024 if self.sampler else 0

    def version(self) -> str:
        return str(self.inst[0].api("GET", "/rest/system/version", timeout=10).get("longVersion", ""))

    def stop(self) -> None:
        if self.sampler:
            self.sampler.__exit__()
        for inst in self.inst:
            if inst.proc and inst.proc.poll() is None:
                try:
                    inst.api("POST", "/rest/system/shutdown", timeout=10)
                    inst.proc.wait(timeout=20)
                except Exception:
                    pass
            if inst.proc:
                stop(inst.proc)

    def __enter__(self) -> SyncthingPair:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_complete(pair: SyncthingPair, i: int, files: int, timeout: float, interval: float = 0.05) -> float:
    """Seconds until instance ``i`` holds ``files`` files and needs nothing."""

    def done() -> bool:
        s = pair.inst[i].status()
        return s.get("localFiles") == files and s.get("needTotalItems", 1) == 0 and s.get("state") == "idle"

    return wait_for(done, timeout, f"syncthing {i} to hold {files} files", interval=interval)


def settle(pair: SyncthingPair, files: int, timeout: float) -> None:
    wait_for(lambda: pair.in_sync(files), timeout, f"both syncthing instances to hold {files} files", interval=0.2)
    time.sleep(0.5)
