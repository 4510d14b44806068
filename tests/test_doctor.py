"""``peersync doctor``: through the real command line, and in-process on a faked machine.

The command-line tests run on whatever machine runs the tests (no cloud client,
no service): there the service check warns, so a healthy pair exits 1, not 0.
The in-process tests reuse real peers and relays but answer questions about
the machine (cloud clients, processes, attributes, free space) from a
:class:`~peersync.health.FakeSystem`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from conftest import Peer

from peersync import crypto
from peersync.health import FakeSystem, ProcInfo, doctor_main, run_checks
from peersync.health import checks as hc
from peersync.health.report import Check, Report, render
from peersync.health.system import RealSystem
from peersync.health.winattrs import FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS, FILE_ATTRIBUTE_UNPINNED
from peersync.relay import Relay
from peersync.state import State

FIXTURES = Path(__file__).parent / "fixtures" / "clients"
CHECK_KEYS = {"id", "status", "finding", "fix", "details"}
# Free space depends on the machine running the tests; it is checked with a faked disk below.
MACHINE_DEPENDENT = {"relay:docs:space"}


def doctor(peer: Peer, *extra: str) -> tuple[int, dict[str, Any]]:
    result = peer.cli("doctor", "--json", *extra)
    data = json.loads(result.out)
    return result.code, data


def by_id(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in data["checks"]}


def problems(data: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in data["checks"]
            if c["status"] in ("warn", "fail") and c["id"] not in MACHINE_DEPENDENT}


def store_id(peer: Peer) -> str:
    return json.loads((peer.home / "config.json").read_text())["stores"][0]["id"]


def peer_id(peer: Peer) -> str:
    return json.loads((peer.home / "identity.json").read_text())["peer_id"]


def synced_pair(make_peers: Any) -> tuple[Peer, Peer]:
    alice, bob = make_peers(2)
    alice.write("quote.txt", "v1")
    alice.sync()
    bob.sync()
    return alice, bob


def age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


# -- through the command line ---------------------------------------------------------------------------


def test_healthy_pair_without_service_warns_only_about_the_service(make_peers):
    """No service runs during tests: that is the one warning, so the exit status is 1."""
    alice, bob = synced_pair(make_peers)
    code, data = doctor(alice)
    assert problems(data) == {"service": "warn"}
    assert code == 1 and data["status"] == "warn"
    checks = by_id(data)
    bob7 = peer_id(bob)[:7]
    for ok in ("identity", "store:docs:marker", "store:docs:writable", "store:docs:index", "store:docs:last-sync",
               "store:docs:errors", "store:docs:conflicts", "relay:docs:present", "relay:docs:layout",
               "relay:docs:conflicted-copies", "relay:docs:temp-files", "relay:docs:placeholders",
               f"peer:docs:{bob7}", f"peer:docs:{bob7}:clock"):
        assert checks[ok]["status"] == "ok", checks[ok]
    assert checks["cloud:clients"]["status"] == "info"
    assert checks["relay:docs:cloud"]["status"] == "info"
    assert checks["machine:sleep"]["status"] == "info"
    assert "estimate" in checks["relay:docs:propagation"]["finding"]


def test_json_schema(make_peers):
    alice, _ = synced_pair(make_peers)
    code, data = doctor(alice)
    assert set(data) == {"version", "status", "time", "checks"}
    assert data["version"] == 1
    assert data["status"] in ("ok", "warn", "fail")
    assert code == {"ok": 0, "warn": 1, "fail": 2}[data["status"]]
    ids = [c["id"] for c in data["checks"]]
    assert len(ids) == len(set(ids))
    for c in data["checks"]:
        assert set(c) == CHECK_KEYS
        assert c["status"] in ("ok", "info", "warn", "fail")
        assert isinstance(c["finding"], str) and c["finding"] and "\n" not in c["finding"]
        assert isinstance(c["fix"], str) and "\n" not in c["fix"]
        assert isinstance(c["details"], dict)
        if c["status"] in ("warn", "fail"):
            assert c["fix"], c


def test_plain_text_when_not_a_terminal(make_peers):
    alice, _ = synced_pair(make_peers)
    result = alice.cli("doctor")
    assert result.code == 1
    assert "\x1b[" not in result.out
    lines = result.out.strip().splitlines()
    assert any(line.endswith("succeeded") and "store:docs:last-sync" in line for line in lines)
    assert any(line.startswith(("!", "!!")) and " service: " in line for line in lines)
    assert "1 warning" in lines[-1]


def test_running_service_is_healthy(make_peers):
    alice, _bob = synced_pair(make_peers)
    proc = alice.popen("run", "--quiet")
    try:
        deadline = time.monotonic() + 30
        while not (alice.home / "service.pid").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        code, data = doctor(alice)
        service = by_id(data)["service"]
        assert service["status"] == "ok", service
        assert f"pid {proc.pid}" in service["finding"] and "since" in service["finding"]
        assert problems(data) == {}
        assert code in (0, 1) and (code == 0) == (by_id(data)["relay:docs:space"]["status"] == "ok")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_missing_marker_fails(make_peers):
    alice, _ = synced_pair(make_peers)
    (alice.store / ".peersync").unlink()
    code, data = doctor(alice)
    assert code == 2 and data["status"] == "fail"
    marker = by_id(data)["store:docs:marker"]
    assert marker["status"] == "fail" and "marker" in marker["finding"] and marker["fix"]


def test_missing_relay_fails(make_peers):
    alice, _ = synced_pair(make_peers)
    alice.relay.rename(alice.relay.with_name("relay-gone"))
    code, data = doctor(alice)
    assert code == 2
    present = by_id(data)["relay:docs:present"]
    assert present["status"] == "fail" and "missing" in present["finding"]
    assert by_id(data)["store:docs:last-sync"]["status"] == "ok"  # the index is still read


def test_damaged_index_fails(make_peers):
    alice, _ = synced_pair(make_peers)
    index = alice.home / "stores" / store_id(alice) / "index.db"
    for side in (index.with_name("index.db-wal"), index.with_name("index.db-shm")):
        side.unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    code, data = doctor(alice)
    assert code == 2
    check = by_id(data)["store:docs:index"]
    assert check["status"] == "fail" and "rebuild" in check["fix"]


def test_cloud_leftovers_in_the_relay_are_named(make_peers):
    """Dropbox's conflicted copy of a heartbeat, and temporaries stuck for hours, are warnings naming them."""
    alice, bob = synced_pair(make_peers)
    bob_dir = alice.relay / store_id(alice) / "peers" / peer_id(bob)
    copy = bob_dir / "heartbeat (Bob's conflicted copy 2026-11-24).json"
    copy.write_text("{}")
    stuck = bob_dir / "bundles" / ".~tmp-000000000002.psb"
    stuck.parent.mkdir(exist_ok=True)
    stuck.write_bytes(b"partial")
    age(stuck, 3 * 3600)
    own = alice.relay / store_id(alice) / "peers" / peer_id(alice) / ".peersync-tmp-0badc0ffee-heartbeat.json"
    own.write_bytes(b"")
    age(own, 2 * 3600)
    fresh = bob_dir / ".~tmp-peer.json"  # still being written: not reported
    fresh.write_bytes(b"")
    code, data = doctor(alice)
    assert code == 1
    checks = by_id(data)
    copies = checks["relay:docs:conflicted-copies"]
    assert copies["status"] == "warn"
    assert copy.name in copies["finding"] and "Dropbox" in copies["finding"]
    assert copies["details"]["files"][0]["copy_of"] == "heartbeat.json"
    temps = checks["relay:docs:temp-files"]
    assert temps["status"] == "warn"
    assert stuck.name in temps["finding"] and own.name in temps["finding"]
    assert fresh.name not in temps["finding"] and temps["details"]["in_transit"] == 1
    assert set(problems(data)) == {"service", "relay:docs:conflicted-copies", "relay:docs:temp-files"}


