"""Fuzzing the watchlist bundle and close command (lfr_contracts.bundle), the unit's widest door.

Every case goes through the unit's real entry points (`open_bundle`, `open_close`, `read_envelope`) and
must end in an opened bundle or a `BundleError`. The inputs: real bundles and close commands made by the
real builder, mutated byte by byte; headers and subject indexes with one field replaced by something
hostile and then signed and sealed again with the test's command-centre key (what a compromised or buggy
command centre could send); and arbitrary bytes and JSON behind a valid prefix.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import dumps, fuzz, holds, hostile_json_text, json_values, mutated, nested
from lfr_contracts import bundle, crypto
from lfr_edge.audit.log import AuditLog
from lfr_edge.watchlist.lifecycle import LifecycleFile
from lfr_edge.watchlist.sync import WatchlistSync
from watchlist_helpers import DIM, MODEL, NOW, Keys, make_bundle, subjects

KEYS = Keys()
REAL = make_bundle(KEYS)
CLOSE = bundle.build_close("DEP-1", "unit-a", KEYS.centre, NOW, "nonce-1")
REAL_HEADER: dict[str, Any] = bundle.read_envelope(REAL, 1 << 20).header
PLAINTEXT = bundle.encode_body(subjects(), DIM)
MAX_BYTES = 1 << 20


def open_at_unit(data: bytes) -> bundle.OpenedBundle:
    return bundle.open_bundle(
        data,
        command_centre_key=KEYS.centre.public_key(),
        unit_key=KEYS.unit,
        unit_id="unit-a",
        model_id=MODEL,
        now=NOW,
        history=bundle.AppliedHistory(),
        max_bytes=MAX_BYTES,
    )


def close_at_unit(data: bytes) -> bundle.CloseCommand:
    return bundle.open_close(data, command_centre_key=KEYS.centre.public_key(), unit_id="unit-a", max_bytes=MAX_BYTES)


def framed(magic: bytes, header: bytes, signature: bytes = bytes(64), body: bytes = b"") -> bytes:
    """The documented wire format: magic | u16 format | u32 header length | header | signature | body."""
    return struct.pack(">4sHI", magic, bundle.FORMAT, len(header)) + header + signature + body


def signed(header: dict[str, Any] | bytes, body: bytes = b"", magic: bytes = bundle.BUNDLE_MAGIC) -> bytes:
    """A message signed with the test's command-centre key, whatever its header holds."""
    text = header if isinstance(header, bytes) else dumps(header)
    prefix = framed(magic, text, signature=b"")
    return prefix + crypto.sign(KEYS.centre, prefix) + body


def resealed(plaintext: bytes, **header_fields: Any) -> bytes:
    """A bundle around `plaintext`, sealed to the unit and signed, as the builder does it."""
    header = {**REAL_HEADER, **header_fields}
    aad_fields = {k: v for k, v in header.items() if k not in ("body_bytes", "body_sha256")}
    aad = json.dumps(aad_fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode()
    sealed = crypto.seal(plaintext, [KEYS.unit.public_key()], aad, purpose=bundle.SEAL_PURPOSE)
    header |= {"body_bytes": len(sealed), "body_sha256": hashlib.sha256(sealed).hexdigest()}
    return signed(header, sealed)


def index_of(plaintext: bytes) -> dict[str, Any]:
    (length,) = struct.unpack_from(">I", plaintext)
    index: dict[str, Any] = json.loads(plaintext[4 : 4 + length])
    return index


def with_index(plaintext: bytes, index: dict[str, Any]) -> bytes:
    (length,) = struct.unpack_from(">I", plaintext)
    text = dumps(index)
    return struct.pack(">I", len(text)) + text + plaintext[4 + length :]


def assert_sane(opened: bundle.OpenedBundle) -> None:
    """What an opened bundle promises the unit: finite times in order, a finite threshold, exact rows."""
    h = opened.header
    for when in (h.issued_at, h.valid_from, h.valid_until):
        assert math.isfinite(when) and bundle.MIN_EPOCH <= when <= bundle.MAX_EPOCH
    assert h.valid_from < h.valid_until
    assert math.isfinite(h.threshold) and -1 <= h.threshold <= 1
    assert opened.matrix.shape == (len(opened.row_subject), h.dim)
    assert all(isinstance(s.id, str) for s in opened.subjects)
    opened.wipe()


# Found by the campaign (issue 13), each reproduced first ------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        pytest.param("deployment", nested(5000), id="nested-5000-deep"),
        pytest.param("version", 10**4999, id="5000-digit-version"),
        pytest.param("threshold", 10**399, id="400-digit-threshold"),
        pytest.param("valid_until", "9" * 400, id="400-digit-time"),
    ],
)
def test_hostile_unsigned_header_fields_are_refused_as_garbled(field: str, value: Any) -> None:
    header = {**REAL_HEADER, field: value}
    with pytest.raises(bundle.BundleGarbled):
        open_at_unit(framed(bundle.BUNDLE_MAGIC, raw_json(header)))


