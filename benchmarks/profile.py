"""Profile peersync's part of workloads 1, 2, 3 and 5 (ingest) with py-spy (wall clock, idle frames included).

``python -m benchmarks --profile [--quick] [--only 1,2,3,5]`` sets up each workload
as the suite does, runs the measured ``peersync sync`` calls under
``py-spy record --idle -f raw``, keeps the collapsed stacks in
``benchmarks/profiles/`` (open them in speedscope.app or flamegraph.pl) and
writes the top functions by self and inclusive time to PROFILES.md.
"""

from __future__ import annotations

import collections
import os
import random
import re
import shutil
import sys
from pathlib import Path

from .common import (
    Peersync,
    Scratch,
    cp_tree_plain,
    drop_dirty,
    log,
    make_small_files,
    rmtree,
    run,
    text_pool,
    write_mixed,
)

MiB, GiB = 1024**2, 1024**3
HERE = Path(__file__).resolve().parent
# PROFILES.md below this line is written by hand (what the profiles mean, designs); --profile keeps it.
NOTES_MARKER = "<!-- Notes written by hand below this line: `--profile` keeps them. -->"
KEPT_NOTE = "*(Kept from an earlier `--profile` run: this workload was not profiled in the latest one.)*"
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


def pyspy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not os.path.exists(exe):
        raise SystemExit("py-spy is not installed: pip install py-spy (into the venv running the suite)")
    return exe


def profiled_sync(home: Path, out: Path, rate: int = 100) -> float:
    cmd = [pyspy(), "record", "--idle", "-r", str(rate), "-f", "raw", "-o", str(out), "--",
           sys.executable, "-m", "peersync", "sync", "-q"]
    r = run(cmd, env=Peersync.env(home), timeout=7200, measure_rss=False, check=False)
    if r.rc != 0:
        log(f"profiled sync exited {r.rc}: {r.err[-400:]}")
    return r.seconds


def _short(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    f = m.group("file")
    parts = f.replace("\\", "/").split("/")
    if "peersync" in parts:
        f = "/".join(parts[parts.index("peersync"):])
    elif "site-packages" in parts:
        f = "/".join(parts[parts.index("site-packages") + 1:])
    else:
        f = parts[-1]
    return f"{m.group('func')} ({f})"


def summarize(raw: Path, top: int = 14) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith("process ")
                  and not f.startswith("thread ")]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    # Inclusive list without the trivial top frames every sample shares.
    skip = {f for f, c in incl.items() if c >= 0.97 * total}

    def pct(c: int) -> float:
        return 100.0 * c / total if total else 0.0

    return (total, [(f, pct(c)) for f, c in own.most_common(top)],
            [(f, pct(c)) for f, c in incl.most_common(top + len(skip)) if f not in skip][:top])


def main(scratch: Scratch, quick: bool, ran: list[str], out_md: Path) -> int:
    def q(full: int, small: int) -> int:
        return small if quick else full
    keep = HERE / "profiles"
    keep.mkdir(exist_ok=True)
    steps: list[tuple[str, Path, float]] = []

    def step(name: str, home: Path) -> None:
        out = keep / f"{name}.txt"
        drop_dirty()
        secs = profiled_sync(home, out)
        log(f"profiled {name}: {secs:.1f} s")
        steps.append((name, out, secs))

    if "1" in ran:
        n = q(10_000, 2_000)
        base = scratch.sub("p1")
        make_small_files(base / "master", n, 4096, 100)
        ps = Peersync(base, base / "a", base / "b")
        cp_tree_plain(base / "master", base / "a")
        step(f"w1-publish-A-{n}-files", ps.ha)
        step(f"w1-apply-B-{n}-files", ps.hb)
        rmtree(base)
    if "2" in ran:
        n = q(100_000, 20_000)
        base = scratch.sub("p2")
        make_small_files(base / "master", n, 1024, 100, seed=2)
        cp_tree_plain(base / "master", base / "a")
        cp_tree_plain(base / "master", base / "b")
        ps = Peersync(base, base / "a", base / "b")
        step(f"w2-first-sync-A-{n}-files", ps.ha)
        step(f"w2-first-sync-B-joined-with-same-{n}-files", ps.hb)
        ps.sync_a(timeout=7200)
        ps.sync_b(timeout=7200)
        step(f"w2-noop-sync-A-{n}-files", ps.ha)
        rmtree(base)
    if "3" in ran:
        size = q(GiB, 128 * MiB)
        base = scratch.sub("p3")
        ps = Peersync(base, base / "a", base / "b")
        write_mixed(base / "a" / "big.bin", size, text=False, pool=b"", seed=3)
        ps.sync_a(timeout=7200)
        ps.sync_b(timeout=7200)
        with open(base / "a" / "big.bin", "r+b") as f:
            f.seek(size // 2)
            f.write(random.Random(100).randbytes(MiB))
        step(f"w3-overwrite-1MiB-publish-A-{size // MiB}MiB", ps.ha)
        step(f"w3-overwrite-1MiB-apply-B-{size // MiB}MiB", ps.hb)
        rmtree(base)

    if "5" in ran:
        total, chunk = q(4 * GiB, 512 * MiB), q(128 * MiB, 64 * MiB)
        base = scratch.sub("p5")
        pool = text_pool()
        (base / "a").mkdir()
        for i in range(total // chunk):
            write_mixed(base / "a" / f"part{i:03d}", chunk, text=i % 2 == 0, pool=pool, seed=50 + i)
        ps = Peersync(base, base / "a")
        step(f"w5-ingest-publish-A-{total // MiB}MiB-mixed", ps.ha)
        rmtree(base)

    # Sections of workloads not profiled in this run, and the notes below NOTES_MARKER, are kept.
    previous = out_md.read_text() if out_md.exists() else ""
    notes = previous[previous.index(NOTES_MARKER):] if NOTES_MARKER in previous else NOTES_MARKER + "\n"
    fresh = {name for name, _raw, _secs in steps}
    kept = [chunk for chunk in re.split(r"(?m)^(?=## )", previous.split(NOTES_MARKER)[0])[1:]
            if chunk[3:].split(" (", 1)[0] not in fresh]
    lines = ["# peersync profiles", "",
             f"py-spy {run([pyspy(), '--version'], measure_rss=False).out.strip()}, `record --idle` (wall clock: "
             "time blocked in fsync or I/O counts), 100 samples/s, "
             f"{'quick' if quick else 'full'} sizes, on {scratch.kind}. "
             "Written by `python -m benchmarks --profile"
             f"{' --quick' if quick else ''}`; collapsed stacks in `benchmarks/profiles/`.", ""]
    for name, raw, secs in steps:
        total, own, incl = summarize(raw)
        lines += [f"## {name} ({secs:.1f} s, {total} samples)", "", "| self % | function | | inclusive % | function |",
                  "| ---: | --- | --- | ---: | --- |"]
        for i in range(max(len(own), len(incl))):
            a = own[i] if i < len(own) else ("", 0.0)
            b = incl[i] if i < len(incl) else ("", 0.0)
            lines.append(f"| {a[1]:.1f} | `{a[0]}` | | {b[1]:.1f} | `{b[0]}` |")
        lines.append("")
    for chunk in kept:
        if KEPT_NOTE not in chunk:
            head, _, rest = chunk.partition("\n")
            chunk = f"{head}\n\n{KEPT_NOTE}\n{rest}"
        lines.append(chunk.rstrip("\n") + "\n")
    out_md.write_text("\n".join(lines) + "\n" + notes)
    log(f"wrote {out_md}")
    return 0
