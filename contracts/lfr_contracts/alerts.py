"""Wire formats between the unit and paired handsets: sealed, signed alerts and signed decisions.

Alert (unit → handsets, `.../alerts`, QoS 1):
    b"LFRA" | u8 version (1) | Ed25519 signature by the unit (64) | sealed envelope
The envelope (crypto.seal, one wrapped key per paired handset, aad = b"lfr-alert|<unit id>") holds the
UTF-8 JSON of `Alert`, with the two pictures base64-encoded JPEGs. The signature covers the envelope, so
a handset knows the alert came from its unit; only paired handsets can open it.

Decision (handset → unit, `.../decisions`, QoS 1): UTF-8 JSON
    {"v": 1, "alert_id", "unit", "handset", "decision", "time", "sig"}
where `sig` is the handset's Ed25519 signature (hex) over the canonical JSON of the other fields. Both
sides recognise duplicates (QoS 1 redelivery) by alert id.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from lfr_contracts import crypto

ALERT_MAGIC = b"LFRA"
ALERT_VERSION = 1
MAX_ALERT_BYTES = 4 * 1024 * 1024
MAX_DECISION_BYTES = 4096
_SIG_BYTES = 64


class DecisionKind(StrEnum):
    """What an officer decided about an alert: declared once, for the handset, the unit and the audit."""

    ENGAGE = "engage"
    NO_ACTION = "no_action"
    FALSE_ALERT = "false_alert"


DECISIONS = tuple(kind.value for kind in DecisionKind)


class ProtocolError(ValueError):
    """A message is malformed, unsigned, for someone else, or tampered with; the message says which."""


@dataclass(frozen=True)
class Alert:
    alert_id: str
    unit: str
    camera: str
    time: float  # epoch seconds of the frame in which the decision was made
    score: float
    threshold: float
    subject_id: str
    category: str
    reference: str  # the command centre's free-text reference for the subject
    live_jpeg: bytes
    watchlist_jpeg: bytes


@dataclass(frozen=True)
class Decision:
    alert_id: str
    unit: str
    handset: str
    decision: DecisionKind
    time: float


def _aad(unit: str) -> bytes:
    return b"lfr-alert|" + unit.encode()


def encode_alert(alert: Alert, unit_key: Ed25519PrivateKey, handset_keys: list[X25519PublicKey]) -> bytes:
    body = asdict(alert)
    body["live_jpeg"] = base64.b64encode(alert.live_jpeg).decode()
    body["watchlist_jpeg"] = base64.b64encode(alert.watchlist_jpeg).decode()
    plaintext = json.dumps(body, separators=(",", ":")).encode()
    envelope = crypto.seal(plaintext, handset_keys, _aad(alert.unit), purpose="lfr-edge/alert")
    return ALERT_MAGIC + bytes([ALERT_VERSION]) + crypto.sign(unit_key, envelope) + envelope


def decode_alert(payload: bytes, unit: str, unit_key: Ed25519PublicKey, handset_key: X25519PrivateKey) -> Alert:
    """Verify the unit's signature, open the envelope with this handset's key, check the fields."""
    if len(payload) > MAX_ALERT_BYTES:
        raise ProtocolError(f"alert of {len(payload)} bytes is over the {MAX_ALERT_BYTES}-byte limit")
    header = len(ALERT_MAGIC) + 1
    if len(payload) < header + _SIG_BYTES or payload[:4] != ALERT_MAGIC:
        raise ProtocolError("not an lfr-edge alert (bad magic or truncated)")
    if payload[4] != ALERT_VERSION:
        raise ProtocolError(f"alert format version {payload[4]} is not supported (expected {ALERT_VERSION})")
    signature, envelope = payload[header : header + _SIG_BYTES], payload[header + _SIG_BYTES :]
    try:
        crypto.verify(unit_key, signature, envelope)
        plaintext = crypto.open_sealed(envelope, handset_key, _aad(unit), purpose="lfr-edge/alert")
    except crypto.CryptoError as exc:
        raise ProtocolError(f"alert refused: {exc}") from exc
    try:
        body = json.loads(bytes(plaintext))
        alert = Alert(
            alert_id=_str(body, "alert_id"),
            unit=_str(body, "unit"),
            camera=_str(body, "camera"),
            time=_num(body, "time"),
            score=_num(body, "score"),
            threshold=_num(body, "threshold"),
            subject_id=_str(body, "subject_id"),
            category=_str(body, "category"),
            reference=_str(body, "reference"),
            live_jpeg=base64.b64decode(_str(body, "live_jpeg"), validate=True),
            watchlist_jpeg=base64.b64decode(_str(body, "watchlist_jpeg"), validate=True),
        )
    except (UnicodeDecodeError, json.JSONDecodeError, binascii.Error, TypeError) as exc:
        raise ProtocolError(f"alert body is not valid: {exc}") from exc
    finally:
        plaintext[:] = bytes(len(plaintext))
    if alert.unit != unit:
        raise ProtocolError(f"alert names unit {alert.unit!r}, expected {unit!r}")
    return alert


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def encode_decision(decision: Decision, handset_key: Ed25519PrivateKey) -> bytes:
    if decision.decision not in DECISIONS:
        raise ProtocolError(f"decision {decision.decision!r} is not one of {', '.join(DECISIONS)}")
    fields = {"v": 1, **asdict(decision)}
    return json.dumps({**fields, "sig": crypto.sign(handset_key, _canonical(fields)).hex()}).encode()


def parse_decision(payload: bytes) -> tuple[Decision, bytes, bytes]:
    """(decision, signature, signed bytes): the structure only; the caller verifies against the handset."""
    if len(payload) > MAX_DECISION_BYTES:
        raise ProtocolError(f"decision of {len(payload)} bytes is over the {MAX_DECISION_BYTES}-byte limit")
    try:
        body = json.loads(payload)
        if not isinstance(body, dict):
            raise ProtocolError("decision is not a JSON object")
        signature = bytes.fromhex(_str(body, "sig"))
        fields = {k: v for k, v in body.items() if k != "sig"}
        if fields.get("v") != 1:
            raise ProtocolError(f"decision version {fields.get('v')!r} is not supported")
        decision = Decision(
            alert_id=_str(fields, "alert_id"),
            unit=_str(fields, "unit"),
            handset=_str(fields, "handset"),
            decision=_decision_kind(_str(fields, "decision")),
            time=_num(fields, "time"),
        )
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(f"decision is not valid JSON: {exc}") from exc
    if set(fields) != {"v", "alert_id", "unit", "handset", "decision", "time"}:
        raise ProtocolError(f"decision has unexpected fields: {sorted(fields)}")
    return decision, signature, _canonical(fields)


def _decision_kind(value: str) -> DecisionKind:
    if value not in DECISIONS:
        raise ProtocolError(f"decision {value!r} is not one of {', '.join(DECISIONS)}")
    return DecisionKind(value)


def _str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or len(value) > 2_000_000:
        raise ProtocolError(f"field {key!r} must be a string")
    return value


def _num(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(f"field {key!r} must be a finite number")
    return float(value)
