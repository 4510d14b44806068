"""Invite codes (docs/bundle-format.md §9): what `peersync invite` prints and `peersync join` reads.

A code travels by e-mail, chat or a phone call to the sysadmin, so it gets
wrapped, indented and mistyped. A damaged code must be refused with one clear
error, never half-read into a wrong store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peersync.bundle import id_from_bytes
from peersync.errors import InviteError
from peersync.state import Identity, State, StoreConfig
from peersync.store import INVITE_PREFIX, make_invite, read_invite

SECRET = bytes(range(32))
STORE_ID = id_from_bytes(bytes(range(16)))
URLSAFE = string.ascii_letters + string.digits + "-_"


@pytest.fixture
def ident(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Identity:
    home = tmp_path / "home"
    monkeypatch.setenv("PEERSYNC_HOME", str(home))
    return State(home).identity(create=True)


def invite(ident: Identity, name: str = "docs", secret: bytes = SECRET, store: str = STORE_ID) -> str:
    return make_invite(StoreConfig(store, name, "/store", "/relay"), {0: {"": secret}}, ident)


def encode(body: bytes, check: bytes | None = None) -> str:
    """A code built from the spec, with any body, so the reader's checks after the checksum can be reached."""
    check = hashlib.sha256(body).digest()[:4] if check is None else check
    return INVITE_PREFIX + base64.urlsafe_b64encode(body + check).decode().rstrip("=")


def test_round_trip(ident: Identity) -> None:
    data = read_invite(invite(ident))
    assert data == {"v": 1, "store": STORE_ID, "name": "docs", "secret": SECRET, "from": ident.peer_id,
                    "rotated": {}}


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])  # ident is read-only
@given(name=st.text(st.characters(min_codepoint=32, exclude_categories=("Cs",)), min_size=1, max_size=60),
       secret=st.binary(min_size=32, max_size=32))
def test_round_trip_any_name_and_secret(ident: Identity, name: str, secret: bytes) -> None:
    data = read_invite(invite(ident, name, secret))
    assert (data["name"], data["secret"], data["store"]) == (name, secret, STORE_ID)


def test_code_layout_follows_the_spec(ident: Identity) -> None:
    code = invite(ident, "Angebote Müller")
    assert code.startswith("PSYNC1-")
    rest = code[len("PSYNC1-"):]
    assert set(rest) <= set(URLSAFE)  # unpadded base64url: safe in a URL, a chat and a shell
    raw = base64.urlsafe_b64decode(rest + "=" * (-len(rest) % 4))
    body, check = raw[:-4], raw[-4:]
    assert hashlib.sha256(body).digest()[:4] == check
    assert body.decode("ascii") == (
        f'{{"v":1,"store":"{STORE_ID}","name":"Angebote M\\u00fcller",'
        f'"secret":"{base64.b64encode(SECRET).decode()}","from":"{ident.peer_id}"}}'
    )
    assert "\n" not in code and " " not in code


def test_same_code_for_same_input(ident: Identity) -> None:
    assert invite(ident) == invite(ident)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: "\n".join(c[i : i + 40] for i in range(0, len(c), 40)),  # wrapped by a mail client
        lambda c: "\r\n".join(c[i : i + 64] for i in range(0, len(c), 64)) + "\r\n",  # Windows line ends
        lambda c: "   " + c + "  \n",  # pasted with the indentation of a quoted mail
        lambda c: "\t".join(c[i : i + 8] for i in range(0, len(c), 8)),  # grouped for reading aloud
        lambda c: c[:7] + " " + c[7:],  # a space after the prefix
        lambda c: " ".join(c),  # a space between every character
    ],
)
def test_whitespace_inside_a_pasted_code_is_tolerated(ident: Identity, mangle: Any) -> None:
    assert read_invite(mangle(invite(ident))) == read_invite(invite(ident))


def test_non_breaking_space_is_whitespace_too(ident: Identity) -> None:
    """Word processors and chat apps turn spaces into U+00A0; str.split() removes it as well."""
    code = invite(ident)
    assert read_invite(code[:20] + "\u00a0" + code[20:])["store"] == STORE_ID


def _single_changes(code: str) -> list[tuple[int, str]]:
    out = []
    for i, old in enumerate(code):
        for new in URLSAFE + "+/=.!é":
            if new != old:
                out.append((i, new))
    return out


