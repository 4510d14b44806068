"""peersync.crypto against published test vectors, and its one-error contract (docs/bundle-format.md §4).

The vectors are copied from the RFCs; a library upgrade or a wrong primitive
(Ed25519ph instead of pure Ed25519, the original 64-bit-nonce ChaCha20 instead
of the IETF one) fails them.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peersync import crypto
from peersync.errors import CryptoError, PeersyncError

# --------------------------------------------------------------------------- #
# RFC 8032 section 7.1: Ed25519                                               #
# --------------------------------------------------------------------------- #

RFC8032 = [
    pytest.param(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        id="TEST 1 (empty message)",
    ),
    pytest.param(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        id="TEST 2 (one byte)",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_ed25519_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    key = crypto.SigningKey.from_bytes(bytes.fromhex(secret))
    msg, sig, pub = bytes.fromhex(message), bytes.fromhex(signature), bytes.fromhex(public)
    assert key.public_bytes() == pub
    assert key.to_bytes() == bytes.fromhex(secret)
    assert key.sign(msg) == sig  # Ed25519 signatures are deterministic
    crypto.verify(pub, sig, msg)


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_ed25519_rejects_tampering(secret: str, public: str, message: str, signature: str) -> None:
    pub, sig, msg = bytes.fromhex(public), bytes.fromhex(signature), bytes.fromhex(message)
    for bad_sig, bad_msg, bad_pub in [
        (bytes([sig[0] ^ 1]) + sig[1:], msg, pub),  # R changed
        (sig[:32] + bytes([sig[32] ^ 1]) + sig[33:], msg, pub),  # S changed
        (sig, msg + b"\x00", pub),  # message extended
        (sig, msg, bytes([pub[0] ^ 1]) + pub[1:]),  # another key
        (sig[:63], msg, pub),  # short signature
        (sig, msg, pub[:31]),  # short key: a ValueError inside the library, still CryptoError
    ]:
        with pytest.raises(CryptoError):
            crypto.verify(bad_pub, bad_sig, bad_msg)


def test_ed25519_rfc8032_other_key_does_not_verify() -> None:
    (s1, p1, m1, sig1), (s2, p2, m2, sig2) = (p.values for p in RFC8032)
    with pytest.raises(CryptoError):
        crypto.verify(bytes.fromhex(p2), bytes.fromhex(sig1), bytes.fromhex(m1))


def test_signing_key_round_trip_and_bad_length() -> None:
    key = crypto.SigningKey.generate()
    again = crypto.SigningKey.from_bytes(key.to_bytes())
    assert again.public_bytes() == key.public_bytes()
    assert len(key.public_bytes()) == crypto.PUBLIC_KEY_BYTES
    assert len(key.sign(b"x")) == crypto.SIGNATURE_BYTES
    for raw in (b"", b"\x00" * 31, b"\x00" * 33, b"\x00" * 64):
        with pytest.raises(CryptoError):
            crypto.SigningKey.from_bytes(raw)


def test_fingerprint_is_sha256_prefix() -> None:
    """A peer id is the first 16 bytes of SHA-256 over the raw public key (spec §3)."""
    pub = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert crypto.fingerprint(pub) == hashlib.sha256(pub).digest()[:16]
    from peersync.state import peer_id_of

    assert peer_id_of(pub) == "EH7DDX5BKSRGCYTL7BKAI36SE4"  # the example in docs/bundle-format.md


# --------------------------------------------------------------------------- #
# RFC 8439 section 2.8.2: ChaCha20-Poly1305 AEAD                              #
# --------------------------------------------------------------------------- #

AEAD_KEY = bytes(range(0x80, 0xA0))
AEAD_NONCE = bytes.fromhex("070000004041424344454647")
AEAD_AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
AEAD_PLAINTEXT = (
    b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
    b"sunscreen would be it."
)
AEAD_CIPHERTEXT = bytes.fromhex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
    "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
    "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116"
)
AEAD_TAG = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")


def test_chacha20poly1305_rfc8439_vector() -> None:
    sealed = crypto.seal(AEAD_KEY, AEAD_NONCE, AEAD_PLAINTEXT, AEAD_AAD)
    assert sealed == AEAD_CIPHERTEXT + AEAD_TAG  # the tag is appended (spec §5.3)
    assert len(sealed) == len(AEAD_PLAINTEXT) + crypto.TAG_BYTES
    assert crypto.open_sealed(AEAD_KEY, AEAD_NONCE, sealed, AEAD_AAD) == AEAD_PLAINTEXT


def test_chacha20poly1305_rejects_every_tampering() -> None:
    sealed = AEAD_CIPHERTEXT + AEAD_TAG
    cases = [
        (AEAD_KEY, AEAD_NONCE, bytes([sealed[0] ^ 1]) + sealed[1:], AEAD_AAD),  # ciphertext
        (AEAD_KEY, AEAD_NONCE, sealed[:-1] + bytes([sealed[-1] ^ 0x80]), AEAD_AAD),  # tag
        (AEAD_KEY, AEAD_NONCE, sealed[:-1], AEAD_AAD),  # truncated
        (AEAD_KEY, AEAD_NONCE, sealed + b"\x00", AEAD_AAD),  # extended
        (AEAD_KEY, AEAD_NONCE, sealed, AEAD_AAD[:-1]),  # associated data shortened
        (AEAD_KEY, AEAD_NONCE, sealed, AEAD_AAD + b"\x00"),  # associated data extended
        (AEAD_KEY, AEAD_NONCE, sealed, b""),  # associated data dropped
        (AEAD_KEY, bytes(12), sealed, AEAD_AAD),  # another nonce
        (bytes(32), AEAD_NONCE, sealed, AEAD_AAD),  # another key
        (AEAD_KEY, AEAD_NONCE, b"", AEAD_AAD),  # nothing at all
        (AEAD_KEY, AEAD_NONCE, AEAD_TAG, AEAD_AAD),  # a tag and no text
    ]
    for key, nonce, ct, aad in cases:
        with pytest.raises(CryptoError):
            crypto.open_sealed(key, nonce, ct, aad)


@given(
    plaintext=st.binary(max_size=200),
    aad=st.binary(max_size=100),
    where=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
)
def test_aead_any_flipped_bit_is_refused(plaintext: bytes, aad: bytes, where: int, bit: int) -> None:
    key, nonce = bytes(range(32)), bytes(range(12))
    sealed = crypto.seal(key, nonce, plaintext, aad)
    assert crypto.open_sealed(key, nonce, sealed, aad) == plaintext
    blob = bytearray(sealed + aad)
    blob[where % len(blob)] ^= 1 << bit
    with pytest.raises(CryptoError):
        crypto.open_sealed(key, nonce, bytes(blob[: len(sealed)]), bytes(blob[len(sealed):]))


def test_crypto_error_is_the_single_error_type() -> None:
    """Callers catch one error: CryptoError, itself a PeersyncError (the CLI prints one sentence)."""
    assert issubclass(CryptoError, PeersyncError)
    with pytest.raises(CryptoError) as info:
        crypto.open_sealed(AEAD_KEY, AEAD_NONCE, AEAD_TAG, b"")
    assert info.value.sentence().endswith(".")


# --------------------------------------------------------------------------- #
# HKDF (RFC 5869)                                                             #
# --------------------------------------------------------------------------- #


def _hkdf_sha256(ikm: bytes, info: bytes, length: int, salt: bytes = b"") -> bytes:
    """An independent HKDF-SHA256 straight from RFC 5869 section 2, to check derive_key against."""
    prk = hmac.new(salt or b"\x00" * 32, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def test_reference_hkdf_matches_rfc5869_test_case_3() -> None:
    """RFC 5869 A.3 is the no-salt, no-info case: the very construction derive_key uses."""
    okm = _hkdf_sha256(b"\x0b" * 22, b"", 42)
    assert okm == bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


SECRET = bytes(range(32))


def test_derive_key_regression_values() -> None:
    """Pinned outputs: a change here makes every existing store unreadable (spec §4.2)."""
    assert crypto.derive_key(SECRET, "bundle", 0).hex() == (
        "b257a888dcea2716a9be00511f661a544dc6ee3acc6e439250a594884a8c6f07"
    )
    assert crypto.derive_key(SECRET, "bundle", 1).hex() == (
        "98a8c3d37ca21a0f6ccf59345ebfa5d3ab74ced91b598ee7f268b5abfa28c020"
    )
    assert crypto.derive_key(SECRET, "roster").hex() == (
        "8ee81212d7fbe3780ae75313e883d0ceea0af2cecb62599cea6710572b3ebb8e"
    )
    assert crypto.derive_key(SECRET, "bundle") == crypto.derive_key(SECRET, "bundle", 0)


@pytest.mark.parametrize(
    ("purpose", "epoch", "info"),
    [
        ("bundle", 0, b"peersync v1 bundle epoch 0"),
        ("bundle", 1, b"peersync v1 bundle epoch 1"),
        ("bundle", 4294967295, b"peersync v1 bundle epoch 4294967295"),
        ("roster", 0, b"peersync v1 roster epoch 0"),
    ],
)
def test_derive_key_is_hkdf_with_the_documented_info(purpose: str, epoch: int, info: bytes) -> None:
    assert crypto.derive_key(SECRET, purpose, epoch) == _hkdf_sha256(SECRET, info, 32)


def test_derive_key_pinned() -> None:
    assert crypto.derive_key(b"\x0b" * 32, "bundle", 0).hex() == (
        "cd086a25e0d3419dca1c75fdee49e90790ce10faf6c6a295105b85a24871065f"
    )
    assert crypto.derive_key(b"\x0b" * 32, "roster").hex() == (
        "4a62e9a8ab2b0d89b1b8137f6cdef05dde826d7e5f724f0fcf8e73e7672336cb"
    )


def test_store_key_helpers_use_their_purpose() -> None:
    from peersync.store import bundle_key, roster_key

    assert roster_key(SECRET) == crypto.derive_key(SECRET, "roster", 0)
    assert bundle_key(SECRET) == crypto.derive_key(SECRET, "bundle", 0)
    assert bundle_key(SECRET, 3) == crypto.derive_key(SECRET, "bundle", 3)


def test_purposes_and_epochs_give_distinct_keys() -> None:
    keys = [crypto.derive_key(SECRET, p, e) for p in ("bundle", "roster", "heartbeat") for e in range(5)]
    keys += [crypto.derive_key(bytes(32), "bundle", 0)]
    assert len(set(keys)) == len(keys)
    assert all(len(k) == 32 for k in keys)


# --------------------------------------------------------------------------- #
# HMAC                                                                        #
# --------------------------------------------------------------------------- #


def test_mac_is_hmac_sha256_rfc4231_case_2() -> None:
    """RFC 4231 test case 2 ("Jefe")."""
    tag = crypto.mac(b"Jefe", b"what do ya want for nothing?")
    assert tag.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    crypto.check_mac(b"Jefe", b"what do ya want for nothing?", tag)


def test_check_mac_rejects_tampering() -> None:
    key, data = crypto.derive_key(SECRET, "roster"), b'{"name":"anna"}'
    tag = crypto.mac(key, data)
    crypto.check_mac(key, data, tag)
    for k, d, t in [
        (key, data + b" ", tag),
        (key, data, bytes([tag[0] ^ 1]) + tag[1:]),
        (key, data, tag[:16]),  # a truncated tag is not a prefix match
        (key, data, b""),
        (crypto.derive_key(SECRET, "bundle"), data, tag),
    ]:
        with pytest.raises(CryptoError):
            crypto.check_mac(k, d, t)


def test_random_bytes() -> None:
    a, b = crypto.random_bytes(crypto.NONCE_BYTES), crypto.random_bytes(crypto.NONCE_BYTES)
    assert len(a) == 12 and a != b
