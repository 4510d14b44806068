"""Run the peersync command line from a checkout: ``python cli.py ...``."""

import sys

from peersync.cli import main

if __name__ == "__main__":
    sys.exit(main())