@pytest.mark.parametrize("name", ["d", "do", "doc", "docs", "Quotes 2024"])
def test_any_single_changed_character_never_reads_as_another_invite(ident: Identity, name: str) -> None:
    """Exhaustive over positions and replacement characters, for each padding length of the base64.

    A change must be refused, except the spellings a lenient base64url decoder
    takes for the same bytes (see the xfail below), which give back exactly the
    same invite.
    """
    code = invite(ident, name)
    original = read_invite(code)
    for i, new in _single_changes(code):
        changed = code[:i] + new + code[i + 1 :]
        try:
            data = read_invite(changed)
        except InviteError:
            continue
        assert data == original, f"position {i} changed to {new!r} reads as a different invite"


@pytest.mark.parametrize("name", ["d", "do", "docs"])  # codes whose last character has spare bits
def test_any_single_changed_character_is_rejected(ident: Identity, name: str) -> None:
    code = invite(ident, name)
    for i, new in _single_changes(code):
        with pytest.raises(InviteError):
            read_invite(code[:i] + new + code[i + 1 :])


def test_any_truncation_is_rejected(ident: Identity) -> None:
    code = invite(ident)
    for cut in range(len(code)):
        with pytest.raises(InviteError):
            read_invite(code[:cut])


def test_swapped_neighbours_are_rejected(ident: Identity) -> None:
    """The most common typing mistake after a wrong character."""
    code = invite(ident)
    for i in range(len(INVITE_PREFIX), len(code) - 1):
        if code[i] != code[i + 1]:
            with pytest.raises(InviteError):
                read_invite(code[:i] + code[i + 1] + code[i] + code[i + 2 :])


@pytest.mark.parametrize(
    "code",
    [
        "",
        "PSYNC1-",
        "PSYNC1",
        "psync1-AAAA",
        "PSYNC2-AAAA",
        "https://example.com/invite",
        "PSYNC1-" + "A" * 10,
        "PSYNC1-" + "%%%%",
    ],
)
def test_garbage_is_rejected(code: str) -> None:
    with pytest.raises(InviteError):
        read_invite(code)


def test_lower_case_prefix_is_rejected(ident: Identity) -> None:
    code = invite(ident)
    with pytest.raises(InviteError):
        read_invite(code.replace("PSYNC1-", "psync1-"))


def _body(**changes: Any) -> bytes:
    data: dict[str, Any] = {"v": 1, "store": STORE_ID, "name": "docs", "secret": base64.b64encode(SECRET).decode(),
                            "from": "A" * 26}
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    return json.dumps(data, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_body(v=2), id="version 2"),
        pytest.param(_body(v="1"), id="version as a string"),
        pytest.param(_body(v=None), id="no version"),
        pytest.param(_body(secret=base64.b64encode(SECRET[:31]).decode()), id="31-byte secret"),
        pytest.param(_body(secret=base64.b64encode(SECRET + b"x").decode()), id="33-byte secret"),
        pytest.param(_body(secret=None), id="no secret"),
        pytest.param(_body(secret=12), id="secret not a string"),
        pytest.param(_body(secret="***"), id="secret not base64"),
        pytest.param(b"[1,2,3]", id="JSON array"),
        pytest.param(b"not json", id="not JSON"),
        pytest.param(b"\xff\xfe", id="not UTF-8"),
        pytest.param(b"", id="empty body"),
    ],
)
def test_well_checksummed_but_invalid_bodies_are_rejected(body: bytes) -> None:
    with pytest.raises(InviteError):
        read_invite(encode(body))


def test_the_spec_encoding_is_read() -> None:
    data = read_invite(encode(_body()))
    assert data["secret"] == SECRET and data["store"] == STORE_ID


def test_bad_checksum_is_rejected() -> None:
    body = _body()
    good = hashlib.sha256(body).digest()[:4]
    with pytest.raises(InviteError):
        read_invite(encode(body, bytes([good[0] ^ 1]) + good[1:]))


@pytest.mark.parametrize("store", ["../../outside", "/etc", "A" * 25, "", 5])
def test_store_must_be_an_id(store: object) -> None:
    with pytest.raises(InviteError):
        read_invite(encode(_body(store=store)))


def test_invite_error_is_a_refusal_with_a_hint() -> None:
    with pytest.raises(InviteError) as info:
        read_invite("PSYNC1-AAAA")
    assert info.value.exit_status == 2
    assert "invite" in info.value.hint


def test_an_invite_after_a_key_rotation_carries_every_secret(ident: Identity) -> None:
    """A peer joining after a lost laptop was removed can read old bundles and new ones."""
    writer = "A" * 26
    code = make_invite(StoreConfig(STORE_ID, "docs", "/s", "/r"), {0: {"": SECRET}, 1: {writer: b"\x07" * 32}}, ident)
    data = read_invite(code)
    assert data["secret"] == SECRET
    assert data["rotated"] == {1: {writer: b"\x07" * 32}}
