"""Handset pairing authenticated by a short one-time code (protocol: docs/pairing.md).

The technician's `lfr-provision pair-handset` opens a `PairingSession` and shows its code; the officer
types the code into the handset (`lfr-handset pair --code`), whose `HandsetPairing` answers the unit's
offer. Both sides derive a key from the code and the unit's fresh nonce (HKDF-SHA256) and MAC the whole
transcript with it (HMAC-SHA256): both public keys, the unit id, the session id, the handset id and both
nonces. A handset without the code cannot produce the MAC; a message for another unit or session, with a
nonce already seen, after expiry or after the code was used is refused; 5 wrong MACs void the code. The
request's handset id must be the sender's, which the broker vouches for (its request topic is writable only
by the certificate whose CN is that id): a code never pairs a handset other than the one that sends it.

Everything here is pure (bytes in, bytes out, a clock passed in); the MQTT transport only carries the
messages on the pairing topics of `lfr_contracts.topics.Topics`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lfr_contracts.untrusted import IDENTIFIER_RULE, JsonRefused, excerpt, is_identifier, loads_json

VERSION = 1
CODE_DIGITS = 8
CODE_TTL_S = 300.0
MAX_ATTEMPTS = 5
MAX_MESSAGE_BYTES = 4096


class PairingError(Exception):
    """A pairing message was refused; the message says why (never whether the code was close)."""


def new_code() -> str:
    """A uniformly random 8-digit code, shown as 1234-5678."""
    digits = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    return f"{digits[:4]}-{digits[4:]}"


def normalise_code(code: str) -> str:
    digits = re.sub(r"[\s-]", "", code)
    if not re.fullmatch(rf"\d{{{CODE_DIGITS}}}", digits):
        raise PairingError(f"the pairing code must be {CODE_DIGITS} digits (e.g. 1234-5678)")
    return digits


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: Any, what: str, size: int) -> bytes:
    if not isinstance(text, str):
        raise PairingError(f"{what}: expected base64url text")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise PairingError(f"{what}: not base64url") from exc
    if len(data) != size:
        raise PairingError(f"{what}: expected {size} bytes, got {len(data)}")
    return data


def _raw(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _pem(key: X25519PublicKey | Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def pairing_key(code: str, unit_nonce: bytes, unit_id: str, session_id: str) -> bytes:
    """HKDF-SHA256 of the code, salted with the unit's fresh nonce, bound to unit and session."""
    info = f"lfr-pair v{VERSION}|{unit_id}|{session_id}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=unit_nonce, info=info).derive(normalise_code(code).encode())


def transcript(role: str, fields: dict[str, str]) -> bytes:
    """The bytes both MACs and signatures cover: role plus every field, in a fixed order."""
    order = (
        "unit_id", "session_id", "unit_nonce", "unit_x25519", "unit_ed25519",
        "handset_id", "handset_nonce", "handset_x25519", "handset_ed25519",
    )  # fmt: skip
    return "\n".join([f"lfr-pair v{VERSION} {role}", *(f"{k}={fields[k]}" for k in order)]).encode()


def _decode(message: bytes, kind: str) -> dict[str, Any]:
    try:
        data = loads_json(message, max_bytes=MAX_MESSAGE_BYTES)
    except JsonRefused as exc:
        raise PairingError(f"{kind}: not a valid message ({exc})") from None
    version = data.get("v") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("type") != kind or isinstance(version, bool) or version != VERSION:
        raise PairingError(f"{kind}: not a version {VERSION} {kind} message")
    return data


def loose_fields(message: bytes) -> dict[str, Any]:
    """A message's JSON object read loosely, to route or address a reply (never to trust): {} when it is
    not a JSON object within the size and depth limits."""
    try:
        data = loads_json(message, max_bytes=MAX_MESSAGE_BYTES)
    except JsonRefused:
        return {}
    return data if isinstance(data, dict) else {}


def _text(data: dict[str, Any], key: str, kind: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not is_identifier(value):
        raise PairingError(f"{kind}.{key}: missing or not {IDENTIFIER_RULE}")
    return value


@dataclass(frozen=True)
class PairedHandset:
    """What the unit keeps about a paired handset (handsets/<id>.json): public keys only."""

    handset_id: str
    x25519_public: X25519PublicKey  # alerts are sealed to it
    ed25519_public: Ed25519PublicKey  # the handset's decisions are verified with it
    paired_at: float
    unit_id: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "handset_id": self.handset_id,
                "unit_id": self.unit_id,
                "paired_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.paired_at)),
                "x25519_public": _pem(self.x25519_public),
                "ed25519_public": _pem(self.ed25519_public),
            },
            indent=2,
        )


