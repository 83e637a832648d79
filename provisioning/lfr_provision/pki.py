"""The certificate authority behind the broker's mutual TLS: one CA signs the broker and every client.

The broker takes a client certificate's CN as its MQTT username and as its client id
(`use_identity_as_username`, `use_username_as_clientid`), so the CN is the identity the ACL speaks of:
a unit's id, a handset's id, `command-centre`, `bridge-<unit>`, and `<unit>.pairing` for the pairing helper
that runs beside the unit's daemon. One identity holds one connection at a time.

A new CA is EC P-256; an existing CA may be EC (P-256/384/521) or RSA (2048 bits or more). Keys are PEM,
private keys unencrypted PKCS#8 created 0600. `lfr-provision ca ...` (cli.py) drives this module.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lfr_contracts import layout
from lfr_provision.identity import PRIVATE_MODE, PUBLIC_MODE, ProvisionError, private_pem, write_file

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
BROKER_CERT = "broker.crt"  # the names `lfr-provision broker config` expects in its folder
BROKER_KEY = "broker.key"
CA_DAYS = 3650
CERT_DAYS = 825
MIN_RSA_BITS = 2048
Role = Literal["broker", "handset", "command-centre", "bridge"]
ROLES: tuple[Role, ...] = ("broker", "handset", "command-centre", "bridge")
CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: CaKey
    cert_file: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _spki(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def create_ca(directory: Path, name: str, days: int = CA_DAYS, force: bool = False) -> CertificateAuthority:
    """A new self-signed EC P-256 CA in directory/ca.crt and directory/ca.key (0600)."""
    if days <= 0:
        raise ProvisionError(f"--days {days}: must be 1 or more")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_file(directory / CA_KEY, private_pem(key), PRIVATE_MODE, force)
    write_file(directory / CA_CERT, certificate_pem(cert), PUBLIC_MODE, True)
    return CertificateAuthority(cert, key, directory / CA_CERT)


def load_ca(cert_path: Path, key_path: Path, what: tuple[str, str] = ("--ca-cert", "--ca-key")) -> CertificateAuthority:
    """An existing CA: an EC (P-256/384/521) or RSA (>= 2048 bits) key, unencrypted PEM, and its certificate."""
    cert_opt, key_opt = what
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"{cert_opt} {cert_path}: not a readable PEM certificate ({exc})") from exc
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except TypeError as exc:
        raise ProvisionError(
            f"{key_opt} {key_path}: the key is encrypted; give an unencrypted copy "
            f"(openssl pkey -in {key_path} -out ca-plain.key) and keep it offline"
        ) from exc
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"{key_opt} {key_path}: not a readable PEM private key ({exc})") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ProvisionError(f"{key_opt} {key_path}: an RSA key of {key.key_size} bits; {MIN_RSA_BITS} or more")
    elif not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisionError(
            f"{key_opt} {key_path}: a {type(key).__name__.lstrip('_')}; the CA key must be EC (P-256, P-384, "
            f"P-521) or RSA ({MIN_RSA_BITS} bits or more)"
        )
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) or _spki(public) != _spki(key.public_key()):
        raise ProvisionError(f"{key_opt} {key_path} does not belong to {cert_opt} {cert_path}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ProvisionError(f"{cert_opt} {cert_path} is not a CA certificate (no basicConstraints CA:TRUE)")
    if cert.not_valid_after_utc <= _now():
        raise ProvisionError(f"{cert_opt} {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return CertificateAuthority(cert, key, cert_path)


def open_ca(directory: Path) -> CertificateAuthority:
    """The CA kept in a folder by `ca create` or `ca import`."""
    cert, key = directory / CA_CERT, directory / CA_KEY
    if not cert.is_file() or not key.is_file():
        raise ProvisionError(
            f"--ca {directory}: no {CA_CERT} and {CA_KEY} there; make a CA with `lfr-provision ca create --ca "
            f"{directory}` or bring one with `lfr-provision ca import --ca {directory} --cert CA.crt --key CA.key`"
        )
    return load_ca(cert, key, (f"--ca {directory}:", f"--ca {directory}:"))


def import_ca(directory: Path, cert_path: Path, key_path: Path, force: bool = False) -> CertificateAuthority:
    """Check an existing CA (EC or RSA) and copy it into the CA folder."""
    ca = load_ca(cert_path, key_path, ("--cert", "--key"))
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file(directory / CA_KEY, key_path.read_bytes(), PRIVATE_MODE, force)
    write_file(directory / CA_CERT, certificate_pem(ca.cert), PUBLIC_MODE, True)
    return CertificateAuthority(ca.cert, ca.key, directory / CA_CERT)


def issue_certificate(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    common_name: str,
    *,
    server_names: Sequence[str] = (),
    days: int = CERT_DAYS,
) -> x509.Certificate:
    """A leaf certificate: a client one (CN = its broker identity), or with server_names a server one."""
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if server_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(server_names)), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def _alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        if not _DNS_NAME.match(name):
            raise ProvisionError(f"--name {name!r}: not a host name or IP address the clients connect to")
        out.append(x509.DNSName(name))
    return out


def check_client_name(role: str, name: str) -> None:
    if not _CLIENT_NAME.match(name):
        raise ProvisionError(f"--name {name!r}: a {role} identity is 1-64 letters, digits, '-' or '_'")
    if role == "command-centre" and not name.startswith("command-centre"):
        raise ProvisionError(f"--name {name!r}: command-centre identities start with 'command-centre'")
    if role == "bridge" and not name.startswith("bridge-"):
        raise ProvisionError(f"--name {name!r}: a bridge identity is bridge-<unit id>, e.g. bridge-van-07")


def issue_identity(
    ca: CertificateAuthority, role: Role, names: Sequence[str], out: Path, force: bool = False
) -> list[Path]:
    """A new key pair and its certificate in `out` (broker: broker.key/.crt with every name as a subject
    alternative name; clients: NAME.key/.crt), and the CA certificate beside them."""
    if role == "broker":
        if not names:
            raise ProvisionError("--role broker needs --name HOST (each name or address clients connect to)")
        stem, common_name, server_names = "broker", names[0], list(names)
    else:
        if len(names) != 1:
            raise ProvisionError(f"--role {role} takes exactly one --name (the certificate's CN)")
        check_client_name(role, names[0])
        stem, common_name, server_names = names[0], names[0], []
    out.mkdir(parents=True, exist_ok=True, mode=0o750)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = issue_certificate(ca, key.public_key(), common_name, server_names=server_names)
    key_file, cert_file = out / f"{stem}.key", out / f"{stem}.crt"
    write_file(key_file, private_pem(key), PRIVATE_MODE, force)
    write_file(cert_file, certificate_pem(cert), PUBLIC_MODE, True)
    ca_copy = _copy_ca(ca, out)
    return [key_file, cert_file, ca_copy]


def _copy_ca(ca: CertificateAuthority, out: Path) -> Path:
    target = out / CA_CERT
    if target.resolve() != ca.cert_file.resolve():
        write_file(target, certificate_pem(ca.cert), PUBLIC_MODE, True)
    return target


def sign_unit_request(ca: CertificateAuthority, csr_path: Path, out: Path) -> list[Path]:
    """A unit's request (from `lfr-provision init`): its certificate (CN = unit id), the pairing helper's
    (CN = <unit>.pairing, the same key) and the CA certificate, written into `out`."""
    try:
        csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"--csr {csr_path}: not a readable PEM certificate request ({exc})") from exc
    if not csr.is_signature_valid:
        raise ProvisionError(f"--csr {csr_path}: the request's signature does not verify (damaged in transit?)")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    unit_id = str(names[0].value) if names else ""
    if not _CLIENT_NAME.match(unit_id):
        raise ProvisionError(f"--csr {csr_path}: CN {unit_id!r} is not a unit id (letters, digits, '-', '_')")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ProvisionError(f"--csr {csr_path}: a {type(public).__name__} key; units use EC keys")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, common_name in (
        (layout.TLS_CERT, unit_id),
        (layout.TLS_PAIRING_CERT, layout.pairing_identity(unit_id)),
    ):
        write_file(out / file_name, certificate_pem(issue_certificate(ca, public, common_name)), PUBLIC_MODE, True)
        written.append(out / file_name)
    return [*written, _copy_ca(ca, out)]


def certificate_cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""
