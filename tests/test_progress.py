"""`peersync sync` shows each stage's progress against its total: rich bars on a terminal, log lines elsewhere.

Totals are known before a stage runs: scan (files in the index, or counted
on a first scan), pack and publish (the queue's changes and their bytes),
fetch, verify and apply (the bundles listed and their bytes). Without a
terminal, a line is printed when a stage's total is known and at each tenth
of it, so a log shows a long cycle moving, not only its end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, Peer

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def lines_of(err: str, stage: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"docs: {stage} ")]


def test_plain_lines_give_each_stage_its_total_and_follow_it_by_tenths(peers):
    alice, bob = peers
    for i in range(20):
        alice.write(f"quotes/q{i:02d}.txt", "x" * 1000)
    r = alice.sync()
    # A first scan counts the files first; then one line per tenth done.
    scan = lines_of(r.err, "scan")
    assert scan[0] == "docs: scan 0/20 items (0%)", r.err
    assert "docs: scan 2/20 items (10%)" in scan and "docs: scan 20/20 items (100%)" in scan, r.err
    # The queue: 20 files and their folder, 20,000 bytes.
    for stage in ("pack", "publish"):
        got = lines_of(r.err, stage)
        assert got[0] == f"docs: {stage} 0/21 items, 0 B/20.0 kB (0%)", r.err
        assert f"docs: {stage} 21/21 items, 20.0 kB/20.0 kB (100%)" in got, r.err
    # Progress lines come as the stages run, before the summary printed at the end of the cycle.
    err_lines = r.err.splitlines()
    assert err_lines.index("docs: scan 20/20 items (100%)") < err_lines.index("docs: pack 0/21 items, 0 B/20.0 kB (0%)")
    assert err_lines[-4:] == ["docs: scan 20 items, 0 B", "docs: hash 20 items, 20.0 kB",
                              "docs: pack 21 items, 20.0 kB", "docs: publish 21 items, 20.0 kB"], r.err

    # The second scan's total is what the index holds.
    alice.write("quotes/q00.txt", "changed")
    r = alice.sync()
    assert lines_of(r.err, "scan")[0] == "docs: scan 0/20 items (0%)", r.err
    assert lines_of(r.err, "pack")[0] == "docs: pack 0/1 items, 0 B/7 B (0%)", r.err

    # Bob: the bundles listed, and their bytes.
    r = bob.sync()
    for stage in ("fetch", "verify", "apply"):
        got = lines_of(r.err, stage)
        first = re.fullmatch(rf"docs: {stage} 0/2 items, 0 B/(\S+ \S+) \(0%\)", got[0])
        assert first, r.err
        assert f"docs: {stage} 2/2 items, {first.group(1)}/{first.group(1)} (100%)" in got, r.err
    assert "\x1b[" not in r.err


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_rich_bars_on_a_terminal_show_counts_against_totals(peers):
    """On a terminal, `peersync sync` draws one bar per stage with done/total items and bytes."""
    alice, bob = peers
    for i in range(12):
        alice.write(f"orders/o{i:02d}.txt", "y" * 2000)
    alice.sync()

    def on_a_terminal(peer: Peer) -> str:
        master, slave = os.openpty()
        env = dict(os.environ, PEERSYNC_HOME=str(peer.home), PYTHONPATH=str(ROOT), COLUMNS="140", TERM="xterm")
        proc = subprocess.Popen([sys.executable, "-m", "peersync", "sync"], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert proc.wait(timeout=60) == 0
        return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r", "\n")

    shown = on_a_terminal(bob)
    for stage in ("fetch", "verify", "apply"):
        assert re.search(rf"docs {stage}\s.*\b1/1 items\s+\S+ \S+/\S+ \S+", shown), shown
    assert "docs scan" not in shown, "a bar for a stage with nothing to do"

    alice.write("orders/o00.txt", "z" * 5000)
    shown = on_a_terminal(alice)
    assert re.search(r"docs scan\s.*\b12/12 items", shown), shown
    assert re.search(r"docs pack\s.*\b1/1 items\s+5\.0 kB/5\.0 kB", shown), shown
    assert re.search(r"docs publish\s.*\b1/1 items\s+5\.0 kB/5\.0 kB", shown), shown