@dataclass
class PairingSession:
    """The unit's side of one pairing: one code, one handset, a few minutes."""

    unit_id: str
    unit_x25519: X25519PublicKey
    unit_signer: Ed25519PrivateKey
    code: str = field(default_factory=new_code)
    session_id: str = field(default_factory=lambda: _b64(secrets.token_bytes(9)))
    unit_nonce: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    ttl_s: float = CODE_TTL_S
    now: Callable[[], float] = time.time
    attempts_left: int = MAX_ATTEMPTS
    used: bool = False
    seen_nonces: set[bytes] = field(default_factory=set)
    expires_at: float = 0.0

    def __post_init__(self) -> None:
        self.expires_at = self.now() + self.ttl_s

    def _fields(self) -> dict[str, str]:
        return {
            "unit_id": self.unit_id,
            "session_id": self.session_id,
            "unit_nonce": _b64(self.unit_nonce),
            "unit_x25519": _b64(_raw(self.unit_x25519)),
            "unit_ed25519": _b64(_raw(self.unit_signer.public_key())),
        }

    def offer(self) -> bytes:
        """The unit's public offer (not secret; the code never travels)."""
        return json.dumps({"type": "offer", "v": VERSION, **self._fields(), "expires_at": self.expires_at}).encode()

    def accept(self, message: bytes, *, sender: str) -> tuple[PairedHandset, bytes]:
        """Check a handset's request; return the handset to register and the confirm message to send.

        `sender` is the handset id the broker vouches for: the request topic's last level, which only the
        certificate with that CN may write. A request naming another handset is refused before any code is
        checked (it costs no try): a code pairs the handset that sends it, never one it names."""
        if not is_identifier(sender):
            raise PairingError(f"request: arrived on no handset's request topic ({excerpt(sender)})")
        data = _decode(message, "request")
        if _text(data, "unit_id", "request") != self.unit_id:
            raise PairingError("request: addressed to another unit")
        if _text(data, "session_id", "request") != self.session_id:
            raise PairingError("request: for another (older) pairing session")
        if self.used:
            raise PairingError("request: this code has already been used; start a new pairing")
        if self.attempts_left <= 0:
            raise PairingError("request: too many wrong codes; this code is void, start a new pairing")
        if self.now() > self.expires_at:
            raise PairingError("request: the code has expired; start a new pairing")
        handset_id = _text(data, "handset_id", "request")
        if handset_id != sender:
            raise PairingError(
                f"request: names handset {handset_id!r} but was sent with the certificate of {sender!r}; a handset "
                "pairs only as the CN of its own certificate"
            )
        handset_nonce = _unb64(data.get("handset_nonce"), "request.handset_nonce", 16)
        if handset_nonce in self.seen_nonces:
            raise PairingError("request: nonce already seen (a replayed message)")
        self.seen_nonces.add(handset_nonce)
        x_raw = _unb64(data.get("handset_x25519"), "request.handset_x25519", 32)
        e_raw = _unb64(data.get("handset_ed25519"), "request.handset_ed25519", 32)
        mac = _unb64(data.get("mac"), "request.mac", 32)
        signature = _unb64(data.get("sig"), "request.sig", 64)
        fields = {
            **self._fields(),
            "handset_id": handset_id,
            "handset_nonce": _b64(handset_nonce),
            "handset_x25519": _b64(x_raw),
            "handset_ed25519": _b64(e_raw),
        }
        key = pairing_key(self.code, self.unit_nonce, self.unit_id, self.session_id)
        expected = hmac.new(key, transcript("request", fields), hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            self.attempts_left -= 1
            left = self.attempts_left
            raise PairingError(
                "request: wrong pairing code" + ("; the code is now void" if left == 0 else f" ({left} tries left)")
            )
        handset_ed, handset_x = _public_keys(e_raw, x_raw, "request: the handset's")
        try:
            handset_ed.verify(signature, transcript("request", fields))
        except InvalidSignature as exc:
            raise PairingError("request: the handset's signature does not verify") from exc
        self.used = True
        handset = PairedHandset(handset_id, handset_x, handset_ed, self.now(), self.unit_id)
        confirm_mac = hmac.new(key, transcript("confirm", fields), hashlib.sha256).digest()
        confirm = {
            "type": "confirm",
            "v": VERSION,
            "unit_id": self.unit_id,
            "session_id": self.session_id,
            "handset_id": handset_id,
            "handset_nonce": fields["handset_nonce"],
            "mac": _b64(confirm_mac),
            "sig": _b64(self.unit_signer.sign(transcript("confirm", fields))),
        }
        return handset, json.dumps(confirm).encode()


def _public_keys(ed_raw: bytes, x_raw: bytes, whose: str) -> tuple[Ed25519PublicKey, X25519PublicKey]:
    try:
        return Ed25519PublicKey.from_public_bytes(ed_raw), X25519PublicKey.from_public_bytes(x_raw)
    except ValueError as exc:
        raise PairingError(f"{whose} public keys are not valid") from exc


@dataclass(frozen=True)
class PairedUnit:
    """What the handset keeps about the unit after pairing."""

    unit_id: str
    x25519_public: X25519PublicKey
    ed25519_public: Ed25519PublicKey


class HandsetPairing:
    """The handset's side: answer the unit's offer with the code, then check the unit's confirmation."""

    def __init__(self, handset_id: str, code: str, x25519: X25519PrivateKey, signer: Ed25519PrivateKey) -> None:
        if not is_identifier(handset_id):
            raise PairingError(f"handset id {excerpt(handset_id)}: use {IDENTIFIER_RULE}")
        self.handset_id = handset_id
        self.code = normalise_code(code)
        self._x25519 = x25519
        self._signer = signer
        self._fields: dict[str, str] | None = None
        self._key = b""

    def request(self, offer_message: bytes, now: float | None = None) -> bytes:
        offer = _decode(offer_message, "offer")
        unit_id = _text(offer, "unit_id", "offer")
        session_id = _text(offer, "session_id", "offer")
        unit_nonce = _unb64(offer.get("unit_nonce"), "offer.unit_nonce", 16)
        _unb64(offer.get("unit_x25519"), "offer.unit_x25519", 32)
        _unb64(offer.get("unit_ed25519"), "offer.unit_ed25519", 32)
        expires = offer.get("expires_at")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise PairingError("offer.expires_at: missing or not a number")
        if (time.time() if now is None else now) > expires:
            raise PairingError("offer: expired; ask the technician for a new code")
        self._fields = {
            "unit_id": unit_id,
            "session_id": session_id,
            "unit_nonce": offer["unit_nonce"],
            "unit_x25519": offer["unit_x25519"],
            "unit_ed25519": offer["unit_ed25519"],
            "handset_id": self.handset_id,
            "handset_nonce": _b64(secrets.token_bytes(16)),
            "handset_x25519": _b64(_raw(self._x25519.public_key())),
            "handset_ed25519": _b64(_raw(self._signer.public_key())),
        }
        self._key = pairing_key(self.code, unit_nonce, unit_id, session_id)
        body = transcript("request", self._fields)
        message = {
            "type": "request",
            "v": VERSION,
            **{k: self._fields[k] for k in ("unit_id", "session_id", "handset_id", "handset_nonce")},
            "handset_x25519": self._fields["handset_x25519"],
            "handset_ed25519": self._fields["handset_ed25519"],
            "mac": _b64(hmac.new(self._key, body, hashlib.sha256).digest()),
            "sig": _b64(self._signer.sign(body)),
        }
        return json.dumps(message).encode()

    def confirm(self, message: bytes) -> PairedUnit:
        """Check the unit proved it knows the code and holds its signing key; return the unit's keys."""
        if self._fields is None:
            raise PairingError("confirm: no request was sent yet")
        data = _decode(message, "confirm")
        for key in ("unit_id", "session_id", "handset_id", "handset_nonce"):
            if data.get(key) != self._fields[key]:
                raise PairingError(f"confirm.{key}: does not match this handset's request")
        mac = _unb64(data.get("mac"), "confirm.mac", 32)
        body = transcript("confirm", self._fields)
        if not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256).digest()):
            raise PairingError("confirm: the unit did not prove it knows the code")
        unit_ed, unit_x = _public_keys(
            _unb64(self._fields["unit_ed25519"], "unit_ed25519", 32),
            _unb64(self._fields["unit_x25519"], "unit_x25519", 32),
            "confirm: the unit's",
        )
        try:
            unit_ed.verify(_unb64(data.get("sig"), "confirm.sig", 64), body)
        except InvalidSignature as exc:
            raise PairingError("confirm: the unit's signature does not verify") from exc
        return PairedUnit(self._fields["unit_id"], unit_x, unit_ed)
