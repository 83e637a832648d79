"""Wire formats between the unit and paired handsets: sealed, signed alerts and signed decisions.

Alert (unit → handsets, `.../alerts`, QoS 1):
    b"LFRA" | u8 version (1) | Ed25519 signature by the unit (64) | sealed envelope
The envelope (crypto.seal, one wrapped key per paired handset, aad = b"lfr-alert|<unit id>") holds the
UTF-8 JSON of `Alert`, with the pictures base64-encoded JPEGs: the live face, the watchlist photo and, for a
match only, the context picture (head and shoulders around the face in the frame of the match, at most
`MAX_CONTEXT_PX` pixels a side and `MAX_CONTEXT_BYTES`; an empty string when the unit has none). The
signature covers the envelope, so a handset knows the alert came from its unit; only paired handsets can
open it. `rate` (optional; absent or null from a unit without a calibration table, or from before it existed)
is what the unit's calibration table says of the score: the false-accept rate per comparison at it and the
list's size, for the handset's band (lfr_contracts.calibration.alert_band).

Decision (handset → unit, on its own `.../decisions/from/<handset>`, QoS 1): UTF-8 JSON
    {"v": 1, "alert_id", "unit", "handset", "decision", "time", "sig"}
where `sig` is the handset's Ed25519 signature (hex) over the canonical JSON of the other fields. Both
sides recognise duplicates (QoS 1 redelivery) by alert id.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from lfr_contracts import crypto
from lfr_contracts.calibration import CalibrationError, ScoreRate
from lfr_contracts.untrusted import IDENTIFIER_RULE, JsonRefused, excerpt, is_identifier, loads_json

ALERT_MAGIC = b"LFRA"
ALERT_VERSION = 1
MAX_ALERT_BYTES = 4 * 1024 * 1024
MAX_DECISION_BYTES = 4096
MAX_CONTEXT_PX = 320  # the context picture's longest side
MAX_CONTEXT_BYTES = 96 * 1024  # a 320-pixel JPEG is ~ 10-30 KB; anything larger is not one a unit makes
MAX_EPOCH = 253_402_300_799.0  # the end of year 9999: alert and decision times are epoch seconds before it
_SIG_BYTES = 64
_MAX_TEXT = 256
_MAX_REFERENCE = 2048
_RATE_FIELDS = frozenset({"false_accept_rate", "impostor_pairs", "subjects", "comparisons"})
_DECISION_FIELDS = frozenset({"v", "alert_id", "unit", "handset", "decision", "time"})


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
    context_jpeg: bytes = b""  # head and shoulders in the frame of the match; empty when the unit has none
    rate: ScoreRate | None = None  # the calibration table's reading of the score; None: the unit has no table


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
    if len(alert.context_jpeg) > MAX_CONTEXT_BYTES:
        raise ProtocolError(f"context picture of {len(alert.context_jpeg)} bytes is over {MAX_CONTEXT_BYTES}")
    if alert.rate is not None:
        _check_rate(alert.rate)
    body = asdict(alert)
    body["live_jpeg"] = base64.b64encode(alert.live_jpeg).decode()
    body["watchlist_jpeg"] = base64.b64encode(alert.watchlist_jpeg).decode()
    body["context_jpeg"] = base64.b64encode(alert.context_jpeg).decode()
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
        body = loads_json(plaintext, max_bytes=MAX_ALERT_BYTES)
        if not isinstance(body, dict):
            raise ProtocolError("alert body is not a JSON object")
        alert = Alert(
            alert_id=_id(body, "alert_id"),
            unit=_id(body, "unit"),
            camera=_id(body, "camera"),
            time=_num(body, "time", 0.0, MAX_EPOCH),
            score=_num(body, "score", -1.0, 1.0),
            threshold=_num(body, "threshold", -1.0, 1.0),
            subject_id=_str(body, "subject_id", _MAX_TEXT),
            category=_str(body, "category", _MAX_TEXT),
            reference=_str(body, "reference", _MAX_REFERENCE),
            live_jpeg=_picture(body, "live_jpeg"),
            watchlist_jpeg=_picture(body, "watchlist_jpeg"),
            context_jpeg=_context(body),
            rate=_rate(body),
        )
    except JsonRefused as exc:
        raise ProtocolError(f"alert body is not valid JSON: {exc}") from None
    finally:
        plaintext[:] = bytes(len(plaintext))
    if alert.unit != unit:
        raise ProtocolError(f"alert names unit {excerpt(alert.unit)}, expected {unit!r}")
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
    try:
        body = loads_json(payload, max_bytes=MAX_DECISION_BYTES)
    except JsonRefused as exc:
        raise ProtocolError(f"decision is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError("decision is not a JSON object")
    fields = {k: v for k, v in body.items() if k != "sig"}
    version = fields.get("v")
    if isinstance(version, bool) or version != 1:
        raise ProtocolError(f"decision version {excerpt(version)} is not supported")
    unexpected = sorted(set(fields) ^ _DECISION_FIELDS)
    if unexpected:
        names = ", ".join(excerpt(name) for name in unexpected[:3]) + (", ..." if len(unexpected) > 3 else "")
        raise ProtocolError(f"decision has missing or unexpected fields: {names}")
    sig = _str(body, "sig", 2 * _SIG_BYTES)
    try:
        signature = bytes.fromhex(sig)
    except ValueError:
        raise ProtocolError("decision field 'sig' is not hexadecimal") from None
    decision = Decision(
        alert_id=_id(fields, "alert_id"),
        unit=_id(fields, "unit"),
        handset=_id(fields, "handset"),
        decision=_decision_kind(_str(fields, "decision", _MAX_TEXT)),
        time=_num(fields, "time", 0.0, MAX_EPOCH),
    )
    return decision, signature, _canonical(fields)


def _decision_kind(value: str) -> DecisionKind:
    if value not in DECISIONS:
        raise ProtocolError(f"decision {excerpt(value)} is not one of {', '.join(DECISIONS)}")
    return DecisionKind(value)


def _str(body: dict[str, Any], key: str, limit: int) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise ProtocolError(f"field {key!r} must be a string, not {excerpt(value)}")
    if len(value) > limit:
        raise ProtocolError(f"field {key!r} has {len(value)} characters, at most {limit}")
    return value


def _id(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not is_identifier(value):
        raise ProtocolError(f"field {key!r} must be {IDENTIFIER_RULE}, not {excerpt(value)}")
    return str(value)


def _num(body: dict[str, Any], key: str, lo: float, hi: float) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ProtocolError(f"field {key!r} must be a number from {lo:g} to {hi:g}, not {excerpt(value)}")
    return float(value)


def _picture(body: dict[str, Any], key: str) -> bytes:
    try:
        return base64.b64decode(_str(body, key, MAX_ALERT_BYTES), validate=True)
    except ValueError:  # binascii.Error, or text that is not ASCII at all
        raise ProtocolError(f"field {key!r} is not base64") from None


def _context(body: dict[str, Any]) -> bytes:
    """The context picture: absent or empty (none, or a unit from before it existed), else a bounded JPEG."""
    if body.get("context_jpeg", "") == "":
        return b""
    text = _str(body, "context_jpeg", 4 * ((MAX_CONTEXT_BYTES + 2) // 3))
    try:
        picture = base64.b64decode(text, validate=True)
    except ValueError:
        raise ProtocolError("field 'context_jpeg' is not base64") from None
    if not picture.startswith(b"\xff\xd8"):
        raise ProtocolError("field 'context_jpeg' is not a JPEG")
    return picture


def _rate(body: dict[str, Any]) -> ScoreRate | None:
    """The calibrated rate: absent or null (a unit without a table, or from before it), else all four fields."""
    raw = body.get("rate")
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != _RATE_FIELDS:
        raise ProtocolError(f"field 'rate' must be null or an object of {', '.join(sorted(_RATE_FIELDS))}")
    counts = {k: raw[k] for k in ("impostor_pairs", "subjects", "comparisons")}
    for key, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"field 'rate.{key}' must be a whole number, not {excerpt(value)}")
    rate = ScoreRate(_num(raw, "false_accept_rate", 0.0, 1.0), **counts)
    _check_rate(rate)
    return rate


def _check_rate(rate: ScoreRate) -> None:
    try:
        rate.check()
    except CalibrationError as exc:
        raise ProtocolError(f"field 'rate': {exc}") from None
