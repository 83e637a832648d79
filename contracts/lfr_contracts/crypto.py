"""Sealing and signing: the primitives shared by watchlist bundles and handset alerts.

Sealed envelope (multi-recipient hybrid encryption):

    b"LFRS" | u8 format (1) | u16 recipient count |
    per recipient: key id (8 bytes, sha256 of its raw X25519 public key, truncated) |
                   ephemeral X25519 public key (32) | wrapped content key (32 + 16 tag) |
    body nonce (12) | AES-256-GCM(content key, body, aad = caller aad + everything before the body)

Each wrapped key is AES-256-GCM under a key-encryption key from HKDF-SHA256 over the X25519 shared
secret, with `info` binding the purpose label, the ephemeral public key and the recipient's public key,
so a wrapped key cannot be moved to another purpose or another recipient. The key-encryption key is used
once (fresh ephemeral key), so its GCM nonce can be fixed.
"""

from __future__ import annotations

import hashlib
import os
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SEAL_MAGIC = b"LFRS"
SEAL_FORMAT = 1
KEY_ID_BYTES = 8
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAPPED_BYTES = 32 + _TAG_BYTES
_RECIPIENT_BYTES = KEY_ID_BYTES + 32 + _WRAPPED_BYTES
_PREFIX = struct.Struct(">4sBH")
_ZERO_NONCE = bytes(_NONCE_BYTES)
DEFAULT_PURPOSE = "lfr-edge/seal"


class CryptoError(Exception):
    """Base of every error raised here; the message says what was wrong."""


class MalformedEnvelope(CryptoError):
    """The bytes are not a sealed envelope of a known format (truncated or garbled)."""


class NotForThisKey(CryptoError):
    """The envelope was not sealed to the given private key."""


class Tampered(CryptoError):
    """Authentication failed: the envelope, its associated data or the purpose do not match."""


class BadSignature(CryptoError):
    """An Ed25519 signature does not verify against the pinned public key."""


class KeyFileError(CryptoError):
    """A key file is missing, unreadable, of the wrong kind, or would overwrite an existing file."""


