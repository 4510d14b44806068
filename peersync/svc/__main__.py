"""``python -m peersync.svc [--home DIR] COMMAND...``: peersync with ``PEERSYNC_HOME`` given as an argument.

A Windows scheduled task cannot set environment variables, so a task
registered with a ``PEERSYNC_HOME`` runs ``pythonw -m peersync.svc --home DIR run``.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "--home":
        os.environ["PEERSYNC_HOME"] = argv[1]
        argv = argv[2:]
    from ..cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    from ..cli import own_process

    own_process()
    sys.exit(main(sys.argv[1:]))
