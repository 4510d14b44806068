"""The doctor's report: checks with a status, a finding and a fix; as a table, as text or as JSON.

The JSON form is a contract for monitoring tools (docs/doctor.md)::

    {"version": 1, "status": "ok|warn|fail", "time": <unix seconds>,
     "checks": [{"id": "...", "status": "ok|warn|fail|info", "finding": "...", "fix": "...",
                 "details": {...}}]}

``status`` is the worst check (``info`` never raises it); the exit status is
0 for ok, 1 for warn, 2 for fail.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

SCHEMA_VERSION = 1
STATUSES = ("ok", "info", "warn", "fail")
EXIT = {"ok": 0, "warn": 1, "fail": 2}

MARKS = {"ok": "✓", "info": "·", "warn": "!", "fail": "✗"}
ASCII_MARKS = {"ok": "OK", "info": "--", "warn": "!!", "fail": "XX"}
COLOURS = {"ok": "green", "info": "blue", "warn": "yellow", "fail": "red"}


@dataclasses.dataclass
class Check:
    """One finding. ``id`` is stable across runs (``store:docs:marker``) so a monitor can key on it."""

    id: str
    status: str  # one of STATUSES
    finding: str  # one line: what was seen
    fix: str = ""  # one line: what to do; empty when nothing is to be done
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown check status {self.status!r}")
        self.finding = _one_line(self.finding)
        self.fix = _one_line(self.fix)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "finding": self.finding, "fix": self.fix,
                "details": self.details}


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclasses.dataclass
class Report:
    checks: list[Check]
    time: float = 0.0

    @property
    def status(self) -> str:
        found = {c.status for c in self.checks}
        return "fail" if "fail" in found else "warn" if "warn" in found else "ok"

    @property
    def exit_code(self) -> int:
        return EXIT[self.status]

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in STATUSES}

    def to_json(self) -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "status": self.status, "time": round(self.time, 3),
                "checks": [c.to_json() for c in self.checks]}

    def summary(self) -> str:
        n = self.counts()
        parts = [f"{n['fail']} failure{'s' if n['fail'] != 1 else ''}",
                 f"{n['warn']} warning{'s' if n['warn'] != 1 else ''}"]
        head = {"ok": "healthy", "warn": "warnings", "fail": "failures"}[self.status]
        return f"peersync doctor: {head} ({', '.join(parts)}, {len(self.checks)} checks)"


def write_json(report: Report, out: TextIO) -> None:
    out.write(json.dumps(report.to_json(), indent=2) + "\n")
    out.flush()


def _can_encode(out: TextIO, text: str) -> bool:
    encoding = getattr(out, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def write_plain(report: Report, out: TextIO) -> None:
    """One line per check: ``! relay:docs:space: finding — fix``. ASCII marks if the output cannot encode ✓."""
    unicode_ok = _can_encode(out, "".join(MARKS.values()) + "—")
    marks = MARKS if unicode_ok else ASCII_MARKS
    dash = " — " if unicode_ok else " -- "
    for c in report.checks:
        line = f"{marks[c.status]} {c.id}: {c.finding}" + (f"{dash}{c.fix}" if c.fix else "")
        if not unicode_ok:
            line = line.encode("ascii", "replace").decode("ascii")
        out.write(line + "\n")
    out.write(report.summary() + "\n")
    out.flush()


def write_table(report: Report, out: TextIO) -> None:
    """A rich table with coloured marks, for a terminal."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out, highlight=False, soft_wrap=False)
    table = Table(show_header=True, header_style="bold", expand=False, show_lines=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True, style="dim")
    table.add_column("finding", overflow="fold")
    table.add_column("what to do", overflow="fold")
    for c in report.checks:
        table.add_row(Text(MARKS[c.status], style=f"bold {COLOURS[c.status]}"), c.id, c.finding,
                      Text(c.fix, style=COLOURS[c.status] if c.status in ("warn", "fail") else ""))
    console.print(table)
    console.print(Text(report.summary(), style=f"bold {COLOURS[report.status]}"))


def render(report: Report, as_json: bool, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if as_json:
        write_json(report, out)
    elif out.isatty() and _can_encode(out, "".join(MARKS.values())):
        write_table(report, out)
    else:
        write_plain(report, out)


def worst(statuses: Iterable[str]) -> str:
    order = {s: i for i, s in enumerate(STATUSES)}
    return max(statuses, key=lambda s: order[s], default="ok")