def raw_public_bytes(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    """A short stable name for a public key: the first 8 bytes of sha256 of its raw bytes."""
    return hashlib.sha256(raw_public_bytes(key)).digest()[:KEY_ID_BYTES]


def _kek(shared: bytes, purpose: str, ephemeral_pub: bytes, recipient_pub: bytes) -> bytes:
    info = b"lfr-edge seal v1|" + purpose.encode() + b"|" + ephemeral_pub + recipient_pub
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def seal(
    plaintext: bytes | bytearray | memoryview,
    recipient_public_keys: list[X25519PublicKey],
    aad: bytes,
    *,
    purpose: str = DEFAULT_PURPOSE,
) -> bytes:
    """Encrypt `plaintext` once for several recipients; each can open it with its own private key."""
    if not recipient_public_keys:
        raise CryptoError("seal: at least one recipient public key is needed")
    if len(recipient_public_keys) > 0xFFFF:
        raise CryptoError("seal: too many recipients")
    content_key = bytearray(AESGCM.generate_key(bit_length=256))
    try:
        parts = [_PREFIX.pack(SEAL_MAGIC, SEAL_FORMAT, len(recipient_public_keys))]
        for recipient in recipient_public_keys:
            ephemeral = X25519PrivateKey.generate()
            ephemeral_pub = raw_public_bytes(ephemeral.public_key())
            recipient_pub = raw_public_bytes(recipient)
            kek = _kek(ephemeral.exchange(recipient), purpose, ephemeral_pub, recipient_pub)
            wrapped = AESGCM(kek).encrypt(_ZERO_NONCE, bytes(content_key), None)
            parts.append(key_id(recipient) + ephemeral_pub + wrapped)
        nonce = os.urandom(_NONCE_BYTES)
        parts.append(nonce)
        prefix = b"".join(parts)
        body = AESGCM(bytes(content_key)).encrypt(nonce, bytes(plaintext), aad + prefix)
        return prefix + body
    finally:
        content_key[:] = bytes(len(content_key))


def envelope_key_ids(envelope: bytes | memoryview) -> list[bytes]:
    """The key ids an envelope was sealed to (no key needed)."""
    count, _ = _parse_prefix(envelope)
    start = _PREFIX.size
    return [
        bytes(envelope[start + i * _RECIPIENT_BYTES : start + i * _RECIPIENT_BYTES + KEY_ID_BYTES])
        for i in range(count)
    ]


def _parse_prefix(envelope: bytes | memoryview) -> tuple[int, int]:
    if len(envelope) < _PREFIX.size:
        raise MalformedEnvelope(f"sealed envelope is truncated ({len(envelope)} bytes)")
    magic, fmt, count = _PREFIX.unpack_from(envelope)
    if magic != SEAL_MAGIC:
        raise MalformedEnvelope("not a sealed envelope (bad magic)")
    if fmt != SEAL_FORMAT:
        raise MalformedEnvelope(f"sealed envelope format {fmt} is not supported (expected {SEAL_FORMAT})")
    body_start = _PREFIX.size + count * _RECIPIENT_BYTES + _NONCE_BYTES
    if count == 0 or len(envelope) < body_start + _TAG_BYTES:
        raise MalformedEnvelope(f"sealed envelope is truncated ({len(envelope)} bytes, {count} recipients)")
    return count, body_start


def open_sealed(
    envelope: bytes | memoryview, private_key: X25519PrivateKey, aad: bytes, *, purpose: str = DEFAULT_PURPOSE
) -> bytearray:
    """Decrypt an envelope sealed to `private_key`. Returns a bytearray so the caller can zero it."""
    count, body_start = _parse_prefix(envelope)
    own_pub = raw_public_bytes(private_key.public_key())
    own_id = key_id(private_key.public_key())
    for i in range(count):
        at = _PREFIX.size + i * _RECIPIENT_BYTES
        if bytes(envelope[at : at + KEY_ID_BYTES]) != own_id:
            continue
        ephemeral_pub = bytes(envelope[at + KEY_ID_BYTES : at + KEY_ID_BYTES + 32])
        wrapped = bytes(envelope[at + KEY_ID_BYTES + 32 : at + _RECIPIENT_BYTES])
        try:
            shared = private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_pub))
            kek = _kek(shared, purpose, ephemeral_pub, own_pub)
            content_key = AESGCM(kek).decrypt(_ZERO_NONCE, wrapped, None)
        except (InvalidTag, ValueError) as exc:
            raise Tampered("the wrapped content key does not authenticate (tampered or wrong purpose)") from exc
        nonce = bytes(envelope[body_start - _NONCE_BYTES : body_start])
        ciphertext = memoryview(envelope)[body_start:]
        out = bytearray(len(ciphertext) - _TAG_BYTES)
        try:
            AESGCM(content_key).decrypt_into(nonce, ciphertext, aad + bytes(envelope[:body_start]), out)
        except InvalidTag as exc:
            out[:] = bytes(len(out))
            raise Tampered("the sealed body does not authenticate (tampered, truncated or other aad)") from exc
        return out
    raise NotForThisKey(f"not sealed to this key (key id {own_id.hex()}; sealed to {count} other key(s))")


# Signatures -----------------------------------------------------------------------------------------


def sign(private_key: Ed25519PrivateKey, data: bytes) -> bytes:
    return private_key.sign(data)


def verify(public_key: Ed25519PublicKey, signature: bytes, data: bytes) -> None:
    """Raise BadSignature unless `signature` is `public_key`'s signature over `data`."""
    try:
        public_key.verify(signature, data)
    except InvalidSignature as exc:
        raise BadSignature(f"signature does not verify against key {key_id(public_key).hex()}") from exc


PrivateKey = Ed25519PrivateKey | X25519PrivateKey
PublicKey = Ed25519PublicKey | X25519PublicKey
