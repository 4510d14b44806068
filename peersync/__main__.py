"""``python -m peersync``: the same command line as ``peersync``."""

import sys

from .cli import main

sys.exit(main())