def raw_json(value: Any) -> bytes:
    """json.dumps without Python's int-to-text digit limit (a sender is not bound by it) or recursion."""
    if isinstance(value, dict):
        return b"{" + b",".join(json.dumps(k).encode() + b":" + raw_json(v) for k, v in value.items()) + b"}"
    if isinstance(value, list):
        depth = 0
        while isinstance(value, list) and len(value) == 1:
            value, depth = value[0], depth + 1
        return b"[" * depth + raw_json(value) + b"]" * depth
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return str(value // 10**2000).encode() + str(value % 10**2000).zfill(2000).encode()
    return dumps(value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", "-5", "99999999999999", "10000-01-01T00:00:00Z"])
def test_a_signed_validity_time_that_is_not_a_real_time_is_refused(value: str) -> None:
    """`valid_until = "nan"` or `"inf"` was accepted (the list never expired); "1e300" raised OverflowError."""
    with pytest.raises(bundle.BundleGarbled, match="valid_until"):
        open_at_unit(signed({**REAL_HEADER, "valid_until": value}))


@pytest.mark.parametrize(
    "field, value",
    [("rows", True), ("rows", 0), ("rows", 1.0), ("photo", -1), ("photo", False), ("id", 7), ("id", None)],
)
def test_a_signed_subject_index_field_of_the_wrong_type_is_refused(field: str, value: Any) -> None:
    """`rows: true` became 1."""
    index = index_of(PLAINTEXT)
    index["subjects"][0][field] = value
    with pytest.raises(bundle.BundleGarbled, match=field):
        open_at_unit(resealed(with_index(PLAINTEXT, index)))


def test_a_refusal_that_would_echo_a_long_attacker_string_is_audited(tmp_path: Path) -> None:
    """The refusal's text quoted the attacker's value whole; the audit log then refused the refusal."""
    acks: list[bytes] = []

    def publish(topic: str, payload: bytes) -> bool:
        acks.append(payload)
        return True

    audit = AuditLog.open(tmp_path / "audit.jsonl", "unit-a")
    sync = WatchlistSync(
        unit_id="unit-a",
        model_id=MODEL,
        command_centre_key=KEYS.centre.public_key(),
        unit_key=KEYS.unit,
        max_bundle_bytes=MAX_BYTES,
        ack_topic="ack",
        publish=publish,
        audit=audit,
        record=LifecycleFile(tmp_path / "lifecycle.json", "unit-a", Ed25519PrivateKey.generate()),
        clock=lambda: NOW,
    )
    attacker = "QUJD" * 2000  # base64-looking, 8,000 characters
    for header in ({**REAL_HEADER, "kind": attacker}, {**REAL_HEADER, "version": attacker}):
        sync.handle_message("t", framed(bundle.BUNDLE_MAGIC, dumps(header)))
    audit.close()
    refusals = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()[1:]]
    # the first refusal of a kind is written at once; a repeat within the interval is counted, not written
    assert [r["event"] for r in refusals][:1] == ["watchlist_refused"]
    assert all(len(r.get("detail", "")) < 200 and attacker[:100] not in json.dumps(r) for r in refusals)
    assert [json.loads(a)["reason"] for a in acks] == ["garbled", "garbled"]


def test_the_builder_refuses_what_the_unit_would_refuse() -> None:
    for bad in ({"valid_until": math.inf}, {"valid_from": math.nan}, {"threshold": math.nan}, {"version": -1}):
        with pytest.raises(ValueError):
            make_bundle(KEYS, **bad)


# Property-based --------------------------------------------------------------------------------------


@fuzz(350)
@given(mutated(REAL))
def test_mutated_bundles_open_or_are_refused(data: bytes) -> None:
    holds(bundle.BundleError, lambda: assert_sane(open_at_unit(data)))


@fuzz(100)
@given(mutated(CLOSE))
def test_mutated_close_commands_are_read_or_refused(data: bytes) -> None:
    holds(bundle.BundleError, lambda: close_at_unit(data))
    holds(bundle.BundleError, lambda: bundle.inspect(data, MAX_BYTES))


@fuzz(100)
@given(st.sampled_from([bundle.BUNDLE_MAGIC, bundle.CLOSE_MAGIC, b"LFRX"]), st.binary(max_size=512))
def test_arbitrary_bytes_behind_a_prefix_are_refused(magic: bytes, rest: bytes) -> None:
    data = struct.pack(">4sH", magic, bundle.FORMAT) + rest
    assert not holds(bundle.BundleError, lambda: open_at_unit(data))
    assert not holds(bundle.BundleError, lambda: close_at_unit(data))


@fuzz(100)
@given(st.one_of(hostile_json_text(), st.builds(dumps, json_values)))
def test_any_unsigned_header_is_refused(header: bytes) -> None:
    data = framed(bundle.BUNDLE_MAGIC, header)
    assert not holds(bundle.BundleError, lambda: open_at_unit(data))


@fuzz(200)
@given(st.sampled_from(sorted(REAL_HEADER)), json_values)
def test_a_signed_header_with_any_field_value_opens_sane_or_is_refused(field: str, value: Any) -> None:
    data = resealed(PLAINTEXT, **{field: value})
    holds(bundle.BundleError, lambda: assert_sane(open_at_unit(data)))


@fuzz(200)
@given(st.integers(0, 2), st.sampled_from(["id", "category", "reference", "rows", "photo", "dim"]), json_values)
def test_a_signed_subject_index_with_any_field_value_opens_sane_or_is_refused(
    subject: int, field: str, value: Any
) -> None:
    index = index_of(PLAINTEXT)
    target = index if field == "dim" else index["subjects"][subject]
    target[field] = value
    data = resealed(with_index(PLAINTEXT, index))
    holds(bundle.BundleError, lambda: assert_sane(open_at_unit(data)))


@fuzz(100)
@given(mutated(PLAINTEXT))
def test_a_signed_mutated_body_opens_sane_or_is_refused(plaintext: bytes) -> None:
    data = resealed(plaintext)
    holds(bundle.BundleError, lambda: assert_sane(open_at_unit(data)))
