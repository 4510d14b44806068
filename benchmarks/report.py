"""RESULTS.md (and results.json) from one run of the suite."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .workloads import WORKLOADS, Ctx, Result

HIGHER_IS_BETTER = {"MB/s"}


def fmt(v: float, unit: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if unit == "bytes":
        if v >= 1e6:
            return f"{v / 1e6:,.2f} MB"
        return f"{v / 1e3:,.1f} kB"
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"
    if unit == "MB/s":
        return f"{v:,.0f} MB/s"
    if unit == "MiB":
        return f"{v:,.0f} MiB"
    return f"{v:.4g} {unit}"


def _ps_row(rows: list[Result]) -> Result | None:
    for r in rows:
        if r.tool.startswith("peersync") and ("sync A, then sync B" in r.tool or r.tool.startswith("peersync sync")
                                              or r.tool in ("peersync run",)
                                              or "bundle bytes" in r.tool):
            return r
    ps = [r for r in rows if r.tool.startswith("peersync")]
    return max(ps, key=lambda r: r.value) if ps else None  # e.g. RSS: the larger of publish and apply


def ratio(ps: Result | None, r: Result) -> str:
    if ps is None or r is ps or r.tool.startswith("peersync") or not r.values or not ps.values:
        return ""
    if r.value == 0:
        return ""
    return f"{ps.value / r.value:.2f}×"


def targets(ctx: Ctx) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the issue's targets that this run measured."""
    def get(w: str, group_part: str, tool_part: str) -> Result | None:
        for r in ctx.results:
            if r.workload == w and group_part in r.group and tool_part in r.tool and r.values:
                return r
        return None

    out: list[tuple[str, str, str]] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    ps = get("1", "seconds", "peersync (sync A")
    st = get("1", "seconds", "syncthing")
    un = get("1", "seconds", "unison -batch -auto + syncfs")
    if ps and st:
        out.append(("W1 ≤ 0.5 × Syncthing", f"{fmt(ps.value, 's')} vs 0.5 × {fmt(st.value, 's')} "
                    f"({ps.value / st.value:.2f}× Syncthing)", verdict(ps.value <= 0.5 * st.value)))
    if ps and un:
        out.append(("W1 ≤ Unison (same durability: Unison + syncfs)",
                    f"{fmt(ps.value, 's')} vs {fmt(un.value, 's')} ({ps.value / un.value:.2f}×)",
                    verdict(ps.value <= un.value)))
    ps = get("2", "nothing", "peersync")
    un = get("2", "nothing", "unison")
    fd = get("2", "nothing", "find")
    if ps and un:
        out.append(("W2 ≤ Unison", f"{fmt(ps.value, 's')} vs {fmt(un.value, 's')} ({ps.value / un.value:.2f}×)",
                    verdict(ps.value <= un.value)))
    if ps and fd:
        out.append(("W2 ≤ 3 × find", f"{fmt(ps.value, 's')} vs 3 × {fmt(fd.value, 's')} "
                    f"({ps.value / fd.value:.1f}× find)", verdict(ps.value <= 3 * fd.value)))
    for label in ("(i)", "(ii)"):
        pb = get("3", f"{label} ", "peersync: new bundle")
        rb = get("3", f"{label} ", "total bytes")
        pt = get("3", f"{label} ", "peersync (sync")
        rt = get("3", f"{label} ", "rsync -a --no-whole-file")
        if pb and rb:
            out.append((f"W3 {label} bytes ≤ rsync total", f"{fmt(pb.value, 'bytes')} vs {fmt(rb.value, 'bytes')} "
                        f"({pb.value / rb.value:.2f}×)", verdict(pb.value <= rb.value)))
        rd = get("3", f"{label} ", "rsync -a --no-whole-file + syncfs")
        if pt and rt:
            out.append((f"W3 {label} time ≤ 1.5 × rsync", f"{fmt(pt.value, 's')} vs 1.5 × {fmt(rt.value, 's')} "
                        f"({pt.value / rt.value:.2f}× rsync)", verdict(pt.value <= 1.5 * rt.value)))
        if pt and rd:
            out.append((f"W3 {label} time ≤ 1.5 × rsync (same durability: rsync + syncfs)",
                        f"{fmt(pt.value, 's')} vs 1.5 × {fmt(rd.value, 's')} ({pt.value / rd.value:.2f}×)",
                        verdict(pt.value <= 1.5 * rd.value)))
    pm = get("4", "median", "peersync")
    pp = get("4", "99th", "peersync")
    if pm:
        out.append(("W4 median ≤ 1 s", fmt(pm.value, "s"), verdict(pm.value <= 1.0)))
    if pp:
        out.append(("W4 p99 ≤ 3 s", fmt(pp.value, "s"), verdict(pp.value <= 3.0)))
    pi = get("5", "ingest", "peersync")
    fl = get("5", "ingest", "sha256sum + zstd")
    if pi and fl:
        out.append(("W5 ingest ≥ 0.5 × (sha256sum + zstd -3)", f"{fmt(pi.value, 'MB/s')} vs 0.5 × "
                    f"{fmt(fl.value, 'MB/s')} ({pi.value / fl.value:.2f}×)", verdict(pi.value >= 0.5 * fl.value)))
    ps_rss = max((ctx.extra.get(k, 0) for k in ("ps_rss_100k", "ps_rss_big")), default=0)
    st_rss = max(ctx.extra.get("st_rss_100k", 0), ctx.extra.get("st_rss_big", 0))
    if ps_rss and st_rss:
        out.append(("W5 peak RSS ≤ Syncthing's", f"peersync {ps_rss // 1024} MiB vs Syncthing {st_rss // 1024} MiB "
                    "(largest of each over the workload-2 store and the large file)", verdict(ps_rss <= st_rss)))
    if "ps_rss_big" in ctx.extra and "ps_rss_noop" in ctx.extra:
        big, small = ctx.extra["ps_rss_big"], ctx.extra["ps_rss_noop"]
        out.append(("W5 RSS flat in file size", f"{big // 1024} MiB syncing the large file vs {small // 1024} MiB "
                    "for a no-op cycle", verdict(big <= 1.5 * small + 32 * 1024)))
    return out