def test_silent_peer_is_a_warning(make_peers):
    """Bob's last heartbeat is three days old: his laptop sleeps or his cloud client stopped."""
    alice, bob = synced_pair(make_peers)
    old = time.time() - 3 * 86400
    key = crypto.SigningKey.from_bytes((bob.home / "identity.key").read_bytes())
    relay = Relay(alice.relay, store_id(alice))
    with mock.patch("peersync.relay.time.time", return_value=old):
        relay.write_heartbeat(peer_id(bob), {"name": "bob", "applied": {}, "published": 0, "health": "ok"}, key)
    age(relay.peer_dir(peer_id(bob)) / "heartbeat.json", 3 * 86400)
    code, data = doctor(alice)
    assert code == 1
    check = by_id(data)[f"peer:docs:{peer_id(bob)[:7]}"]
    assert check["status"] == "warn"
    assert "silent for 3.0 days" in check["finding"] and "sleeps" in check["fix"]
    # A late heartbeat is not taken for a clock difference (it may just have been delivered late).
    assert by_id(data)[f"peer:docs:{peer_id(bob)[:7]}:clock"]["status"] == "ok"


def test_peer_clock_ahead_is_a_warning(make_peers):
    alice, bob = synced_pair(make_peers)
    key = crypto.SigningKey.from_bytes((bob.home / "identity.key").read_bytes())
    relay = Relay(alice.relay, store_id(alice))
    with mock.patch("peersync.relay.time.time", return_value=time.time() + 3600):
        relay.write_heartbeat(peer_id(bob), {"name": "bob", "applied": {}, "published": 0, "health": "ok"}, key)
    code, data = doctor(alice)
    clock = by_id(data)[f"peer:docs:{peer_id(bob)[:7]}:clock"]
    assert clock["status"] == "warn" and "ahead" in clock["finding"] and "approximate" in clock["finding"]
    assert code == 1


