"""Office and LibreOffice saves, replayed on disk step by step, sync as one edit of the document.

Word, Excel and LibreOffice never write a document in place. They write the
new content to a temporary file, move the original out of the way (Word,
Excel) and move the temporary into place, while an owner lock file says the
document is open. Each replay below follows the real sequence with its real
file names, and checks on the other peer that the document was only ever
overwritten: no delete sent, no lock or temporary file, no conflict copy.

Two ways to meet a save:
- ``watching``: both peers run `peersync run` while the save happens;
- ``sync-midway``: a manual `peersync sync` on the saving peer lands at the worst
  moment (just after the original was moved away), then the save finishes and
  both sync again.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Peer, tree
from test_service import services, stays_false, wait_until  # noqa: F401  (services is a fixture)

Step = Callable[[], None]


def _pauses() -> Callable[[], None]:
    """Small, varied pauses between the steps of a save (0.05-0.3 s), the same every run.

    The third one follows the moment the original is moved away: at 0.3 s it outlasts
    the service's debounce (0.2 s), so a cycle can see the document missing.
    """
    seq = iter([0.05, 0.2, 0.3, 0.1, 0.25, 0.15, 0.3, 0.05] * 4)
    return lambda: time.sleep(next(seq))


def save_word(store: Path, new: bytes, pause: Step, midway: Step) -> None:
    """Word saving Quote.docx."""
    owner = store / "~$Quote.docx"
    owner.write_bytes(b"\x05alice" + b"\x00" * 50 + b"\x05\x00a\x00l\x00i\x00c\x00e\x00" + b" " * 90)
    pause()
    (store / "~WRD0000.tmp").write_bytes(new)
    pause()
    os.rename(store / "Quote.docx", store / "~WRL0001.tmp")
    midway()
    pause()
    os.rename(store / "~WRD0000.tmp", store / "Quote.docx")
    pause()
    (store / "~WRL0001.tmp").unlink()
    pause()
    owner.unlink()  # the document is closed


def save_excel(store: Path, new: bytes, pause: Step, midway: Step) -> None:
    """Excel saving Book.xlsx."""
    owner = store / "~$Book.xlsx"
    owner.write_bytes(b"\x05alice" + b"\x00" * 100 + b" " * 50)
    pause()
    (store / "8A3B2C1D").write_bytes(new)
    pause()
    os.rename(store / "Book.xlsx", store / "1F2E3D4C.tmp")
    midway()
    pause()
    os.rename(store / "8A3B2C1D", store / "Book.xlsx")
    pause()
    (store / "1F2E3D4C.tmp").unlink()
    pause()
    owner.unlink()


def save_libreoffice(store: Path, new: bytes, pause: Step, midway: Step) -> None:
    """LibreOffice saving Quote.odt."""
    lock = store / ".~lock.Quote.odt#"
    lock.write_text(",alice,laptop,15.05.2024 10:17,file:///home/alice/.config/libreoffice/4;\n")
    pause()
    (store / "lu1234abcd.tmp").write_bytes(new)
    midway()  # LibreOffice never moves the original away; its worst moment is just before the rename
    pause()
    os.replace(store / "lu1234abcd.tmp", store / "Quote.odt")
    pause()
    lock.unlink()


APPS = {
    "word": ("Quote.docx", save_word),
    "excel": ("Book.xlsx", save_excel),
    "libreoffice": ("Quote.odt", save_libreoffice),
}


class Watch:
    """Samples a store folder many times a second and remembers every name it ever saw there."""

    def __init__(self, root: Path, document: str) -> None:
        self.root = root
        self.document = document
        self.seen: set[str] = set()
        self.document_missing = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                names = set(os.listdir(self.root))
            except OSError:
                names = set()
            self.seen |= names
            if self.document not in names:
                self.document_missing += 1
            time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def strays(self) -> set[str]:
        """Names other than the document, the marker and peersync's own apply temporaries."""
        return {n for n in self.seen if n not in (self.document, ".peersync") and not n.startswith(".peersync-tmp-")}


def document_content(old_or_new: str, name: str) -> bytes:
    body = (f"{name} {old_or_new} " * 200).encode()
    return b"PK\x03\x04" + body


def check_receiver(sender: Peer, receiver: Peer, document: str, old: bytes, new: bytes, watch: Watch) -> None:
    assert tree(receiver.store) == {document: new}
    assert tree(sender.store) == {document: new}
    assert watch.strays() == set(), f"lock or temporary files appeared on {receiver.name}: {watch.strays()}"
    assert not list(receiver.store.rglob("*sync-conflict*")) and not list(sender.store.rglob("*sync-conflict*"))
    versions = receiver.cli("versions", str(receiver.store / document), check=0).out
    lines = [line for line in versions.splitlines() if re.match(r"^\s*\d+\s", line)]
    assert "deleted" not in versions, f"a deletion of {document} was sent and applied:\n{versions}"
    assert len(lines) <= 1, versions
    for line in lines:
        assert "overwritten" in line and hashlib.sha256(old).hexdigest()[:12] in line, versions
    assert watch.document_missing == 0, f"{document} vanished from {receiver.name} during the save"


@pytest.mark.parametrize("app", list(APPS))
def test_a_save_while_both_services_watch_is_one_edit(make_peers, services, app):  # noqa: F811
    """A rep saves a document in Office while peersync runs on her laptop and on the office PC."""
    document, save = APPS[app]
    alice, bob = make_peers(2)
    old, new = document_content("old", document), document_content("new, with the customer's changes", document)
    alice.write(document, old)
    alice.sync()
    bob.sync()
    services(alice)
    services(bob)
    watch = Watch(bob.store, document)
    try:
        save(alice.store, new, _pauses(), lambda: None)
        wait_until(lambda: (bob.store / document).exists() and bob.read(document) == new, timeout=30,
                   what=f"the saved {document} on bob")
        # Let a wrongly sent deletion (held back delete_delay_seconds) show itself, should there be one.
        assert stays_false(lambda: watch.document_missing or watch.strays(), seconds=2.5), watch.strays()
    finally:
        watch.stop()
    check_receiver(alice, bob, document, old, new, watch)


@pytest.mark.parametrize("app", list(APPS))
def test_a_manual_sync_in_the_middle_of_a_save_sends_no_delete(make_peers, app):
    """The rep clicks "sync now" (or a scheduled sync fires) at the very moment the save is half done."""
    document, save = APPS[app]
    alice, bob = make_peers(2)
    old, new = document_content("old", document), document_content("new, with the customer's changes", document)
    alice.write(document, old)
    alice.sync()
    bob.sync()
    watch = Watch(bob.store, document)

    def midway() -> None:
        alice.sync(check=None)
        bob.sync(check=None)

    try:
        save(alice.store, new, _pauses(), midway)
        alice.sync()
        bob.sync()
    finally:
        watch.stop()
    check_receiver(alice, bob, document, old, new, watch)