def write(ctx: Ctx, path: Path, facts: dict[str, str], versions: dict[str, str], started: str,
          seconds: float, argv: list[str], ran: list[str]) -> None:
    lines: list[str] = []
    mode = "quick" if ctx.quick else "full"
    lines += [
        "# peersync benchmark results",
        "",
        f"Written by `{' '.join(['python -m benchmarks', *argv])}` ({mode} mode, {ctx.reps} run(s) per figure, "
        f"medians shown) on {started}; the suite took {seconds / 60:.1f} min. "
        "Regenerate with the same command; see `benchmarks/README.md` for what each workload does "
        "and what the profiles show.",
        "",
        "**Ratio** = peersync ÷ that tool (for times and bytes, above 1× means peersync is slower or larger; "
        "for MB/s, below 1× means peersync is slower).",
        "",
        "## Machine",
        "",
        "| | |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in facts.items()]
    lines += ["", "## Versions", "", "| tool | version |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in versions.items()]
    tg = targets(ctx)
    if tg:
        lines += ["", "## Issue 6 targets", "", "| target | measured | |", "| --- | --- | --- |"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in tg]
    for w in ran:
        title, _ = WORKLOADS[w]
        lines += ["", f"## {w}. {title}", ""]
        if w in ctx.params:
            lines += [f"Workload: {ctx.params[w]}.", ""]
        rows = [r for r in ctx.results if r.workload == w]
        groups: list[str] = []
        for r in rows:
            if r.group not in groups:
                groups.append(r.group)
        for g in groups:
            grows = [r for r in rows if r.group == g]
            ps = _ps_row(grows)
            lines += [f"**{g}**", "", "| tool | median | runs | peak RSS | ratio | note |",
                      "| --- | ---: | --- | ---: | ---: | --- |"]
            for r in grows:
                runs = ", ".join(fmt(v, r.unit) for v in r.values) if len(r.values) > 1 else ""
                rss = f"{r.rss_kib / 1024:,.0f} MiB" if r.rss_kib else ""
                lines.append(f"| {r.tool} | {fmt(r.value, r.unit)} | {runs} | {rss} | {ratio(ps, r)} | {r.note} |")
            lines.append("")
        for n in ctx.notes.get(w, []):
            lines.append(f"- {n}")
        if w == "4":
            for key, name in (("ps_latency", "peersync"), ("st_latency", "syncthing")):
                if key in ctx.extra:
                    s = sorted(ctx.extra[key])
                    lines.append(f"- {name}: min {fmt(s[0], 's')}, max {fmt(s[-1], 's')} over {len(s)} edits")
    path.write_text("\n".join(lines).rstrip() + "\n")
    raw: dict[str, Any] = {
        "mode": mode, "started": started, "seconds": seconds, "facts": facts, "versions": versions,
        "params": ctx.params, "notes": ctx.notes, "results": [r.__dict__ for r in ctx.results],
        "extra": {k: v for k, v in ctx.extra.items()},
    }
    path.with_suffix(".json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
