"""Per-stage progress of a sync cycle: rich progress bars on a terminal, plain log lines elsewhere.

The engine reports ``(stage, items, bytes)`` increments as work is done, and,
before a stage runs where it can know it, the work ahead with ``total``:
scan (files in the index, or counted first), pack and publish (the queue's
changes and their bytes), fetch, verify and apply (the bundles listed and
their bytes). Stages are scan, hash, pack, publish, fetch, verify and apply;
hash has no total (which files changed is found out by the scan).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

STAGES = ("scan", "hash", "pack", "publish", "fetch", "verify", "apply")

# A stage without a total gets a plain line at most this often (seconds).
PLAIN_EVERY = 5.0


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Reporter:
    """Counts and totals per stage; subclasses show them."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.totals: dict[str, tuple[int, int]] = {}
        self.store = ""

    def begin(self, store: str) -> None:
        self.store = store
        self.counts = {}
        self.totals = {}

    def total(self, stage: str, items: int, nbytes: int) -> None:
        """``items`` and ``nbytes`` are ahead of ``stage``; a stage that runs again adds its work to what is done."""
        done_items, done_bytes = self.counts.get(stage, [0, 0])
        self.totals[stage] = (done_items + items, done_bytes + nbytes)

    def __call__(self, stage: str, items: int, nbytes: int) -> None:
        c = self.counts.setdefault(stage, [0, 0])
        c[0] += items
        c[1] += nbytes

    def end(self) -> None:
        pass

    def fraction(self, stage: str) -> float | None:
        """How much of a stage with a total is done (0 to 1), by bytes where it has bytes; None without a total."""
        if stage not in self.totals:
            return None
        items, nbytes = self.counts.get(stage, [0, 0])
        total_items, total_bytes = self.totals[stage]
        if total_bytes:
            return min(1.0, nbytes / total_bytes)
        if total_items:
            return min(1.0, items / total_items)
        return 1.0

    def describe(self, stage: str) -> tuple[str, str]:
        """("done/total items", "done/total bytes") as far as they are known."""
        items, nbytes = self.counts.get(stage, [0, 0])
        if stage not in self.totals:
            return f"{items} items", human_bytes(nbytes) if nbytes else ""
        total_items, total_bytes = self.totals[stage]
        total_items, total_bytes = max(total_items, items), max(total_bytes, nbytes)  # the total was an estimate
        size = f"{human_bytes(nbytes)}/{human_bytes(total_bytes)}" if total_bytes else (
            human_bytes(nbytes) if nbytes else "")
        return f"{items}/{total_items} items", size

    def summary(self) -> str:
        parts = []
        for s in STAGES:
            if s in self.counts:
                items, nbytes = self.counts[s]
                parts.append(f"{s} {items}" + (f" ({human_bytes(nbytes)})" if nbytes else ""))
        return ", ".join(parts)


class PlainReporter(Reporter):
    """Log lines for logs, pipes and CI: each stage's total when it is known, a line per tenth of it done
    (every few seconds for a stage without a total), and one line per stage when the cycle ends."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        super().__init__()
        self.stream = stream
        self._tenths: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def begin(self, store: str) -> None:
        super().begin(store)
        self._tenths = {}
        self._last = {}

    def _line(self, stage: str) -> None:
        count, size = self.describe(stage)
        fraction = self.fraction(stage)
        percent = f" ({fraction:.0%})" if fraction is not None else ""
        print(f"{self.store}: {stage} {count}{', ' + size if size else ''}{percent}", file=self.stream, flush=True)

    def total(self, stage: str, items: int, nbytes: int) -> None:
        super().total(stage, items, nbytes)
        self._tenths[stage] = int(10 * (self.fraction(stage) or 0.0))
        if items or nbytes:
            self._line(stage)

    def __call__(self, stage: str, items: int, nbytes: int) -> None:
        super().__call__(stage, items, nbytes)
        fraction = self.fraction(stage)
        if fraction is not None:
            tenths = int(10 * fraction)
            if tenths > self._tenths.get(stage, 0):
                self._tenths[stage] = tenths
                self._line(stage)
            return
        now = time.monotonic()
        if now - self._last.setdefault(stage, now) >= PLAIN_EVERY:
            self._last[stage] = now
            self._line(stage)

    def end(self) -> None:
        for stage in STAGES:
            if stage in self.counts:
                items, nbytes = self.counts[stage]
                print(f"{self.store}: {stage} {items} items, {human_bytes(nbytes)}", file=self.stream, flush=True)


class RichReporter(Reporter):
    """Live bars with counts and bytes, one per stage, on a terminal; a bar with a total fills towards it."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__()
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

        self._rich = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[store]}[/] {task.description:<8}"),
            BarColumn(bar_width=None),
            TextColumn("{task.fields[count]:>17}"),
            TextColumn("{task.fields[size]:>19}"),
            console=console,
            transient=False,
            redirect_stdout=False,
        )
        self._tasks: dict[str, TaskID] = {}

    def begin(self, store: str) -> None:
        super().begin(store)
        self._tasks = {}
        self._rich.start()

    def _show(self, stage: str) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._rich.add_task(stage, total=None, store=self.store, count="", size="")
        count, size = self.describe(stage)
        fraction = self.fraction(stage)
        if fraction is None:
            self._rich.update(self._tasks[stage], completed=self.counts[stage][0], count=count, size=size)
        else:
            self._rich.update(self._tasks[stage], total=1000, completed=int(1000 * fraction), count=count, size=size)

    def total(self, stage: str, items: int, nbytes: int) -> None:
        super().total(stage, items, nbytes)
        if items or nbytes or stage in self._tasks:  # no bar for a stage with nothing to do
            self._show(stage)

    def __call__(self, stage: str, items: int, nbytes: int) -> None:
        super().__call__(stage, items, nbytes)
        self._show(stage)

    def end(self) -> None:
        for stage, task in self._tasks.items():
            if stage not in self.totals:  # counted up without a total: the stage is over, the bar is full
                self._rich.update(task, total=self.counts[stage][0] or 1)
        self._rich.stop()


def reporter_for(stream: TextIO, quiet: bool) -> Reporter:
    if quiet:
        return Reporter()
    if stream.isatty():
        from rich.console import Console

        return RichReporter(Console(file=stream))  # where plain lines would go: stdout stays for the results
    return PlainReporter(stream)
