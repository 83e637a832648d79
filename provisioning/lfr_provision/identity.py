"""The unit's identity: key pairs for sealing and signing, and the broker's TLS client key and CSR.

Generated on the unit by `lfr-provision init`; private keys never leave it. The technician sends the
public halves (and the CSR) to the command centre, whose CA signs it (`lfr-provision ca sign`, pki.py).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


class ProvisionError(Exception):
    """A provisioning step cannot go on; the message names the file or option and what to do."""


def write_file(path: Path, data: bytes, mode: int, force: bool = False) -> None:
    """Create `path` with `mode` from the start (no window where a key is readable by others)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, mode)
    except FileExistsError as exc:
        raise ProvisionError(f"{path} already exists; pass --force to replace it") from exc
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def private_pem(key: X25519PrivateKey | Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: X25519PrivateKey | Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def tls_request(unit_id: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """A CSR with CN = unit id: the broker takes the CN as the MQTT username for its ACL."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unit_id)])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )


def read_command_centre_key(path: Path) -> bytes:
    """Check the command centre's key is an Ed25519 PEM public key; return the PEM."""
    try:
        data = path.read_bytes()
        key = serialization.load_pem_public_key(data)
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"--command-centre-key {path}: not a readable PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ProvisionError(f"--command-centre-key {path}: an Ed25519 public key is expected")
    return data
