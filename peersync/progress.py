"""Per-stage progress of a sync cycle: rich progress bars on a terminal, plain log lines elsewhere.

The engine reports ``(stage, items, bytes)`` increments; stages are scan,
hash, pack, publish, fetch, verify and apply.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import TaskID

STAGES = ("scan", "hash", "pack", "publish", "fetch", "verify", "apply")


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Reporter:
    """Counts per stage; subclasses show them."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.store = ""

    def begin(self, store: str) -> None:
        self.store = store
        self.counts = {}

    def __call__(self, stage: str, items: int, nbytes: int) -> None:
        c = self.counts.setdefault(stage, [0, 0])
        c[0] += items
        c[1] += nbytes

    def end(self) -> None:
        pass

    def summary(self) -> str:
        parts = []
        for s in STAGES:
            if s in self.counts:
                items, nbytes = self.counts[s]
                parts.append(f"{s} {items}" + (f" ({human_bytes(nbytes)})" if nbytes else ""))
        return ", ".join(parts)


class PlainReporter(Reporter):
    """One line per stage when a cycle ends: for logs, pipes and CI."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        super().__init__()
        self.stream = stream

    def end(self) -> None:
        for stage in STAGES:
            if stage in self.counts:
                items, nbytes = self.counts[stage]
                print(f"{self.store}: {stage} {items} items, {human_bytes(nbytes)}", file=self.stream, flush=True)


class RichReporter(Reporter):
    """Live bars with counts and bytes, one per stage, on a terminal."""

    def __init__(self) -> None:
        super().__init__()
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

        self._rich = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[store]}[/] {task.description:<8}"),
            BarColumn(bar_width=None),
            TextColumn("{task.completed:>8.0f} items"),
            TextColumn("{task.fields[size]:>10}"),
            transient=False,
            redirect_stdout=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def begin(self, store: str) -> None:
        super().begin(store)
        self._tasks = {}
        self._rich.start()

    def __call__(self, stage: str, items: int, nbytes: int) -> None:
        super().__call__(stage, items, nbytes)
        if stage not in self._tasks:
            self._tasks[stage] = self._rich.add_task(stage, total=None, store=self.store, size="")
        done, size = self.counts[stage]
        self._rich.update(self._tasks[stage], completed=done, size=human_bytes(size) if size else "")

    def end(self) -> None:
        for stage, task in self._tasks.items():
            self._rich.update(task, total=self.counts[stage][0] or 1)
        self._rich.stop()


def reporter_for(stream: TextIO, quiet: bool) -> Reporter:
    if quiet:
        return Reporter()
    if stream.isatty():
        return RichReporter()
    return PlainReporter(stream)