def test_no_identity_fails_without_traceback(tmp_path):
    peer = Peer("nobody", tmp_path / "empty-home", tmp_path / "s", tmp_path / "r")
    code, data = doctor(peer)
    assert code == 2
    assert by_id(data)["identity"]["status"] == "fail"


# -- in-process, on a faked machine -----------------------------------------------------------------------


def fake(peer: Peer, **kw: Any) -> FakeSystem:
    kw.setdefault("platform", "linux")
    return FakeSystem(home=peer.home.parent / "fake-home", user=RealSystem().user, **kw)


def run(peer: Peer, system: FakeSystem) -> dict[str, Check]:
    report = run_checks(State(peer.home), system)
    return {c.id: c for c in report.checks}


def test_relay_inside_dropbox_with_the_client_running_as_another_user(make_peers, tmp_path):
    alice, _ = synced_pair(make_peers)
    info = tmp_path / "fake-home" / ".dropbox" / "info.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"personal": {"path": str(alice.relay)}}))
    system = fake(alice, processes=[ProcInfo(77, "dropbox", "somebody-else")])
    checks = run(alice, system)
    assert checks["relay:docs:cloud"].status == "ok" and "Dropbox" in checks["relay:docs:cloud"].finding
    assert checks["relay:docs:client"].status == "warn" and "somebody-else" in checks["relay:docs:client"].finding
    assert checks["store:docs:location"].status == "ok"


def test_store_inside_a_cloud_folder_is_a_warning(make_peers, tmp_path):
    """Both the cloud client and peersync would sync the store: the cloud makes conflicted copies."""
    alice, _ = synced_pair(make_peers)
    info = tmp_path / "fake-home" / ".dropbox" / "info.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"personal": {"path": str(tmp_path)}}))
    checks = run(alice, fake(alice, processes=[ProcInfo(77, "dropbox", RealSystem().user)]))
    assert checks["store:docs:location"].status == "warn"
    assert checks["relay:docs:client"].status == "ok"


