"""``python -m peersync``: the same command line as ``peersync``."""

from .cli import run

run()
