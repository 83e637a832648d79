"""Handset pairing by one-time code: the unit's session against a handset, message by message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts.pairing import (
    MAX_ATTEMPTS,
    HandsetPairing,
    PairingError,
    PairingSession,
    new_code,
    normalise_code,
)
from lfr_contracts.topics import Topics
from lfr_provision import handsets
from lfr_provision.broker_config import AccessPlan, acl_text
from lfr_provision.identity import ProvisionError

UNIT = "van-07"


class Clock:
    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def unit_session(clock: Clock, unit_id: str = UNIT) -> tuple[PairingSession, X25519PrivateKey, Ed25519PrivateKey]:
    x_key, e_key = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    return PairingSession(unit_id, x_key.public_key(), e_key, now=clock), x_key, e_key


def handset(code: str, handset_id: str = "handset-12") -> HandsetPairing:
    return HandsetPairing(handset_id, code, X25519PrivateKey.generate(), Ed25519PrivateKey.generate())


def wrong(code: str) -> str:
    digits = normalise_code(code)
    return f"{(int(digits) + 1) % 10**8:08d}"


def test_right_code_pairs_both_ways(tmp_path: Path) -> None:
    clock = Clock()
    session, unit_x, unit_e = unit_session(clock)
    phone = handset(session.code)
    request = phone.request(session.offer(), now=clock.now)
    paired, confirm = session.accept(request, sender="handset-12")
    assert paired.handset_id == "handset-12" and paired.unit_id == UNIT
    unit = phone.confirm(confirm)
    assert unit.unit_id == UNIT
    assert unit.x25519_public.public_bytes_raw() == unit_x.public_key().public_bytes_raw()
    assert unit.ed25519_public.public_bytes_raw() == unit_e.public_key().public_bytes_raw()
    path = handsets.register(tmp_path, paired)
    handset_id, x_pub, e_pub = handsets.load(path)
    assert handset_id == "handset-12"
    assert x_pub.public_bytes_raw() == paired.x25519_public.public_bytes_raw()
    assert e_pub.public_bytes_raw() == paired.ed25519_public.public_bytes_raw()
    assert "private" not in path.read_text().lower()


def test_wrong_code_fails_and_does_not_pair() -> None:
    clock = Clock()
    session, _, _ = unit_session(clock)
    with pytest.raises(PairingError, match="wrong pairing code"):
        session.accept(handset(wrong(session.code)).request(session.offer(), now=clock.now), sender="handset-12")
    assert not session.used and session.attempts_left == MAX_ATTEMPTS - 1


def test_replayed_request_is_refused_after_pairing() -> None:
    clock = Clock()
    session, _, _ = unit_session(clock)
    request = handset(session.code).request(session.offer(), now=clock.now)
    session.accept(request, sender="handset-12")
    with pytest.raises(PairingError, match="already been used"):
        session.accept(request, sender="handset-12")


def test_replayed_request_to_a_new_session_is_refused() -> None:
    clock = Clock()
    old, unit_x, unit_e = unit_session(clock)
    request = handset(old.code).request(old.offer(), now=clock.now)
    old.accept(request, sender="handset-12")
    new = PairingSession(UNIT, unit_x.public_key(), unit_e, code=old.code, now=clock)  # even with the same code
    with pytest.raises(PairingError, match="another \\(older\\) pairing session"):
        new.accept(request, sender="handset-12")
    forged = json.loads(request)
    forged["session_id"] = new.session_id
    with pytest.raises(PairingError, match="wrong pairing code"):
        new.accept(json.dumps(forged).encode(), sender="handset-12")


def test_a_nonce_seen_before_is_refused() -> None:
    clock = Clock()
    session, _, _ = unit_session(clock)
    bad = handset(wrong(session.code)).request(session.offer(), now=clock.now)
    with pytest.raises(PairingError, match="wrong"):
        session.accept(bad, sender="handset-12")
    with pytest.raises(PairingError, match="nonce already seen"):
        session.accept(bad, sender="handset-12")
    assert session.attempts_left == MAX_ATTEMPTS - 1


def test_request_for_another_unit_is_refused() -> None:
    clock = Clock()
    session, _, _ = unit_session(clock)
    other, _, _ = unit_session(clock, unit_id="van-08")
    other.code = session.code
    request = handset(session.code).request(other.offer(), now=clock.now)
    with pytest.raises(PairingError, match="another unit"):
        session.accept(request, sender="handset-12")


def test_expired_code_is_refused() -> None:
    clock = Clock()
    session, _, _ = unit_session(clock)
    offer = session.offer()
    request = handset(session.code).request(offer, now=clock.now)
    clock.now += session.ttl_s + 1
    with pytest.raises(PairingError, match="expired"):
        session.accept(request, sender="handset-12")
    with pytest.raises(PairingError, match="expired"):
        handset(session.code).request(offer, now=clock.now)


def test_brute_force_voids_the_code_even_for_the_right_one() -> None:
    clock = Clock()
    session, _, _ = unit_session(clock)
    for _ in range(MAX_ATTEMPTS):
        with pytest.raises(PairingError, match="wrong pairing code"):
            session.accept(handset(wrong(session.code)).request(session.offer(), now=clock.now), sender="handset-12")
    with pytest.raises(PairingError, match="too many wrong codes"):
        session.accept(handset(session.code).request(session.offer(), now=clock.now), sender="handset-12")


def test_tampered_handset_key_breaks_the_mac() -> None:
    clock = Clock()
    session, _, _ = unit_session(clock)
    request = json.loads(handset(session.code).request(session.offer(), now=clock.now))
    someone_else = json.loads(handset(session.code).request(session.offer(), now=clock.now))
    request["handset_x25519"] = someone_else["handset_x25519"]  # swap in another key, keep the MAC
    with pytest.raises(PairingError, match="wrong pairing code"):
        session.accept(json.dumps(request).encode(), sender="handset-12")


def test_handset_refuses_a_confirmation_from_someone_without_the_code() -> None:
    clock = Clock()
    session, _, _ = unit_session(clock)
    phone = handset(session.code)
    request = phone.request(session.offer(), now=clock.now)
    _, confirm = session.accept(request, sender="handset-12")
    forged = json.loads(confirm)
    forged["mac"] = forged["mac"][:-2] + ("AA" if forged["mac"][-2:] != "AA" else "BB")
    with pytest.raises(PairingError, match="did not prove"):
        phone.confirm(json.dumps(forged).encode())
    assert phone.confirm(confirm).unit_id == UNIT


@pytest.mark.parametrize(
    "message",
    [b"", b"not json", b"[]", b'{"type": "request", "v": 2}', b'{"type": "request", "v": 1}', b"{" * 5000],
    ids=["empty", "text", "list", "version", "missing-fields", "oversized"],
)
def test_malformed_requests_are_refused_with_a_reason(message: bytes) -> None:
    session, _, _ = unit_session(Clock())
    with pytest.raises(PairingError, match="request"):
        session.accept(message, sender="handset-12")
    assert session.attempts_left == MAX_ATTEMPTS


def test_codes_are_eight_digits_and_typing_is_forgiving() -> None:
    code = new_code()
    assert len(code) == 9 and code[4] == "-"
    assert normalise_code(" 1234 5678 ") == "12345678"
    with pytest.raises(PairingError, match="8 digits"):
        normalise_code("1234")


def test_topics_live_under_the_units_prefix() -> None:
    topics = Topics.for_unit("lfr/v1", UNIT)
    assert topics.pairing_request_for("h") == "lfr/v1/units/van-07/pairing/request/h"
    assert topics.pairing_requests == "lfr/v1/units/van-07/pairing/request/+"
    assert topics.pairing_confirm_for("h") == "lfr/v1/units/van-07/pairing/confirm/h"
    assert topics.pairing_request_sender("lfr/v1/units/van-07/pairing/request/handset-13") == "handset-13"
    for other in (
        "lfr/v1/units/van-07/pairing/request",
        "lfr/v1/units/van-07/pairing/request/",
        "lfr/v1/units/van-08/pairing/request/handset-13",
        "lfr/v1/units/van-07/pairing/request/a/b",
    ):
        assert topics.pairing_request_sender(other) is None, other


def test_a_request_naming_another_handset_than_its_sender_is_refused_and_costs_no_try() -> None:
    # Found (issue 12, item 6): handset-13's code, sent over handset-13's certificate, named handset-12 and
    # overwrote handset-12's keys. The sender is the request topic's handset, which the broker vouches for.
    clock = Clock()
    session, _, _ = unit_session(clock)
    impostor = handset(session.code, "handset-12").request(session.offer(), now=clock.now)
    refused = "names handset 'handset-12' but was sent with the certificate of 'handset-13'"
    with pytest.raises(PairingError, match=refused):
        session.accept(impostor, sender="handset-13")
    assert not session.used and session.attempts_left == MAX_ATTEMPTS
    with pytest.raises(PairingError, match="no handset's request topic"):
        session.accept(impostor, sender="handset-12/x")
    paired, _ = session.accept(handset(session.code, "handset-13").request(session.offer(), now=clock.now),
                               sender="handset-13")  # fmt: skip
    assert paired.handset_id == "handset-13"


def test_registry_list_and_unpair(tmp_path: Path) -> None:
    clock = Clock()
    for name in ("handset-1", "handset-2"):
        session, _, _ = unit_session(clock)
        paired, _ = session.accept(handset(session.code, name).request(session.offer(), now=clock.now), sender=name)
        handsets.register(tmp_path, paired)
    assert [e.handset_id for e in handsets.list_handsets(tmp_path)] == ["handset-1", "handset-2"]
    handsets.unpair(tmp_path, "handset-1")
    assert [e.handset_id for e in handsets.list_handsets(tmp_path)] == ["handset-2"]
    with pytest.raises(ProvisionError, match=r"no paired handset 'handset-1'.*handset-2"):
        handsets.unpair(tmp_path, "handset-1")
    with pytest.raises(ProvisionError, match="handset id"):
        handsets.unpair(tmp_path, "../etc/passwd")


def test_a_corrupt_registry_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "handset-9.json").write_text('{"handset_id": "handset-9", "x25519_public": "nope"}')
    with pytest.raises(ProvisionError, match=r"handset-9\.json"):
        handsets.list_handsets(tmp_path)


def test_the_acl_in_docs_pairing_md_is_the_one_the_project_writes() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "pairing.md").read_text()
    block = doc.split("## Broker ACL", 1)[1].split("```")[1]
    shown = [line for line in block.splitlines() if line.startswith(("user ", "topic "))]
    written = acl_text(AccessPlan(units=(UNIT,), handsets={"handset-12": (UNIT,)})).splitlines()
    assert shown and all(line in written for line in shown), [line for line in shown if line not in written]
    assert "topic write lfr/v1/units/van-07/pairing/request/handset-12" in shown
