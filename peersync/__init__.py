"""peersync: keep a folder identical on several machines through a folder a cloud client replicates."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
