"""Fuzzing alerts (unit to handset), decisions (handset to unit) and their receipts and answers:
lfr_contracts.alerts and lfr_contracts.receipts.

`parse_decision` reads what any client of the broker can publish on a unit's decisions topic, before any
signature is checked; `decode_alert` reads what arrives on a handset. Both must return a value or raise
`ProtocolError`, whatever the bytes, and every refusal text must be one the audit log accepts.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import dumps, fuzz, holds, hostile_json_text, json_values, mutated
from lfr_contracts import crypto
from lfr_contracts.alerts import (
    ALERT_MAGIC,
    ALERT_VERSION,
    MAX_CONTEXT_BYTES,
    Alert,
    Decision,
    DecisionKind,
    ProtocolError,
    decode_alert,
    encode_alert,
    encode_decision,
    parse_decision,
)
from lfr_contracts.audit_events import DecisionRefused
from lfr_contracts.calibration import ScoreRate, alert_band
from lfr_contracts.receipts import (
    AlertReceipt,
    DecisionAnswer,
    claimed_receipt,
    decode_answer,
    decode_receipt,
    encode_answer,
    encode_receipt,
)
from lfr_contracts.status import StatusError, UnitStatus
from lfr_edge.audit.log import AuditLog

UNIT_KEY = Ed25519PrivateKey.generate()
HANDSET_SEAL = X25519PrivateKey.generate()
HANDSET_SIGN = Ed25519PrivateKey.generate()
ALERT = Alert(
    "a1b2c3",
    "unit-a",
    "cam0",
    1_800_000_000.0,
    0.71,
    0.55,
    "S-0042",
    "wanted",
    "ref 12",
    b"live",
    b"list",
    b"\xff\xd8c",
    ScoreRate(3 / 696_404, 696_404, 1_200, 2_400),  # 3 impostor pairs of 696,404 scored this high
)
REAL_ALERT = encode_alert(ALERT, UNIT_KEY, [HANDSET_SEAL.public_key()])
REAL_DECISION = encode_decision(
    Decision("a1b2c3", "unit-a", "handset-1", DecisionKind.ENGAGE, 1_800_000_010.0), HANDSET_SIGN
)
DECISION_FIELDS: dict[str, Any] = json.loads(REAL_DECISION)


def at_handset(payload: bytes) -> Alert:
    return decode_alert(payload, "unit-a", UNIT_KEY.public_key(), HANDSET_SEAL)


def at_unit(payload: bytes) -> Decision:
    """What the unit does with a decision: parse, then verify against the paired handset's key."""
    decision, signature, signed = parse_decision(payload)
    try:
        crypto.verify(HANDSET_SIGN.public_key(), signature, signed)
    except crypto.BadSignature as exc:
        raise ProtocolError(f"decision signature is not valid: {exc}") from exc
    assert math.isfinite(decision.time)
    return decision


def alert_with_body(body: bytes) -> bytes:
    """An alert signed by the unit and sealed to the handset, whatever its body says."""
    envelope = crypto.seal(body, [HANDSET_SEAL.public_key()], b"lfr-alert|unit-a", purpose="lfr-edge/alert")
    return ALERT_MAGIC + bytes([ALERT_VERSION]) + crypto.sign(UNIT_KEY, envelope) + envelope


def alert_body() -> dict[str, Any]:
    body: dict[str, Any] = {k: getattr(ALERT, k) for k in ALERT.__dataclass_fields__}
    body["live_jpeg"] = base64.b64encode(ALERT.live_jpeg).decode()
    body["watchlist_jpeg"] = base64.b64encode(ALERT.watchlist_jpeg).decode()
    body["context_jpeg"] = base64.b64encode(ALERT.context_jpeg).decode()
    body["rate"] = asdict(ALERT.rate) if ALERT.rate else None
    return body


