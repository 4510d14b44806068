"""Windows file attributes that mark a cloud client's online-only placeholders.

Cloud clients on Windows (OneDrive Files On-Demand; Dropbox, Google Drive, Box and
iCloud through the same Cloud Files API) leave a file's name in the folder and
its content in the cloud. Such a file can vanish from this machine's disk when
the client "frees up space", and reading it waits for a download. The relay
must be kept "always available offline" (OneDrive: *pinned*).

The values come from the Win32 headers (see docs/doctor.md for sources).
They are read from ``os.stat().st_file_attributes`` without opening the file:
a health check must never download (hydrate) what it looks at.
"""

from __future__ import annotations

FILE_ATTRIBUTE_OFFLINE = 0x00001000
FILE_ATTRIBUTE_RECALL_ON_OPEN = 0x00040000
FILE_ATTRIBUTE_PINNED = 0x00080000
FILE_ATTRIBUTE_UNPINNED = 0x00100000
FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS = 0x00400000

#: Each attribute that says "the content is not (or may soon not be) on this disk", with its name.
PLACEHOLDER_FLAGS: tuple[tuple[int, str], ...] = (
    (FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS, "online-only (RECALL_ON_DATA_ACCESS)"),
    (FILE_ATTRIBUTE_RECALL_ON_OPEN, "not yet downloaded (RECALL_ON_OPEN)"),
    (FILE_ATTRIBUTE_OFFLINE, "offline (OFFLINE)"),
    (FILE_ATTRIBUTE_UNPINNED, "set to online-only (UNPINNED)"),
)

PLACEHOLDER_MASK = 0
for _bit, _name in PLACEHOLDER_FLAGS:
    PLACEHOLDER_MASK |= _bit


def placeholder_flags(attributes: int) -> list[str]:
    """The names of the placeholder attributes set in ``attributes`` (empty: the file is local)."""
    return [name for bit, name in PLACEHOLDER_FLAGS if attributes & bit]


def is_placeholder(attributes: int) -> bool:
    return bool(attributes & PLACEHOLDER_MASK)


def is_pinned(attributes: int) -> bool:
    """OneDrive "Always keep on this device"."""
    return bool(attributes & FILE_ATTRIBUTE_PINNED)
