"""Fuzzing the pairing messages (lfr_contracts.pairing): offer, request, confirm.

Any enrolled handset can publish a pairing request (on its own request topic, whatever it puts in it)
while `lfr-provision pair-handset` runs, and anyone can answer a handset's request. Each side must accept
the real message or raise `PairingError`, whatever the bytes: a request that raised RecursionError used to
end `pair-handset`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import assume, given
from hypothesis import strategies as st

from fuzz_helpers import dumps, fuzz, holds, hostile_json_text, json_values, mutated
from lfr_contracts.pairing import HandsetPairing, PairedHandset, PairedUnit, PairingError, PairingSession, loose_fields
from lfr_provision import pair_mqtt

NOW = 1_750_000_000.0
CODE = "1234-5678"
UNIT_X = X25519PrivateKey.generate()
UNIT_E = Ed25519PrivateKey.generate()


def session() -> PairingSession:
    """A fresh unit session, the same one every time (so one real request fits them all)."""
    return PairingSession(
        "van-07", UNIT_X.public_key(), UNIT_E, code=CODE, session_id="s-1", unit_nonce=b"n" * 16, now=lambda: NOW
    )


OFFER = session().offer()
PHONE = HandsetPairing("handset-12", CODE, X25519PrivateKey.generate(), Ed25519PrivateKey.generate())
REQUEST = PHONE.request(OFFER, now=NOW)
_, CONFIRM = session().accept(REQUEST, sender="handset-12")


def at_unit(request: bytes) -> PairedHandset:
    return session().accept(request, sender="handset-12")[0]


def at_handset_offer(offer: bytes) -> bytes:
    phone = HandsetPairing("handset-12", CODE, X25519PrivateKey.generate(), Ed25519PrivateKey.generate())
    return phone.request(offer, now=NOW)


def at_handset_confirm(confirm: bytes) -> PairedUnit:
    return PHONE.confirm(confirm)


def replaced(message: bytes, field: str, value: Any) -> bytes:
    return dumps({**json.loads(message), field: value})


# Found by the campaign (issue 13), each reproduced first ------------------------------------------------


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(REQUEST.replace(b'"handset-12"', b"[" * 1500 + b"]" * 1500, 1), id="nested-1500-deep"),
        pytest.param(b"[" * 4000, id="4000-brackets"),
        pytest.param(replaced(REQUEST, "v", True), id="version-true"),
        pytest.param(REQUEST.replace(b'"request"', b'"\\ud800"'), id="lone-surrogate"),
        pytest.param(REQUEST.decode().encode("utf-16"), id="utf-16"),
    ],
)
def test_hostile_requests_are_refused_and_the_unit_reads_on(request_bytes: bytes) -> None:
    with pytest.raises(PairingError):
        at_unit(request_bytes)
    assert isinstance(loose_fields(request_bytes), dict)
    pair_mqtt._nonce_of(request_bytes)  # what pair-handset reads to answer the refusal: no crash either
    pair_mqtt._claimed(request_bytes)  # and to audit it


def test_an_offer_whose_expiry_is_not_a_number_is_refused() -> None:
    for value in (True, "soon", None, [1]):
        with pytest.raises(PairingError, match="expires_at"):
            at_handset_offer(replaced(OFFER, "expires_at", value))


def test_the_real_messages_pair() -> None:
    assert at_unit(REQUEST).handset_id == "handset-12"
    assert at_handset_confirm(CONFIRM).unit_id == "van-07"


# Property-based --------------------------------------------------------------------------------------


@fuzz(250)
@given(mutated(REQUEST))
def test_mutated_requests_pair_or_are_refused(request_bytes: bytes) -> None:
    holds(PairingError, lambda: at_unit(request_bytes))
    assert isinstance(loose_fields(request_bytes), dict)
    pair_mqtt._nonce_of(request_bytes)
    pair_mqtt._claimed(request_bytes)


@fuzz(100)
@given(st.sampled_from(sorted(json.loads(REQUEST))), json_values)
def test_a_request_with_any_field_value_is_refused(field: str, value: Any) -> None:
    request_bytes = replaced(REQUEST, field, value)
    holds(PairingError, lambda: at_unit(request_bytes))


@fuzz(100)
@given(st.one_of(st.text(max_size=80), st.sampled_from(["handset-1", "handset-13", "Handset-12", "handset-12 "])))
def test_the_real_request_from_any_other_sender_is_refused(sender: str) -> None:
    # The sender is the last level of the topic the request came on (any text a broker would route).
    assume(sender != "handset-12")
    with pytest.raises(PairingError):
        session().accept(REQUEST, sender=sender)


@fuzz(100)
@given(st.one_of(hostile_json_text(), st.builds(dumps, json_values), st.binary(max_size=5000)))
def test_arbitrary_requests_are_refused(request_bytes: bytes) -> None:
    assert not holds(PairingError, lambda: at_unit(request_bytes))
    assert isinstance(loose_fields(request_bytes), dict)


@fuzz(100)
@given(
    st.one_of(
        mutated(OFFER), st.builds(replaced, st.just(OFFER), st.sampled_from(sorted(json.loads(OFFER))), json_values)
    )
)
def test_mutated_offers_are_answered_or_refused(offer: bytes) -> None:
    holds(PairingError, lambda: at_handset_offer(offer))


@fuzz(100)
@given(
    st.one_of(
        mutated(CONFIRM),
        st.builds(replaced, st.just(CONFIRM), st.sampled_from(sorted(json.loads(CONFIRM))), json_values),
    )
)
def test_mutated_confirmations_are_accepted_or_refused(confirm: bytes) -> None:
    holds(PairingError, lambda: at_handset_confirm(confirm))
