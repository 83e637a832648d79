"""End-to-end receipts between a unit and its handsets: the broker's PUBACK is not delivery.

Alert receipt (handset → unit, on its own `.../alerts/ack/from/<handset>`, QoS 1): UTF-8 JSON
    {"v": 1, "kind": "alert_receipt", "unit", "handset", "alert_id", "time", "sig"}
sent once the handset has decrypted the alert; the unit keeps the alert in its outbox (and re-publishes it)
until a paired handset's receipt arrives or its time-to-live ends.

Decision answer (unit → one handset, `.../decisions/answer/<handset>`, QoS 1): UTF-8 JSON
    {"v": 1, "kind": "decision_answer", "unit", "handset", "alert_id", "decision", "status", "reason",
     "revision", "time", "sig"}
`status` is `accepted` or `refused` (with `reason`); `revision` counts an officer's changed decisions on one
alert (0 for the first). `sig` is the sender's Ed25519 signature (hex) over the canonical JSON of the other
fields, as for decisions.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lfr_contracts import crypto
from lfr_contracts.alerts import DECISIONS, DecisionKind, ProtocolError
from lfr_contracts.untrusted import JsonRefused, excerpt, loads_json

MAX_RECEIPT_BYTES = 2048
MAX_REASON = 200
AnswerStatus = Literal["accepted", "refused"]


@dataclass(frozen=True)
class AlertReceipt:
    unit: str
    handset: str
    alert_id: str
    time: float


@dataclass(frozen=True)
class DecisionAnswer:
    unit: str
    handset: str
    alert_id: str
    decision: DecisionKind | None  # None when the decision could not be read
    status: AnswerStatus
    reason: str  # empty when accepted
    revision: int
    time: float

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"


def _canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def _signed(kind: str, fields: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    body = {"v": 1, "kind": kind, **fields}
    return json.dumps({**body, "sig": crypto.sign(key, _canonical(body)).hex()}).encode()


def _opened(payload: bytes, kind: str, names: set[str], key: Ed25519PublicKey | None) -> dict[str, Any]:
    """The fields of a signed message, checked for shape; its signature too when `key` is given."""
    if len(payload) > MAX_RECEIPT_BYTES:
        raise ProtocolError(f"{kind} of {len(payload)} bytes is over the {MAX_RECEIPT_BYTES}-byte limit")
    try:
        body = loads_json(payload, max_bytes=MAX_RECEIPT_BYTES)
    except JsonRefused as exc:
        raise ProtocolError(f"{kind} is not valid JSON ({exc})") from None
    if not isinstance(body, dict) or body.get("v") != 1 or body.get("kind") != kind:
        raise ProtocolError(f"not a version 1 {kind}")
    fields = {k: v for k, v in body.items() if k != "sig"}
    if set(fields) != {"v", "kind", *names}:
        unexpected = sorted(set(fields) ^ {"v", "kind", *names})
        raise ProtocolError(f"{kind} has missing or unexpected fields: {', '.join(map(excerpt, unexpected[:3]))}")
    signature = body.get("sig")
    if not isinstance(signature, str) or len(signature) != 128:
        raise ProtocolError(f"{kind} has no signature")
    if key is not None:
        try:
            crypto.verify(key, bytes.fromhex(signature), _canonical(fields))
        except (ValueError, crypto.CryptoError) as exc:
            raise ProtocolError(f"{kind} signature is not valid") from exc
    return fields


def _text(fields: dict[str, Any], name: str, limit: int = 64) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"field {name!r} must be a string of at most {limit} characters")
    return value


def _time(fields: dict[str, Any]) -> float:
    value = fields.get("time")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ProtocolError("field 'time' must be a finite, non-negative number")
    return float(value)


_RECEIPT_FIELDS = {"unit", "handset", "alert_id", "time"}
_ANSWER_FIELDS = {"unit", "handset", "alert_id", "decision", "status", "reason", "revision", "time"}


def encode_receipt(receipt: AlertReceipt, handset_key: Ed25519PrivateKey) -> bytes:
    return _signed("alert_receipt", asdict(receipt), handset_key)


def claimed_receipt(payload: bytes) -> AlertReceipt:
    """A receipt's fields before its signature is checked (to find the handset whose key checks it)."""
    fields = _opened(payload, "alert_receipt", _RECEIPT_FIELDS, None)
    return AlertReceipt(_text(fields, "unit"), _text(fields, "handset"), _text(fields, "alert_id"), _time(fields))


def decode_receipt(payload: bytes, handset_key: Ed25519PublicKey) -> AlertReceipt:
    _opened(payload, "alert_receipt", _RECEIPT_FIELDS, handset_key)
    return claimed_receipt(payload)


def encode_answer(answer: DecisionAnswer, unit_key: Ed25519PrivateKey) -> bytes:
    fields = asdict(answer)
    fields["decision"] = None if answer.decision is None else answer.decision.value
    fields["reason"] = answer.reason[:MAX_REASON]
    return _signed("decision_answer", fields, unit_key)


def decode_answer(payload: bytes, unit_key: Ed25519PublicKey) -> DecisionAnswer:
    fields = _opened(payload, "decision_answer", _ANSWER_FIELDS, unit_key)
    decision, status, revision = fields.get("decision"), fields.get("status"), fields.get("revision")
    if decision is not None and decision not in DECISIONS:
        raise ProtocolError(f"field 'decision' must be one of {', '.join(DECISIONS)}")
    if status not in ("accepted", "refused"):
        raise ProtocolError("field 'status' must be accepted or refused")
    if isinstance(revision, bool) or not isinstance(revision, int) or not 0 <= revision < 1000:
        raise ProtocolError("field 'revision' must be a small count")
    return DecisionAnswer(
        unit=_text(fields, "unit"),
        handset=_text(fields, "handset"),
        alert_id=_text(fields, "alert_id"),
        decision=None if decision is None else DecisionKind(decision),
        status=status,
        reason=_text(fields, "reason", MAX_REASON),
        revision=revision,
        time=_time(fields),
    )