# Found by the campaign (issue 13), each reproduced first ------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"v": 1, "time": ' + b"[" * 2000 + b"]" * 2000 + b"}", id="nested-2000-deep"),
        pytest.param(REAL_DECISION.replace(b"1800000010.0", b"9" * 400), id="400-digit-time"),
        pytest.param(REAL_DECISION.replace(b"1800000010.0", b"9" * 4000), id="4000-digit-time"),
        pytest.param(REAL_DECISION.replace(b"1800000010.0", b"1e999"), id="time-1e999"),
        pytest.param(REAL_DECISION.replace(b"1800000010.0", b"NaN"), id="time-NaN"),
        pytest.param(REAL_DECISION.replace(b'"v": 1', b'"v": true'), id="version-true"),
        pytest.param(REAL_DECISION.replace(b'"sig": "', b'"sig": "zz'), id="sig-not-hex"),
        pytest.param(REAL_DECISION.replace(b"engage", b"\\ud800"), id="lone-surrogate"),
        pytest.param(REAL_DECISION.decode().encode("utf-16"), id="utf-16"),
    ],
)
def test_hostile_decisions_are_refused_with_a_protocol_error(payload: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_decision(payload)


@pytest.mark.parametrize("field", ["decision", "unit", "handset", "alert_id", "QUJD" * 200])
def test_a_decision_refusal_never_echoes_a_long_attacker_string(field: str, tmp_path: Path) -> None:
    """A refusal quoting a long base64-looking value made the audit log raise inside the refusal."""
    attacker = "QUJD" * 900
    fields = {**DECISION_FIELDS, field: attacker}
    with pytest.raises(ProtocolError) as refused:
        parse_decision(json.dumps(fields).encode())
    assert attacker[:60] not in str(refused.value)
    with AuditLog.open(tmp_path / "audit.jsonl", "unit-a") as audit:
        audit.append(DecisionRefused(reason=str(refused.value)))


def test_a_picture_that_is_not_ascii_is_refused() -> None:
    """Found by a long run (LFR_FUZZ_EXAMPLES=3000): base64 of non-ASCII text raised a bare ValueError."""
    with pytest.raises(ProtocolError, match="'live_jpeg' is not base64"):
        at_handset(alert_with_body(dumps({**alert_body(), "live_jpeg": "\x80"})))


def test_an_alert_body_that_is_not_an_object_is_refused() -> None:
    for body in (b"[]", b"7", b'"text"', b"[" * 3000):
        with pytest.raises(ProtocolError):
            at_handset(alert_with_body(body))


# The context picture (head and shoulders, matches only) -------------------------------------------------


def test_the_context_picture_travels_sealed_and_an_older_unit_sends_none() -> None:
    assert at_handset(REAL_ALERT).context_jpeg == b"\xff\xd8c"
    older = {k: v for k, v in alert_body().items() if k != "context_jpeg"}
    assert at_handset(alert_with_body(dumps(older))).context_jpeg == b""
    assert at_handset(alert_with_body(dumps({**alert_body(), "context_jpeg": ""}))).context_jpeg == b""


def test_a_context_picture_over_the_bound_or_not_a_jpeg_is_refused() -> None:
    big = b"\xff\xd8" + bytes(MAX_CONTEXT_BYTES)
    with pytest.raises(ProtocolError, match="context picture of"):
        encode_alert(Alert(**{**vars(ALERT), "context_jpeg": big}), UNIT_KEY, [HANDSET_SEAL.public_key()])
    for picture, reason in ((big, "characters, at most"), (b"GIF89a", "is not a JPEG")):
        body = {**alert_body(), "context_jpeg": base64.b64encode(picture).decode()}
        with pytest.raises(ProtocolError, match=reason):
            at_handset(alert_with_body(dumps(body)))


@fuzz(100)
@given(st.one_of(st.binary(max_size=2 * MAX_CONTEXT_BYTES), st.binary(max_size=64).map(lambda b: b"\xff\xd8" + b)))
def test_any_context_picture_opens_within_its_bound_or_is_refused(picture: bytes) -> None:
    body = {**alert_body(), "context_jpeg": base64.b64encode(picture).decode()}
    payload = alert_with_body(dumps(body))
    if holds(ProtocolError, lambda: at_handset(payload)):
        opened = at_handset(payload).context_jpeg
        assert opened == picture  # b"": no context picture
        assert not opened or (len(opened) <= MAX_CONTEXT_BYTES and opened[:2] == b"\xff\xd8")


# The calibrated rate (the unit's calibration table at the alert's score, for the handset's band) -----------

RATE_FIELDS = sorted(asdict(ALERT.rate)) if ALERT.rate else []


def test_the_rate_travels_sealed_and_a_unit_without_a_table_sends_none() -> None:
    assert at_handset(REAL_ALERT).rate == ALERT.rate
    without = {k: v for k, v in alert_body().items() if k != "rate"}
    for body in (without, {**without, "rate": None}):
        opened = at_handset(alert_with_body(dumps(body)))
        assert opened.rate is None and alert_band(opened.score, opened.threshold, None).startswith("not calibrated")


@pytest.mark.parametrize(
    "rate, reason",
    [
        ({"false_accept_rate": 1.5}, "'false_accept_rate' must be a number from 0 to 1"),
        ({"false_accept_rate": -1e-9}, "'false_accept_rate' must be a number from 0 to 1"),
        ({"impostor_pairs": 0}, "impostor_pairs 0 is not between 1"),
        ({"false_accept_rate": 1e-300}, "below what 696,404 pairs can show"),
        ({"subjects": 0}, "need 1 <= subjects <= comparisons"),
        ({"subjects": 3, "comparisons": 2}, "need 1 <= subjects <= comparisons"),
        ({"comparisons": 10**9}, "need 1 <= subjects <= comparisons"),
        ({"subjects": True}, "'rate.subjects' must be a whole number"),
        ({"subjects": 2.0}, "'rate.subjects' must be a whole number"),
        ({"band": "strong"}, "must be null or an object of"),
    ],
)
def test_a_rate_out_of_its_range_is_refused_naming_the_field(rate: dict[str, Any], reason: str) -> None:
    body = {**alert_body(), "rate": {**alert_body()["rate"], **rate}}
    with pytest.raises(ProtocolError, match=reason):
        at_handset(alert_with_body(dumps(body)))


def test_the_unit_cannot_send_a_rate_out_of_its_range() -> None:
    assert ALERT.rate is not None
    for bad in (ScoreRate(math.nan, 10, 1, 1), ScoreRate(0.1, 10, 5, 4), ScoreRate(2.0, 10, 1, 1)):
        with pytest.raises(ProtocolError, match="field 'rate'"):
            encode_alert(Alert(**{**vars(ALERT), "rate": bad}), UNIT_KEY, [HANDSET_SEAL.public_key()])


@fuzz(200)
@given(
    st.sampled_from(RATE_FIELDS),
    st.one_of(json_values, st.floats(-2, 2), st.floats(0, 1e-5), st.integers(-(10**16), 10**16)),
)
def test_a_rate_with_any_field_value_opens_within_its_bounds_or_is_refused(field: str, value: Any) -> None:
    body = {**alert_body(), "rate": {**alert_body()["rate"], field: value}}
    payload = alert_with_body(dumps(body))
    if holds(ProtocolError, lambda: at_handset(payload)):
        opened = at_handset(payload)
        rate = opened.rate
        assert rate is not None and 0.0 <= rate.false_accept_rate <= 1.0
        assert 1 <= rate.subjects <= rate.comparisons and rate.impostor_pairs >= 1
        band = alert_band(opened.score, opened.threshold, rate)
        assert "1 in" in band and "nan" not in band and "inf" not in band


@fuzz(100)
@given(st.one_of(json_values, st.dictionaries(st.sampled_from([*RATE_FIELDS, "x"]), json_values, max_size=6)))
def test_any_rate_object_opens_or_is_refused(value: Any) -> None:
    payload = alert_with_body(dumps({**alert_body(), "rate": value}))
    holds(ProtocolError, lambda: at_handset(payload))


STATUS = UnitStatus("online", "unit-a", "2027-01-01T00:00:00.000Z", 3, None, "m", "ok").encode()


@fuzz(100)
@given(st.one_of(json_values, st.sampled_from(["ok", "not_answering", "disconnected"])))
def test_a_status_with_any_beacon_value_is_read_or_refused(value: Any) -> None:
    """The beacon's state in the unit's retained status, which the handset shows."""
    payload = dumps({**json.loads(STATUS), "beacon": value})
    if holds(StatusError, lambda: UnitStatus.decode(payload)):
        assert UnitStatus.decode(payload).beacon in (None, "ok", "not_answering", "disconnected")


# Property-based --------------------------------------------------------------------------------------


@fuzz(250)
@given(mutated(REAL_DECISION))
def test_mutated_decisions_are_read_or_refused(payload: bytes) -> None:
    holds(ProtocolError, lambda: at_unit(payload))


@fuzz(200)
@given(st.sampled_from(sorted(DECISION_FIELDS)), json_values)
def test_a_decision_with_any_field_value_is_read_or_refused(field: str, value: Any) -> None:
    payload = dumps({**DECISION_FIELDS, field: value})
    holds(ProtocolError, lambda: parse_decision(payload))


@fuzz(100)
@given(st.one_of(hostile_json_text(), st.builds(dumps, json_values), st.binary(max_size=5000)))
def test_arbitrary_decision_payloads_are_refused(payload: bytes) -> None:
    assert not holds(ProtocolError, lambda: at_unit(payload))


@fuzz(200)
@given(mutated(REAL_ALERT))
def test_mutated_alerts_open_or_are_refused(payload: bytes) -> None:
    holds(ProtocolError, lambda: at_handset(payload))


@fuzz(100)
@given(st.sampled_from(sorted(alert_body())), json_values)
def test_a_signed_alert_with_any_field_value_opens_or_is_refused(field: str, value: Any) -> None:
    payload = alert_with_body(dumps({**alert_body(), field: value}))
    holds(ProtocolError, lambda: at_handset(payload))


@fuzz(100)
@given(st.one_of(hostile_json_text(), mutated(dumps(alert_body()))))
def test_a_signed_alert_with_a_hostile_body_opens_or_is_refused(body: bytes) -> None:
    payload = alert_with_body(body)
    holds(ProtocolError, lambda: at_handset(payload))


# Receipts and decision answers (lfr_contracts.receipts) -------------------------------------------------

RECEIPT = encode_receipt(AlertReceipt("unit-a", "handset-1", "a1b2c3", 1_800_000_020.0), HANDSET_SIGN)
ANSWER = encode_answer(
    DecisionAnswer("unit-a", "handset-1", "a1b2c3", DecisionKind.ENGAGE, "accepted", "", 0, 1_800_000_030.0),
    UNIT_KEY,
)


def test_a_receipt_refusal_never_echoes_a_long_attacker_field_name() -> None:
    with pytest.raises(ProtocolError) as refused:
        claimed_receipt(dumps({**json.loads(RECEIPT), "QUJD" * 400: 1}))
    assert "QUJD" * 10 not in str(refused.value)


@fuzz(200)
@given(st.one_of(mutated(RECEIPT), st.builds(dumps, json_values), hostile_json_text()))
def test_mutated_receipts_are_read_or_refused(payload: bytes) -> None:
    holds(ProtocolError, lambda: claimed_receipt(payload))
    holds(ProtocolError, lambda: decode_receipt(payload, HANDSET_SIGN.public_key()))


@fuzz(100)
@given(st.one_of(mutated(ANSWER), st.builds(dumps, json_values)))
def test_mutated_decision_answers_are_read_or_refused(payload: bytes) -> None:
    holds(ProtocolError, lambda: decode_answer(payload, UNIT_KEY.public_key()))
