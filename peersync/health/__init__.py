"""Package health implements ``peersync doctor``: what is wrong with this peer, its relay and its peers, and what to do.

Layout:
  system.py    the seam to the machine (registry, processes, attributes, powercfg) and its fake
  clients.py   the cloud clients as data: where each records its folder, its process and naming habits
  winattrs.py  Windows placeholder attributes
  checks.py    the checks themselves
  report.py    the report as a table, plain text or JSON (schema in docs/doctor.md)
"""

from __future__ import annotations

import argparse
import logging
from typing import TextIO

from ..state import State
from .checks import (
    CLOCK_SKEW_SECONDS,
    SILENT_PEER_SECONDS,
    STALE_TEMP_SECONDS,
    Doctor,
    run_checks,
)
from .clients import CLIENTS, ClientRoot, CloudClient, find_roots, locate
from .report import SCHEMA_VERSION, Check, Report, render
from .system import FakeSystem, ProcInfo, RealSystem, System

__all__ = [
    "CLIENTS",
    "CLOCK_SKEW_SECONDS",
    "Check",
    "ClientRoot",
    "CloudClient",
    "Doctor",
    "FakeSystem",
    "ProcInfo",
    "RealSystem",
    "Report",
    "SCHEMA_VERSION",
    "SILENT_PEER_SECONDS",
    "STALE_TEMP_SECONDS",
    "System",
    "doctor_main",
    "find_roots",
    "locate",
    "render",
    "run_checks",
]

log = logging.getLogger("peersync")


def doctor_main(state: State, args: argparse.Namespace, system: System | None = None,
                out: TextIO | None = None) -> int:
    """``peersync doctor [--json]``: print the report; exit 0 healthy, 1 warnings, 2 failures."""
    report = run_checks(state, system or RealSystem())
    log.info("doctor: %s", report.summary())
    render(report, bool(getattr(args, "json", False)), out)
    return report.exit_code
