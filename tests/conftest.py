"""Shared fixtures: peers on one machine, each with its own state folder, store and (optionally) relay.

Every peer is driven through the real command line in a subprocess
(``python -m peersync``), exactly as a user or the service would run it.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# PEERSYNC_TEST_SUBPROCESS=1: every command in its own interpreter, as slow as real use.
SUBPROCESS = os.environ.get("PEERSYNC_TEST_SUBPROCESS") == "1"
sys.path.insert(0, str(Path(__file__).resolve().parent))


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]


@dataclass
class Peer:
    name: str
    home: Path
    store: Path
    relay: Path
    env: dict[str, str] = field(default_factory=dict)

    def cli(self, *args: str, check: int | None = None, timeout: float = 120) -> Result:
        """Run ``peersync ARGS`` as this peer; with ``check``, assert the exit status.

        One-shot commands run the CLI's ``main`` in this process (the same code
        path, without 0.3 s of interpreter start-up each); ``run`` and ``demo``,
        and every command when PEERSYNC_TEST_SUBPROCESS=1, run as a real
        ``python -m peersync`` subprocess.
        """
        if args and args[0] not in ("run", "demo") and not SUBPROCESS:
            result = self._cli_in_process(args)
        else:
            env = dict(os.environ, PEERSYNC_HOME=str(self.home), PYTHONPATH=str(ROOT), **self.env)
            done = subprocess.run([sys.executable, "-m", "peersync", *args], env=env, capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
            result = Result(done.returncode, done.stdout, done.stderr)
        if check is not None:
            assert result.code == check, f"peersync {' '.join(args)} -> {result.code}\n{result.out}\n{result.err}"
        assert "Traceback" not in result.err, result.err
        return result

    def _cli_in_process(self, args: tuple[str, ...]) -> Result:
        from peersync.cli import main

        saved = dict(os.environ)
        out, err = io.StringIO(), io.StringIO()
        os.environ.update(PEERSYNC_HOME=str(self.home), **self.env)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        return Result(code, out.getvalue(), err.getvalue())

    def sync(self, *args: str, check: int | None = 0) -> Result:
        return self.cli("sync", *args, check=check)

    def popen(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        env = dict(os.environ, PEERSYNC_HOME=str(self.home), PYTHONPATH=str(ROOT), **self.env)
        return subprocess.Popen([sys.executable, "-m", "peersync", *args], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]

    def write(self, rel: str, data: bytes | str) -> Path:
        p = self.store / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        p.write_bytes(data)
        return p

    def read(self, rel: str) -> bytes:
        return (self.store / rel).read_bytes()


def tree(root: Path, *, ignore_marker: bool = True) -> dict[str, bytes | None]:
    """Every file (bytes) and folder (None) under ``root``, by '/'-path, the marker left out."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for d in dirnames:
            out[prefix + d] = None
        for f in filenames:
            if ignore_marker and prefix == "" and f == ".peersync":
                continue
            out[prefix + f] = (Path(dirpath) / f).read_bytes()
    return out


@pytest.fixture
def make_peers(tmp_path: Path) -> Callable[..., list[Peer]]:
    """``make_peers(n, shared_relay=True)``: n peers that share one store (the first inits, others join).

    With ``shared_relay=False`` every peer gets its own relay folder; the test
    moves files between them (see cloudsim).
    """

    def make(n: int = 2, shared_relay: bool = True, join: bool = True, name: str = "docs") -> list[Peer]:
        names = ["alice", "bob", "carol", "dave", "erin"][:n]
        shared = tmp_path / "relay"
        peers = []
        for who in names:
            relay = shared if shared_relay else tmp_path / f"relay-{who}"
            relay.mkdir(exist_ok=True)
            peers.append(Peer(who, tmp_path / f"home-{who}", tmp_path / who, relay))
        first = peers[0]
        first.cli("init", str(first.store), "--relay", str(first.relay), "--name", name, check=0)
        if join:
            code = first.cli("invite", name, check=0).last_line
            for p in peers[1:]:
                if not shared_relay:
                    from cloudsim import mirror_now

                    mirror_now(first.relay, p.relay)
                p.cli("join", code, str(p.store), "--relay", str(p.relay), check=0)
        return peers

    return make


@pytest.fixture
def peers(make_peers: Callable[..., list[Peer]]) -> Iterator[list[Peer]]:
    yield make_peers(2)
