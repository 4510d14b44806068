"""The five workloads of issue 6. Each one generates its data in the scratch filesystem, runs peersync and
the peer tools on it, and adds ``Result`` rows to the context. A tool that fails gets a note, not a crash."""

from __future__ import annotations

import dataclasses
import filecmp
import functools
import os
import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import latency
from .common import (
    BenchError,
    Peersync,
    Run,
    Scratch,
    drop_dirty,
    log,
    make_small_files,
    median,
    percentile,
    rmtree,
    run,
    syncfs,
    text_pool,
    tree_stats,
    write_mixed,
)
from .syncthing import SyncthingPair, settle, wait_complete

KiB, MiB, GiB = 1024, 1024**2, 1024**3
ST_META = (".stfolder", ".stversions", ".stignore")
PS_META = Peersync.META


@dataclasses.dataclass
class Result:
    workload: str
    group: str  # rows of one group are compared with the group's peersync row
    tool: str
    unit: str  # "s", "bytes", "MB/s", "KiB"
    values: list[float]
    rss_kib: int = 0
    note: str = ""

    @property
    def value(self) -> float:
        return median(self.values)


@dataclasses.dataclass
class Ctx:
    quick: bool
    scratch: Scratch
    reps: int
    results: list[Result] = dataclasses.field(default_factory=list)
    notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def q(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full

    def add(self, workload: str, group: str, tool: str, unit: str, values: list[float], rss_kib: int = 0,
            note: str = "") -> Result:
        r = Result(workload, group, tool, unit, [float(v) for v in values], rss_kib, note)
        self.results.append(r)
        shown = f"{r.value:.4g} {unit}" if values else "no value"
        log(f"  w{workload} [{group}] {tool}: {shown}" + (f", RSS {rss_kib // 1024} MiB" if rss_kib else "")
            + (f" ({note})" if note else ""))
        return r

    def note(self, workload: str, text: str) -> None:
        self.notes.setdefault(workload, []).append(text)
        log(f"  w{workload} note: {text}")


def attempt(ctx: Ctx, workload: str, what: str, fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception as exc:  # one tool failing must not stop the others
        ctx.note(workload, f"{what} failed: {str(exc).strip()[:600]}")


def cp_tree(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    run(["cp", "-a", f"{src}/.", str(dst)], timeout=3600, measure_rss=False)


def check_tree(ctx: Ctx, w: str, tool: str, dest: Path, files: int, nbytes: int, skip: tuple[str, ...]) -> bool:
    got = tree_stats(dest, skip)
    if got != (files, nbytes):
        ctx.note(w, f"{tool}: destination holds {got[0]} files / {got[1]} bytes, expected {files} / {nbytes}")
        return False
    return True


# -- 1. many small files --------------------------------------------------------------------------


def w1_small_files(ctx: Ctx) -> None:
    w = "1"
    n, size, folders = ctx.q(10_000, 2_000), 4 * KiB, 100
    ctx.params[w] = f"{n:,} files x {size // KiB} KiB in {folders} folders, random content"
    base = ctx.scratch.sub("w1")
    master = base / "master"
    log(f"w1: generating {n} files")
    make_small_files(master, n, size, folders)
    rows: dict[str, list[tuple[float, int]]] = {}

    def rec(tool: str, seconds: float, rss: int = 0) -> None:
        rows.setdefault(tool, []).append((seconds, rss))

    for rep in range(ctx.reps):
        log(f"w1: round {rep + 1}/{ctx.reps}")

        def peersync(rep: int = rep) -> None:
            d = base / f"ps{rep}"
            ps = Peersync(d, d / "a", d / "b")
            cp_tree(master, d / "a")
            drop_dirty()
            ra = ps.sync_a()
            rb = ps.sync_b()
            if check_tree(ctx, w, "peersync", d / "b", n, n * size, PS_META):
                rec("peersync (sync A, then sync B)", ra.seconds + rb.seconds, max(ra.rss_kib, rb.rss_kib))
                rec("peersync: publish on A", ra.seconds, ra.rss_kib)
                rec("peersync: apply on B", rb.seconds, rb.rss_kib)
            rmtree(d)

        def syncthing(rep: int = rep) -> None:
            d = base / f"st{rep}"
            with SyncthingPair(d, d / "a", d / "b") as pair:
                cp_tree(master, d / "a")  # no watcher, no periodic scan: nothing is seen until we ask
                drop_dirty()
                assert pair.sampler
                pair.sampler.reset()
                t0 = time.perf_counter()
                pair.scan(0)
                wait_complete(pair, 1, n, timeout=ctx.q(1800, 600))
                seconds = time.perf_counter() - t0
                rss = pair.peak_rss()
            if check_tree(ctx, w, "syncthing", d / "b", n, n * size, ST_META):
                rec("syncthing (scan A until B complete; fsyncs)", seconds, rss)
            rmtree(d)

        def one_shot(tool: str, cmd: Callable[[Path], list[str]], env: dict[str, str] | None = None,
                     meta: tuple[str, ...] = ()) -> Callable[[], None]:
            def go() -> None:
                dest = base / "dest"
                rmtree(dest)
                dest.mkdir()
                drop_dirty()
                r = run(cmd(dest), env=env, timeout=ctx.q(3600, 900))
                flush = syncfs(dest)
                if check_tree(ctx, w, tool, dest, n, n * size, meta):
                    rec(tool, r.seconds, r.rss_kib)
                    if "fsync" not in tool:
                        rec(f"{tool} + syncfs", r.seconds + flush, r.rss_kib)
                rmtree(dest)
            return go

        uhome = base / f"unison-home{rep}"
        uhome.mkdir(exist_ok=True)
        rwork = base / f"rclone-work{rep}"
        renv = dict(os.environ, UNISON=str(uhome), RCLONE_CONFIG=str(base / "rclone.conf"),
                    XDG_CACHE_HOME=str(base / "cache"))
        (base / "rclone.conf").touch()
        attempt(ctx, w, "peersync", peersync)
        attempt(ctx, w, "syncthing", syncthing)
        attempt(ctx, w, "unison", one_shot("unison -batch -auto", lambda d: [
            "unison", str(master), str(d), "-batch", "-auto", "-silent", "-times"], renv))
        attempt(ctx, w, "rclone", one_shot("rclone bisync --resync", lambda d, rwork=rwork: [  # type: ignore[misc]
            "rclone", "bisync", str(master), str(d), "--resync", "--workdir", str(rwork)], renv))
        attempt(ctx, w, "rsync", one_shot("rsync -a", lambda d: ["rsync", "-a", f"{master}/", f"{d}/"]))
        attempt(ctx, w, "rsync --fsync", one_shot("rsync -a --fsync", lambda d: [
            "rsync", "-a", "--fsync", f"{master}/", f"{d}/"]))
        attempt(ctx, w, "cp", one_shot("cp -a (floor)", lambda d: ["cp", "-a", f"{master}/.", str(d)]))
        rmtree(uhome)
        rmtree(rwork)
    for tool, vals in rows.items():
        ctx.add(w, "seconds until B holds every file", tool, "s", [v for v, _ in vals],
                max(r for _, r in vals))
    ctx.note(w, "non-fsyncing tools (unison, rclone, rsync -a, cp -a) also shown '+ syncfs': their time plus "
                "a syncfs(2) of the scratch filesystem, for the same durability as peersync, Syncthing and "
                "rsync --fsync")
    rmtree(base)


# -- 2. no-op rescan -----------------------------------------------------------------------------


def w2_noop(ctx: Ctx) -> None:
    w = "2"
    n, size, folders = ctx.q(100_000, 20_000), 1 * KiB, 100
    ctx.params[w] = f"{n:,} files x {size // KiB} KiB in {folders} folders, already in sync on both sides"
    ctx.extra["w2_files"] = n
    base = ctx.scratch.sub("w2")
    master = base / "master"
    log(f"w2: generating {n} files")
    make_small_files(master, n, size, folders, seed=2)
    x, y = base / "x", base / "y"
    cp_tree(master, x)
    cp_tree(master, y)
    slow = ctx.q(7200, 1800)

    def peersync() -> None:
        d = base / "ps"
        a, b = d / "a", d / "b"
        cp_tree(master, a)
        cp_tree(master, b)  # B already holds the same files when it joins
        ps = Peersync(d, a, b)
        drop_dirty()
        r1 = ps.sync_a(timeout=slow)
        r2 = ps.sync_b(timeout=slow)
        r3 = ps.sync_a(timeout=slow)
        r4 = ps.sync_b(timeout=slow)
        ctx.add(w, "setup (not the no-op)", "peersync: first sync on A (publishes the store)", "s", [r1.seconds],
                r1.rss_kib)
        ctx.add(w, "setup (not the no-op)", "peersync: first sync on B (joined with the same files)", "s",
                [r2.seconds], r2.rss_kib)
        ctx.add(w, "setup (not the no-op)", "peersync: second sync A, then B", "s", [r3.seconds + r4.seconds],
                max(r3.rss_kib, r4.rss_kib))
        ctx.extra["ps_rss_100k"] = max(r1.rss_kib, r2.rss_kib, r3.rss_kib, r4.rss_kib)
        before = ps.bundles()
        runs: list[Run] = []
        for _ in range(ctx.reps):
            drop_dirty()
            runs.append(ps.sync_a(timeout=slow))
        new = len(ps.bundles()) - len(before)
        ctx.add(w, "seconds of a cycle that finds nothing", "peersync sync (on A)", "s", [r.seconds for r in runs],
                max(r.rss_kib for r in runs), note=f"{new} bundles written" if new else "")
        ctx.extra["ps_rss_noop"] = max(r.rss_kib for r in runs)
        rmtree(d)

    def one(tool: str, cmd: list[str], env: dict[str, str] | None = None, first: list[str] | None = None) -> None:
        if first:
            run(first, env=env, timeout=slow)
        runs = []
        for _ in range(ctx.reps):
            drop_dirty()
            runs.append(run(cmd, env=env, timeout=slow))
        ctx.add(w, "seconds of a cycle that finds nothing", tool, "s", [r.seconds for r in runs],
                max(r.rss_kib for r in runs))

    uhome = base / "unison-home"
    uhome.mkdir()
    (base / "rclone.conf").touch()
    env = dict(os.environ, UNISON=str(uhome), RCLONE_CONFIG=str(base / "rclone.conf"),
               XDG_CACHE_HOME=str(base / "cache"))
    rwork = base / "rclone-work"
    attempt(ctx, w, "peersync", peersync)
    unison = ["unison", str(x), str(y), "-batch", "-auto", "-silent", "-times"]
    attempt(ctx, w, "unison", lambda: one("unison -batch -auto", unison, env, first=unison))
    rcl = ["rclone", "bisync", str(x), str(y), "--workdir", str(rwork)]
    attempt(ctx, w, "rclone", lambda: one("rclone bisync", rcl, env, first=[*rcl, "--resync"]))
    attempt(ctx, w, "rsync -n", lambda: one("rsync -a -n", ["rsync", "-a", "-n", f"{x}/", f"{y}/"]))
    attempt(ctx, w, "find", lambda: one("find -printf (stat floor)", [
        "find", str(x), "-printf", "%s %T@ %i %p\\n"]))

    def syncthing() -> None:
        d = base / "st"
        t0 = time.perf_counter()
        with SyncthingPair(d, x, y) as pair:
            settle(pair, n, timeout=slow)  # both scan at start and exchange indexes
            ctx.extra["st_rss_100k"] = pair.peak_rss()
            ctx.add(w, "setup (not the no-op)", "syncthing: start both until in sync (each scans its copy)", "s",
                    [time.perf_counter() - t0 - 0.5], pair.peak_rss(), note="RSS: the larger instance's peak")
            times = []
            assert pair.sampler
            pair.sampler.reset()
            for _ in range(ctx.reps):
                drop_dirty()
                t0 = time.perf_counter()
                pair.scan(0, timeout=slow)
                from .common import wait_for

                wait_for(lambda: pair.idle(0), slow, "syncthing idle after rescan")
                times.append(time.perf_counter() - t0)
            ctx.add(w, "seconds of a cycle that finds nothing", "syncthing rescan (POST /rest/db/scan until idle)",
                    "s", times, pair.peak_rss())
        rmtree(d)

    attempt(ctx, w, "syncthing", syncthing)
    rmtree(base)


# -- 3. large-file delta -------------------------------------------------------------------------


def _overwrite_middle(path: Path, size: int, seed: int) -> None:
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(random.Random(seed).randbytes(MiB))


def _insert_at(path: Path, at: int, seed: int) -> None:
    tmp = path.with_name(path.name + ".new")
    with open(path, "rb") as fi, open(tmp, "wb") as fo:
        left = at
        while left:
            chunk = fi.read(min(MiB * 8, left))
            fo.write(chunk)
            left -= len(chunk)
        fo.write(random.Random(seed).randbytes(MiB))
        shutil.copyfileobj(fi, fo, length=8 * MiB)
    os.replace(tmp, path)


def _rsync_stats(out: str) -> dict[str, int]:
    def grab(label: str) -> int:
        m = re.search(rf"{label}:\s*([\d,]+)", out)
        return int(m.group(1).replace(",", "")) if m else -1

    return {"literal": grab("Literal data"), "matched": grab("Matched data"), "sent": grab("Total bytes sent"),
            "received": grab("Total bytes received")}


def w3_delta(ctx: Ctx) -> None:
    w = "3"
    size = ctx.q(GiB, 128 * MiB)
    at = 100 * MiB
    ctx.params[w] = (f"one {size // MiB} MiB random file on both; (i) 1 MiB overwritten at {size // 2 // MiB} MiB, "
                     f"(ii) 1 MiB inserted at {at // MiB} MiB (the file rewritten under a new inode)")
    base = ctx.scratch.sub("w3")
    master = base / "big.master"
    log(f"w3: generating a {size // MiB} MiB file")
    write_mixed(master, size, text=False, pool=b"", seed=3)
    changes: list[tuple[str, Callable[[Path, int], None]]] = [
        ("(i) 1 MiB overwritten in the middle", lambda p, s: _overwrite_middle(p, size, s)),
        ("(ii) 1 MiB inserted at 100 MiB", lambda p, s: _insert_at(p, at, s))]
    ps_rows: dict[str, list[tuple[float, float, int]]] = {}
    rs_rows: dict[str, list[tuple[dict[str, int], float, int, float]]] = {}
    initial: list[float] = []
    ps_snap: dict[str, list[float]] = {}

    def peersync(rep: int) -> None:
        d = base / f"ps{rep}"
        ps = Peersync(d, d / "a", d / "b")
        shutil.copyfile(master, d / "a" / "big.bin")
        drop_dirty()
        ra, rb = ps.sync_a(), ps.sync_b()
        initial.append(ra.seconds + rb.seconds)
        for k, (label, change) in enumerate(changes):
            before = ps.bundles()
            change(d / "a" / "big.bin", 100 + k)
            drop_dirty()
            ra, rb = ps.sync_a(), ps.sync_b()
            new = {p: s for p, s in ps.bundles().items() if p not in before}
            snap = sum(s for p, s in new.items() if "snapshots" in p.parts)
            if snap:
                ps_snap.setdefault(label, []).append(float(snap))
            if not filecmp.cmp(d / "a" / "big.bin", d / "b" / "big.bin", shallow=False):
                ctx.note(w, f"peersync {label}: B's copy differs from A's after the sync")
            ps_rows.setdefault(label, []).append((float(sum(new.values())), ra.seconds + rb.seconds,
                                                  max(ra.rss_kib, rb.rss_kib)))
        rmtree(d)

    def rsync(rep: int) -> None:
        src, dst = base / f"rs-src{rep}", base / f"rs-dst{rep}"
        old = time.time_ns() - 3600 * 10**9  # rsync's quick check compares whole seconds; the edit comes later
        for p in (src, dst):
            p.mkdir()
            shutil.copyfile(master, p / "big.bin")
            os.utime(p / "big.bin", ns=(old, old))
        for k, (label, change) in enumerate(changes):
            change(src / "big.bin", 100 + k)
            drop_dirty()
            r = run(["rsync", "-a", "--no-whole-file", "--stats", f"{src}/", f"{dst}/"], timeout=3600)
            flush = syncfs(dst)  # rsync calls no fsync: what the same durability as peersync's costs it
            rs_rows.setdefault(label, []).append((_rsync_stats(r.out), r.seconds, r.rss_kib, flush))
            if not filecmp.cmp(src / "big.bin", dst / "big.bin", shallow=False):
                ctx.note(w, f"rsync {label}: copies differ")
        rmtree(src)
        rmtree(dst)

    for rep in range(ctx.reps):
        log(f"w3: round {rep + 1}/{ctx.reps}")
        attempt(ctx, w, "peersync", functools.partial(peersync, rep))
        attempt(ctx, w, "rsync", functools.partial(rsync, rep))
    if initial:
        ctx.add(w, "setup: first transfer of the whole file", "peersync (sync A, then sync B)", "s", initial)
    for label, _ in changes:
        ps = ps_rows.get(label, [])
        rs = rs_rows.get(label, [])
        g_bytes, g_time = f"{label}: bytes sent", f"{label}: seconds"
        if ps:
            ctx.add(w, g_bytes, "peersync: new bundle bytes in the relay", "bytes", [b for b, _, _ in ps],
                    note="of which snapshot parts (compaction): " + ", ".join(
                        f"{v / 1e6:.1f} MB" for v in ps_snap[label]) if label in ps_snap else "")
            ctx.add(w, g_time, "peersync (sync A, then sync B)", "s", [t for _, t, _ in ps], max(r for *_, r in ps))
        if rs:
            ctx.add(w, g_bytes, "rsync --no-whole-file: total bytes sent + received", "bytes",
                    [s["sent"] + s["received"] for s, _, _, _ in rs])
            ctx.add(w, g_bytes, "rsync --no-whole-file: literal data", "bytes", [s["literal"] for s, _, _, _ in rs])
            ctx.add(w, g_time, "rsync -a --no-whole-file", "s", [t for _, t, _, _ in rs], max(r for _, _, r, _ in rs))
            ctx.add(w, g_time, "rsync -a --no-whole-file + syncfs", "s", [t + f for _, t, _, f in rs],
                    max(r for _, _, r, _ in rs))
    rmtree(base)


# -- 4. latency -----------------------------------------------------------------------------------


def w4_latency(ctx: Ctx) -> None:
    w = "4"
    edits = ctx.q(100, 20)
    ctx.params[w] = (f"{edits} single small-file edits on A, each timed until B's copy holds it; peersync: two "
                     "`peersync run` services; Syncthing: watcher on, fsWatcherDelayS=1")
    base = ctx.scratch.sub("w4")

    def peersync() -> None:
        rss: list[int] = []
        samples = latency.measure(base / "ps", edits, timeout=30.0, peak_rss=rss)
        ctx.extra["ps_latency"] = samples
        ctx.add(w, "median seconds", "peersync run", "s", [median(samples)], rss[0] if rss else 0)
        ctx.add(w, "99th percentile seconds", "peersync run", "s", [percentile(samples, 99)])

    def syncthing() -> None:
        d = base / "st"
        with SyncthingPair(d, d / "a", d / "b", watcher=True, watcher_delay=1, rescan_s=3600) as pair:
            (d / "a" / "note.txt").write_text("start\n")
            wait_for_file(d / "b" / "note.txt", b"start\n", 60)
            time.sleep(1.0)
            samples = latency.edit_loop(d / "a" / "note.txt", d / "b" / "note.txt", edits, timeout=30.0)
            rss = pair.peak_rss()
        ctx.extra["st_latency"] = samples
        ctx.add(w, "median seconds", "syncthing (watcher, fsWatcherDelayS=1)", "s", [median(samples)], rss)
        ctx.add(w, "99th percentile seconds", "syncthing (watcher, fsWatcherDelayS=1)", "s",
                [percentile(samples, 99)])

    attempt(ctx, w, "peersync", peersync)
    attempt(ctx, w, "syncthing", syncthing)
    rmtree(base)


def wait_for_file(path: Path, content: bytes, timeout: float) -> None:
    from .common import wait_for

    wait_for(lambda: path.exists() and path.read_bytes() == content, timeout, f"{path.name} to arrive")


# -- 5. throughput and memory ------------------------------------------------------------------------


def w5_throughput(ctx: Ctx) -> None:
    w = "5"
    total = ctx.q(4 * GiB, 512 * MiB)
    chunk = ctx.q(128 * MiB, 64 * MiB)
    files = total // chunk
    ctx.params[w] = (f"ingest: {total // MiB} MiB in {files} files of {chunk // MiB} MiB, alternately text "
                     f"(compressible) and random; memory: one {total // MiB} MiB file (same mix in 64 MiB runs)")
    base = ctx.scratch.sub("w5")
    data = base / "mixed"
    data.mkdir()
    log(f"w5: generating {total // MiB} MiB")
    pool = text_pool()
    for i in range(files):
        write_mixed(data / f"part{i:03d}.{'txt' if i % 2 == 0 else 'bin'}", chunk, text=i % 2 == 0, pool=pool,
                    seed=50 + i)
    names = sorted(str(p) for p in data.iterdir())
    mb = total / 1e6
    group = "ingest MB/s (higher is better)"

    def floor(tool: str, cmd: list[str], shell: bool = False) -> list[float]:
        secs = []
        rss = 0
        for _ in range(ctx.reps):
            drop_dirty()
            r = run(["sh", "-c", " ".join(cmd)] if shell else cmd, timeout=3600)
            secs.append(r.seconds)
            rss = max(rss, r.rss_kib)
        ctx.add(w, group, tool, "MB/s", [mb / s for s in secs], rss)
        ctx.extra.setdefault("floor_s", {})[tool] = median(secs)
        return secs

    def peersync() -> None:
        runs = []
        for rep in range(ctx.reps):
            d = base / f"ps{rep}"
            (data / ".peersync").unlink(missing_ok=True)
            ps = Peersync(d, data, None)
            drop_dirty()
            runs.append(ps.sync_a())
            rmtree(d)
            (data / ".peersync").unlink(missing_ok=True)
        ctx.add(w, group, "peersync sync (scan, hash, compress, encrypt, write bundles)", "MB/s",
                [mb / r.seconds for r in runs], max(r.rss_kib for r in runs))
        ctx.extra["ps_ingest_rss"] = max(r.rss_kib for r in runs)

    attempt(ctx, w, "peersync ingest", peersync)
    attempt(ctx, w, "sha256sum", lambda: floor("sha256sum", ["sha256sum", *names]))
    if shutil.which("openssl"):
        attempt(ctx, w, "openssl", lambda: floor("openssl dgst -sha256 (SHA-NI, as Python's hashlib)",
                                                 ["openssl", "dgst", "-sha256", *names]))
    attempt(ctx, w, "b3sum", lambda: floor("b3sum (all cores)", ["b3sum", *names]))
    attempt(ctx, w, "b3sum 1", lambda: floor("b3sum --num-threads 1", ["b3sum", "--num-threads", "1", *names]))
    attempt(ctx, w, "zstd", lambda: floor("zstd -3 (1 thread)", ["zstd", "-3", "-q", "-c", *names, ">", "/dev/null"],
                                          shell=True))
    fl = ctx.extra.get("floor_s", {})
    for hasher in ("sha256sum", "openssl dgst -sha256 (SHA-NI, as Python's hashlib)", "b3sum --num-threads 1"):
        if hasher in fl and "zstd -3 (1 thread)" in fl:
            ctx.add(w, group, f"{hasher} + zstd -3 (floor: hash, then compress)", "MB/s",
                    [mb / (fl[hasher] + fl["zstd -3 (1 thread)"])])
    rmtree(data)

    # Peak RSS while syncing one large file, publish and apply side, and Syncthing on the same file.
    rss_group = f"peak RSS MiB, one {total // MiB} MiB file"
    one = base / "one"
    one.mkdir()
    big = one / "big.bin"
    with open(big, "wb") as f:
        for i in range(total // (64 * MiB)):
            tmp = base / "seg"
            write_mixed(tmp, 64 * MiB, text=i % 2 == 0, pool=pool, seed=500 + i)
            with open(tmp, "rb") as t:
                shutil.copyfileobj(t, f, 8 * MiB)
    (base / "seg").unlink(missing_ok=True)

    def peersync_big() -> None:
        d = base / "psbig"
        ps = Peersync(d, one, d / "b")
        drop_dirty()
        ra = ps.sync_a()
        rb = ps.sync_b()
        ok = filecmp.cmp(big, d / "b" / "big.bin", shallow=False)
        ctx.add(w, rss_group, f"peersync sync on A, one {total // MiB} MiB file (publish)", "MiB",
                [ra.rss_kib / 1024], ra.rss_kib, note=f"{ra.seconds:.1f} s")
        ctx.add(w, rss_group, f"peersync sync on B, one {total // MiB} MiB file (apply)", "MiB",
                [rb.rss_kib / 1024], rb.rss_kib, note=f"{rb.seconds:.1f} s" + ("" if ok else "; B's copy DIFFERS"))
        ctx.extra["ps_rss_big"] = max(ra.rss_kib, rb.rss_kib)
        rmtree(d)
        (one / ".peersync").unlink(missing_ok=True)

    def syncthing_big() -> None:
        d = base / "stbig"
        with SyncthingPair(d, d / "a", d / "b") as pair:
            os.rename(big, d / "a" / "big.bin")
            assert pair.sampler
            pair.sampler.reset()
            t0 = time.perf_counter()
            pair.scan(0)
            wait_complete(pair, 1, 1, timeout=3600)
            secs = time.perf_counter() - t0
            rss = pair.peak_rss()
        ctx.add(w, rss_group, f"syncthing, one {total // MiB} MiB file (larger instance)", "MiB", [rss / 1024], rss,
                note=f"{secs:.1f} s")
        ctx.extra["st_rss_big"] = rss
        rmtree(d)

    attempt(ctx, w, "peersync big file", peersync_big)
    attempt(ctx, w, "syncthing big file", syncthing_big)
    n = ctx.extra.get("w2_files", 0)
    for key, tool in (("ps_rss_100k", "peersync sync (largest of the setup syncs of workload 2)"),
                      ("ps_rss_noop", "peersync no-op sync (workload 2)"),
                      ("st_rss_100k", "syncthing, start until in sync (workload 2 setup, larger instance)")):
        if key in ctx.extra:
            ctx.add(w, f"peak RSS MiB, {n:,}-file store", tool, "MiB", [ctx.extra[key] / 1024], ctx.extra[key])
    rmtree(base)


WORKLOADS: dict[str, tuple[str, Callable[[Ctx], None]]] = {
    "1": ("Many small files", w1_small_files),
    "2": ("No-op rescan", w2_noop),
    "3": ("Large-file delta", w3_delta),
    "4": ("Edit-to-apply latency", w4_latency),
    "5": ("Throughput and memory", w5_throughput),
}

__all__ = ["WORKLOADS", "Ctx", "Result", "BenchError"]
