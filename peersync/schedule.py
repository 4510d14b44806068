"""When the service syncs a store: continuously, every N minutes, hourly, daily, weekly, or only on demand.

Spellings accepted by the ``schedule`` setting::

    continuous            on every change (the default)
    every 15m | every 2h  at a fixed interval
    hourly                at the top of every hour
    daily 18:30           once a day at that local time
    weekly mon 09:00      once a week
    manual                never by itself: only `peersync sync`

Whatever the schedule, `peersync sync` syncs at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from .errors import UsageError

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    kind: str  # continuous, interval, hourly, daily, weekly, manual
    minutes: int = 0  # interval length
    at: dt.time = dt.time(0, 0)
    weekday: int = 0

    @property
    def continuous(self) -> bool:
        return self.kind == "continuous"

    def next_due(self, last: dt.datetime) -> dt.datetime | None:
        """The first time after ``last`` (local, naive) a scheduled cycle is due; None if never."""
        if self.kind in ("continuous", "manual"):
            return None
        if self.kind == "interval":
            return last + dt.timedelta(minutes=self.minutes)
        if self.kind == "hourly":
            return last.replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
        candidate = dt.datetime.combine(last.date(), self.at)
        if self.kind == "daily":
            return candidate if candidate > last else candidate + dt.timedelta(days=1)
        # weekly
        candidate += dt.timedelta(days=(self.weekday - last.weekday()) % 7)
        return candidate if candidate > last else candidate + dt.timedelta(days=7)

    def __str__(self) -> str:
        if self.kind == "interval":
            return f"every {self.minutes}m"
        if self.kind == "daily":
            return f"daily {self.at:%H:%M}"
        if self.kind == "weekly":
            return f"weekly {DAYS[self.weekday]} {self.at:%H:%M}"
        return self.kind


def _time(text: str) -> dt.time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise UsageError(f"{text!r} is not a time of day", "write it as HH:MM, for example 18:30")
    return dt.time(int(m.group(1)), int(m.group(2)))


def parse(spec: str) -> Schedule:
    words = spec.strip().lower().split()
    bad = UsageError(f"{spec!r} is not a schedule",
                     "use continuous, every 15m, every 2h, hourly, daily 18:30, weekly mon 09:00 or manual")
    if words in (["continuous"], ["manual"], ["hourly"]):
        return Schedule(words[0])
    if len(words) == 2 and words[0] == "every":
        m = re.fullmatch(r"(\d+)(m|min|h)", words[1])
        if not m or int(m.group(1)) == 0:
            raise bad
        minutes = int(m.group(1)) * (60 if m.group(2) == "h" else 1)
        return Schedule("interval", minutes=minutes)
    if len(words) == 2 and words[0] == "daily":
        return Schedule("daily", at=_time(words[1]))
    if len(words) == 3 and words[0] == "weekly" and words[1][:3] in DAYS:
        return Schedule("weekly", at=_time(words[2]), weekday=DAYS.index(words[1][:3]))
    raise bad