def test_online_only_files_in_a_onedrive_relay(make_peers, tmp_path):
    """OneDrive Files On-Demand made a bundle online-only: pin the relay (attrib +p -u)."""
    alice, bob = synced_pair(make_peers)
    bundle = alice.relay / store_id(alice) / "peers" / peer_id(alice) / "bundles" / "000000000001.psb"
    assert bundle.exists()
    system = fake(alice, platform="windows",
                  registry={"HKCU\\Software\\Microsoft\\OneDrive\\Accounts\\Personal": {"UserFolder": str(tmp_path)}},
                  processes=[ProcInfo(5, "OneDrive.exe", f"PC\\{RealSystem().user}")],
                  attributes={str(bundle): FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS | FILE_ATTRIBUTE_UNPINNED})
    checks = run(alice, system)
    placeholders = checks["relay:docs:placeholders"]
    assert placeholders.status == "warn" and "000000000001.psb" in placeholders.finding
    assert "attrib +p -u" in placeholders.fix and str(alice.relay) in placeholders.fix
    assert checks["relay:docs:cloud"].status == "ok" and "OneDrive" in checks["relay:docs:cloud"].finding


@pytest.mark.parametrize("free,status", [(50 * 1024**2, "fail"), (500 * 1024**2, "warn"), (3 * 1024**3, "warn"),
                                         (30 * 1024**3, "ok")])
def test_free_space_on_the_relay_disk(make_peers, free, status):
    """3 GiB free of 100 GiB is under 5%: a warning; 30 GiB is plenty whatever the ratio."""
    alice, _ = synced_pair(make_peers)
    checks = run(alice, fake(alice, disk=(100 * 1024**3, free)))
    assert checks["relay:docs:space"].status == status


def test_unresponsive_relay_is_reported_within_the_deadline(make_peers, monkeypatch):
    """A relay on a network share that went away hangs; the doctor gives up on it and goes on."""
    alice, _ = synced_pair(make_peers)
    monkeypatch.setattr(hc, "RELAY_TIMEOUT_SECONDS", 0.2)
    checks = run(alice, fake(alice, slow_dirs={str(alice.relay): 3.0}))  # it would answer after 3 s
    assert checks["relay:docs:present"].status == "fail" and "did not answer" in checks["relay:docs:present"].finding
    assert checks["store:docs:last-sync"].status == "ok"


@pytest.mark.parametrize("cmdline,user,status,words", [
    (("python", "-m", "peersync", "run", "--quiet"), None, "ok", "running"),
    (("C:\\Tools\\peersync.exe", "-q", "run"), None, "ok", "running"),
    (("python", "-m", "peersync", "sync"), None, "warn", "one-off"),
    (("python", "-m", "peersync", "run"), "mallory", "warn", "runs as mallory"),
])
def test_service_process(make_peers, cmdline, user, status, words):
    alice, _ = synced_pair(make_peers)
    me = RealSystem().user
    (alice.home / "service.pid").write_text(f"4242 {time.time()}\n")
    proc = ProcInfo(4242, "python", user or me, time.time() - 3600, cmdline)
    check = run(alice, fake(alice, processes=[proc]))["service"]
    assert check.status == status and words in check.finding


def test_stale_service_pid_file(make_peers):
    """A service killed without cleanup leaves its pid file; a reused pid started later is not it."""
    alice, _ = synced_pair(make_peers)
    (alice.home / "service.pid").write_text("4242 0\n")
    os.utime(alice.home / "service.pid", (time.time() - 7200, time.time() - 7200))
    reused = ProcInfo(4242, "chrome", RealSystem().user, time.time() - 60, ("chrome",))
    for procs in ([], [reused]):
        check = run(alice, fake(alice, processes=procs))["service"]
        assert check.status == "warn" and "has ended" in check.finding


