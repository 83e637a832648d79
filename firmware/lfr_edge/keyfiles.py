"""Key files of a unit, a handset or the command centre: PEM on disk, private keys created 0600.

The key formats are the contracts' (`lfr_contracts.crypto`); this module only reads and writes them.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from lfr_contracts.crypto import KeyFileError, PrivateKey, PublicKey


def save_private_key(path: Path, key: PrivateKey) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, created 0600 and never over an existing file."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(f"{path}: already exists; refusing to overwrite a private key") from exc
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot create the private key file ({exc.strerror})") from exc
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def save_public_key(path: Path, key: PublicKey) -> None:
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        path.write_bytes(pem)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write the public key file ({exc.strerror})") from exc


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc.strerror})") from exc


def _wrong_kind(path: Path, key: object, what: str) -> KeyFileError:
    return KeyFileError(f"{path}: expected {what}, found a {type(key).__name__.lstrip('_')}")


def _load_private(path: Path) -> object:
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from exc


def _load_public(path: Path) -> object:
    try:
        return serialization.load_pem_public_key(_read(path))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM public key ({exc})") from exc


def load_ed25519_private(path: Path) -> Ed25519PrivateKey:
    key = _load_private(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise _wrong_kind(path, key, "an Ed25519 private key (signing)")
    return key


def load_ed25519_public(path: Path) -> Ed25519PublicKey:
    key = _load_public(path)
    if not isinstance(key, Ed25519PublicKey):
        raise _wrong_kind(path, key, "an Ed25519 public key (signature check)")
    return key


def load_x25519_private(path: Path) -> X25519PrivateKey:
    key = _load_private(path)
    if not isinstance(key, X25519PrivateKey):
        raise _wrong_kind(path, key, "an X25519 private key (sealing)")
    return key


def load_x25519_public(path: Path) -> X25519PublicKey:
    key = _load_public(path)
    if not isinstance(key, X25519PublicKey):
        raise _wrong_kind(path, key, "an X25519 public key (sealing)")
    return key
