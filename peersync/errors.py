"""The exceptions peersync raises, each carrying what the CLI needs to print one sentence.

    PeersyncError                 base: message, hint, exit status
    ├── UsageError                bad command-line input (exit 2)
    ├── RefusedError              init/join/run refused: folder owned, already a store... (exit 2)
    ├── StateError                the state folder is missing, copied or unreadable
    ├── StorePausedError          a store's marker is missing: nothing is read or published
    ├── RelayError                the relay folder is missing or unwritable
    ├── PathError                 a path read from a bundle is hostile or invalid
    ├── BundleError               a bundle failed a check
    │   ├── IncompleteBundle      shorter than it declares: probably still uploading
    │   └── BadBundle             fails a signature, decryption, store, author or size check
    ├── CryptoError               authenticated decryption or a signature did not check out
    └── InviteError               an invite code that cannot be read

Every error's ``str()`` is a plain sentence; ``hint`` says what to do.
"""

from __future__ import annotations


class PeersyncError(Exception):
    """Base of every error peersync reports to a user."""

    exit_status = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def sentence(self) -> str:
        """The one line the CLI prints: what failed, then what to do."""
        text = self.message.rstrip(".")
        if self.hint:
            text += "; " + self.hint.rstrip(".")
        return text + "."


class UsageError(PeersyncError):
    exit_status = 2


class RefusedError(PeersyncError):
    exit_status = 2


class StateError(PeersyncError):
    exit_status = 2


class StorePausedError(PeersyncError):
    pass


class RelayError(PeersyncError):
    pass


class PathError(PeersyncError):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"unsafe path {path[:200]!r}: {reason}")
        self.path = path
        self.reason = reason


class BundleError(PeersyncError):
    #: True when the failure may be a file still arriving, so it is waited for before quarantine.
    retryable = False


class IncompleteBundle(BundleError):
    pass


class BadBundle(BundleError):
    pass


class CryptoError(PeersyncError):
    """Authentication failed: the data was not written by who it claims, or was changed."""


class InviteError(PeersyncError):
    exit_status = 2
