"""All cryptography peersync uses; the only module that imports the crypto library.

- Peer identity: Ed25519 key pairs (sign / verify).
- Store secret: 32 random bytes shared by the store's peers through the invite
  code. HKDF-SHA256 derives from it one key per purpose and key epoch, so a
  key never serves two purposes.
- Bundles: ChaCha20-Poly1305 with a random 96-bit nonce; the bundle header is
  the associated data.
- Roster records (peer.json): HMAC-SHA256 under the roster key.
- Key rotation: each peer also has an X25519 key; a new store secret is sealed
  to each remaining member (X25519 agreement, HKDF-SHA256, ChaCha20-Poly1305).

Every failed check raises the one error :class:`CryptoError`.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
# The raw key methods, not ``serialization``: importing that package (its SSH and PEM formats, and
# every cipher) costs every peersync process about 12 ms of start-up.
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import CryptoError

SECRET_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


# -- identity -----------------------------------------------------------------


class SigningKey:
    """An Ed25519 private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> SigningKey:
        if len(raw) != 32:
            raise CryptoError("the identity key file is damaged")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def to_bytes(self) -> bytes:
        return self._key.private_bytes_raw()

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def verify(public_key: bytes, signature: bytes, data: bytes) -> None:
    """Raise CryptoError unless ``signature`` is ``public_key``'s over ``data``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError) as exc:
        raise CryptoError("signature does not match its author's key") from exc


# -- store keys ---------------------------------------------------------------


def derive_key(secret: bytes, purpose: str, epoch: int = 0) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"peersync v1 {purpose} epoch {epoch}".encode(),
    ).derive(secret)


def seal(key: bytes, nonce: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext``; ``associated`` is authenticated too."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, ciphertext, associated)
    except InvalidTag as exc:
        raise CryptoError("authenticated decryption failed") from exc


def mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def check_mac(key: bytes, data: bytes, tag: bytes) -> None:
    if not hmac.compare_digest(mac(key, data), tag):
        raise CryptoError("record is not authenticated by the store secret")


class BoxKey:
    """An X25519 private key: receives store secrets sealed to this peer."""

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> BoxKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> BoxKey:
        if len(raw) != 32:
            raise CryptoError("the key-exchange key file is damaged")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def to_bytes(self) -> bytes:
        return self._key.private_bytes_raw()

    def public_bytes(self) -> bytes:
        return self._key.public_key().public_bytes_raw()

    def _shared(self, other_public: bytes, info: bytes) -> bytes:
        try:
            secret = self._key.exchange(X25519PublicKey.from_public_bytes(other_public))
        except ValueError as exc:
            raise CryptoError("a peer's key-exchange key is not valid") from exc
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"peersync v1 box " + info).derive(secret)

    def seal_to(self, recipient_public: bytes, plaintext: bytes, info: bytes) -> bytes:
        nonce = random_bytes(NONCE_BYTES)
        return nonce + ChaCha20Poly1305(self._shared(recipient_public, info)).encrypt(nonce, plaintext, info)

    def open_from(self, sender_public: bytes, sealed: bytes, info: bytes) -> bytes:
        try:
            key = self._shared(sender_public, info)
            return ChaCha20Poly1305(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], info)
        except (InvalidTag, ValueError) as exc:
            raise CryptoError("a sealed store key did not open") from exc


def fingerprint(public_key: bytes) -> bytes:
    """The 16 bytes a peer id is made of."""
    return hashlib.sha256(public_key).digest()[:16]