def test_windows_power_plan_is_information_only(make_peers):
    alice, _ = synced_pair(make_peers)
    output = (FIXTURES / "powercfg-standbyidle-en.txt").read_text("utf-8")
    check = run(alice, fake(alice, platform="windows", powercfg_output=output))["machine:sleep"]
    assert check.status == "info" and "after 30 min" in check.finding and "standby-timeout-ac 0" in check.fix


def test_doctor_main_renders_and_returns_the_exit_status(make_peers):
    alice, _ = synced_pair(make_peers)
    out = io.StringIO()
    code = doctor_main(State(alice.home), argparse.Namespace(json=True), fake(alice), out)
    data = json.loads(out.getvalue())
    assert code == {"ok": 0, "warn": 1, "fail": 2}[data["status"]]


def test_table_on_a_terminal_and_ascii_fallback():
    report = Report([Check("service", "warn", "not running", "start it"), Check("identity", "ok", "peer x")])

    class Terminal(io.StringIO):
        encoding = "utf-8"

        def isatty(self) -> bool:
            return True

    class Cp1252(io.StringIO):
        encoding = "cp1252"

    tty = Terminal()
    render(report, False, tty)
    assert "✓" in tty.getvalue() and "not running" in tty.getvalue() and "│" in tty.getvalue()
    legacy = Cp1252()
    render(report, False, legacy)
    assert legacy.getvalue().splitlines()[0] == "!! service: not running -- start it"
    legacy.getvalue().encode("cp1252")


def test_check_rejects_an_unknown_status():
    with pytest.raises(ValueError):
        Check("x", "maybe", "?")


def test_relay_walk_classifies_what_it_finds(tmp_path):
    """Layout files pass; service copies, stuck temporaries, litter and strangers are told apart."""
    peer = "A" * 26
    root = tmp_path / "STOREID"
    bundles = root / "peers" / peer / "bundles"
    bundles.mkdir(parents=True)
    (root / "store.json").write_text("{}")
    for name in ("peer.json", "heartbeat.json"):
        (root / "peers" / peer / name).write_text("{}")
    (bundles / "000000000001.psb").write_bytes(b"x")
    (bundles / "000000000001-LAPTOP-7.psb").write_bytes(b"x")  # OneDrive "keep both"
    (root / "peers" / peer / "heartbeat 2.json").write_text("{}")  # iCloud-style duplicate
    (root / "notes (1).txt").write_text("a user's file")  # " (1)" but no notes.txt: not a copy
    (root / ".DS_Store").write_bytes(b"")
    (root / "peers" / peer / "snapshots").mkdir()
    (root / "peers" / peer / "snapshots" / "0001.snap").write_bytes(b"")
    stale = bundles / ".peersync-tmp-1a2b-000000000002.psb"
    stale.write_bytes(b"")
    age(stale, 2 * 3600)
    scan = hc.scan_relay(root, FakeSystem("linux", tmp_path), None, time.time())
    assert sorted((c["path"], c["copy_of"]) for c in scan.conflicts) == [
        (f"peers/{peer}/bundles/000000000001-LAPTOP-7.psb", "000000000001.psb"),
        (f"peers/{peer}/heartbeat 2.json", "heartbeat.json"),
    ]
    assert [t["path"] for t in scan.stuck] == [f"peers/{peer}/bundles/{stale.name}"]
    assert scan.unknown == ["notes (1).txt"]
    assert scan.placeholders == [] and not scan.truncated


@pytest.mark.parametrize("schedule,late_after", [
    ("continuous", hc.STALE_SYNC_SECONDS), ("every 12h", 36 * 3600), ("daily 18:30", 30 * 3600),
    ("weekly mon 09:00", 8 * 86400), ("manual", None), ("nonsense", hc.STALE_SYNC_SECONDS),
])
def test_a_late_sync_depends_on_the_store_schedule(schedule, late_after):
    assert hc.stale_after(schedule) == late_after


def test_info_never_raises_the_status():
    assert Report([Check("a", "ok", "x"), Check("b", "info", "y")]).exit_code == 0
    assert Report([Check("a", "info", "x"), Check("b", "warn", "y", "z")]).status == "warn"
