"""Run the peersync command line from a checkout: ``python cli.py ...``."""

from peersync.cli import run

if __name__ == "__main__":
    run()
