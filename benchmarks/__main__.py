"""peersync benchmark suite (issue 6): python -m benchmarks [--quick] [--only W[,W]] [--scratch DIR].

Generates each workload on a fresh scratch filesystem, runs peersync and the
peer tools (Syncthing, Unison, rclone bisync, rsync, cp, find, sha256sum,
b3sum, zstd) on the same data in the same run, and writes RESULTS.md.
``--profile`` instead runs peersync's parts of workloads 1, 2, 3 and 5 under py-spy and
writes PROFILES.md. Never part of the test run; nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from . import report
from .common import (
    ForeignLoad,
    Scratch,
    cleanup_procs,
    compile_peersync,
    ensure_tools,
    log,
    machine_facts,
    tool_versions,
)
from .workloads import WORKLOADS, Ctx

HERE = Path(__file__).resolve().parent
TOOLS = ["syncthing", "unison", "rclone", "rsync", "b3sum", "zstd", "sha256sum", "find", "cp"]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shrunk workloads, 1 run each: a few minutes")
    ap.add_argument("--only", help="comma-separated workload numbers (1-5)")
    ap.add_argument("--scratch", help="use this folder instead of a fresh loop-mounted ext4 filesystem")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3, quick 1)")
    ap.add_argument("--image-gib", type=int, help="size of the sparse scratch image (default 40, quick 12)")
    ap.add_argument("--out", default=str(HERE / "RESULTS.md"), help="where to write the results")
    ap.add_argument("--profile", action="store_true",
                    help="profile peersync on workloads 1, 2, 3 and 5 (ingest) with py-spy; "
                         "writes PROFILES.md, not RESULTS.md")
    args = ap.parse_args(argv)
    ran = [w.strip() for w in args.only.split(",")] if args.only else list(WORKLOADS)
    for w in ran:
        if w not in WORKLOADS:
            ap.error(f"no workload {w!r}; there are {', '.join(WORKLOADS)}")
    compile_peersync()
    missing = ensure_tools(TOOLS)
    if missing:
        log(f"missing tools (their rows will fail): {', '.join(missing)}")

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.perf_counter()
    size = args.image_gib or (12 if args.quick else 40)
    if args.profile:
        from . import profile

        with Scratch(args.scratch, size) as scratch:
            try:
                return profile.main(scratch, args.quick, ran, HERE / "PROFILES.md")
            finally:
                cleanup_procs()
    with Scratch(args.scratch, size) as scratch:
        ctx = Ctx(quick=args.quick, scratch=scratch, reps=args.runs or (1 if args.quick else 3))
        facts = machine_facts(scratch)
        versions = tool_versions()
        out = Path(args.out)
        load = ForeignLoad()
        load.__enter__()
        try:
            for w in ran:
                title, fn = WORKLOADS[w]
                log(f"workload {w}: {title}")
                tw = time.perf_counter()
                load.window()
                try:
                    fn(ctx)
                except Exception as exc:
                    ctx.note(w, f"workload stopped: {type(exc).__name__}: {str(exc)[:800]}")
                mean, peak, names = load.window()
                ctx.note(w, f"took {time.perf_counter() - tw:.0f} s; other processes on the machine used "
                            f"{mean:.2f} cores on average (peak {peak:.2f}) meanwhile"
                         + (f", mostly {names}" if names and mean >= 0.05 else ""))
                report.write(ctx, out, facts, versions, started, time.perf_counter() - t0, argv,
                             [x for x in ran if x <= w or x in ctx.params])
        except KeyboardInterrupt:
            ctx.note(ran[0], "run interrupted; figures are partial")
            raise
        finally:
            load.__exit__()
            cleanup_procs()
            report.write(ctx, out, facts, versions, started, time.perf_counter() - t0, argv,
                         [w for w in ran if w in ctx.params or any(r.workload == w for r in ctx.results)])
            log(f"wrote {out}")
    os.sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
