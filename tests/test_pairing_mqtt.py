"""Handset pairing over a real mosquitto (mutual TLS, the project's ACL): `lfr-provision pair-handset`
against `lfr-handset pair`, and the refusals a handset without the code, a replay or a late try meet."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import layout
from lfr_contracts.alerts import Alert
from lfr_contracts.audit_events import HandsetPaired, PairingRefused
from lfr_contracts.pairing import MAX_ATTEMPTS, HandsetPairing, PairingError, PairingSession, normalise_code
from lfr_contracts.topics import Topics
from lfr_edge import keyfiles
from lfr_edge.alerts.handset import HandsetChannel, load_handsets
from lfr_edge.audit.log import AuditLog
from lfr_edge.comms.mqtt import UnitMqttClient
from lfr_edge.config import AlertsConfig
from lfr_hwsim.broker import MosquittoBroker
from lfr_provision.pair_handset import pair_handset
from lfr_provision.pair_mqtt import SHOWN_REFUSALS, PairingOutcome, UnitPairing
from lfr_tools.audit.cli import main as audit_main
from lfr_tools.audit.report import read_events
from lfr_tools.audit.verify import verify
from lfr_tools.handset.cli import HandsetClient, HandsetKeys, unit_key_file
from lfr_tools.handset.cli import main as handset_main
from lfr_tools.handset.pairing import pair_with_unit
from mqtt_fixtures import Collector, unit_mqtt_config

UNIT = "unit-a"  # the broker fixture lets handset-1 pair with unit-a
HANDSET = "handset-1"
WAIT_S = 10.0

pytestmark = pytest.mark.broker


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def wrong(code: str) -> str:
    return f"{(int(normalise_code(code)) + 1) % 10**8:08d}"


class UnitSide:
    """The unit's pairing session on the broker, served on a thread until it ends."""

    def __init__(self, broker: MosquittoBroker, handsets_dir: Path, clock: Clock | None = None) -> None:
        self.signer = Ed25519PrivateKey.generate()
        self.sealing = X25519PrivateKey.generate()
        extra: dict[str, Any] = {"now": clock} if clock else {}
        self.session = PairingSession(UNIT, self.sealing.public_key(), self.signer, **extra)
        tls = broker.client(layout.pairing_identity(UNIT))  # the daemon keeps the unit's own identity
        self.refusals: queue.Queue[str] = queue.Queue()
        self.audit_path = handsets_dir / "audit" / layout.PAIRING_AUDIT_LOG
        self.audit_path.parent.mkdir(exist_ok=True)
        self.audit = AuditLog.open(self.audit_path, UNIT)
        self.pairing = UnitPairing(
            self.session,
            broker.host,
            broker.port,
            (tls.ca_file, tls.cert_file, tls.key_file),
            handsets_dir,
            audit=self.audit,
            prefix=broker.prefix,
            on_refusal=self.refusals.put,
        )
        self.outcome: PairingOutcome | None = None
        self.pairing.open()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.outcome = self.pairing.serve()
        self.pairing.close(self.outcome.result)
        self.audit.close()

    def finish(self) -> PairingOutcome:
        self._thread.join(WAIT_S)
        assert not self._thread.is_alive() and self.outcome is not None
        return self.outcome

    def stop(self) -> PairingOutcome:
        self.pairing.cancel()
        return self.finish()


def handset_pair(broker: MosquittoBroker, code: str, keys: HandsetKeys) -> Any:
    tls = broker.client(keys.handset_id)
    return pair_with_unit(
        keys.handset_id,
        code,
        keys.sealing,
        keys.signing,
        UNIT,
        broker.host,
        broker.port,
        (tls.ca_file, tls.cert_file, tls.key_file),
        prefix=broker.prefix,
        timeout_s=WAIT_S,
    )


def write_unit(tmp_path: Path, broker: MosquittoBroker) -> tuple[Path, Path, Path]:
    """A provisioned unit in tmp: its keys, handsets folder and a config pointing at the test broker."""
    keys, handsets_dir = tmp_path / "unit" / "keys", tmp_path / "unit" / "handsets"
    keys.mkdir(parents=True)
    handsets_dir.mkdir()
    keyfiles.save_private_key(keys / layout.UNIT_ED25519_KEY, Ed25519PrivateKey.generate())
    keyfiles.save_private_key(keys / layout.UNIT_X25519_KEY, X25519PrivateKey.generate())
    tls = broker.pki.unit(UNIT)  # unit.crt and pairing.crt for one key, as `lfr-provision ca sign` issues them
    config = tmp_path / "unit" / "config.toml"
    config.write_text(
        f'[unit]\nid = "{UNIT}"\nkeys_dir = "{keys}"\naudit_log = "{tmp_path / "unit" / "audit.jsonl"}"\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nca_file = "{tls.ca_file}"\n'
        f'cert_file = "{tls.cert_file}"\nkey_file = "{tls.key_file}"\n\n'
        f'[alerts]\nhandsets_dir = "{handsets_dir}"\n'
    )
    return config, keys, handsets_dir


def test_right_code_pairs_and_the_handset_opens_the_units_next_alert(broker: MosquittoBroker, tmp_path: Path) -> None:
    config, unit_keys, handsets_dir = write_unit(tmp_path, broker)
    lines: queue.Queue[str] = queue.Queue()
    result: list[int] = []
    technician = threading.Thread(
        target=lambda: result.append(pair_handset(config, timeout_s=60, emit=lines.put)), daemon=True
    )
    technician.start()
    code = ""
    while not code:
        match = re.search(r"Code:\s+(\d{4}-\d{4})", lines.get(timeout=WAIT_S))
        code = match.group(1) if match else ""

    tls = broker.client(HANDSET)
    phone_dir = tmp_path / "phone"
    args = ["--unit", UNIT, "--broker", f"{broker.host}:{broker.port}", "--ca", str(tls.ca_file)]
    args += ["--cert", str(tls.cert_file), "--key", str(tls.key_file), "--keys", str(phone_dir)]
    assert handset_main(["pair", "--code", code, *args]) == 0
    technician.join(WAIT_S)
    assert result == [0]
    told = list(lines.queue)
    assert any("no restart" in line or "nothing to restart" in line for line in told)
    pairing_log = tmp_path / "unit" / layout.PAIRING_AUDIT_LOG  # beside the unit's audit log
    assert verify(pairing_log, unit_id=UNIT).ok
    assert audit_main(["verify", str(pairing_log)]) == 0  # as docs/pairing.md says to check it
    paired = [e for e in read_events(pairing_log, UNIT) if isinstance(e, HandsetPaired)]
    assert [(e.handset_id, e.replaced) for e in paired] == [(HANDSET, False)]
    assert any(str(pairing_log) in line for line in told)

    # The unit registered the handset's keys; the handset (its id from its certificate) has the unit's.
    registry = load_handsets(handsets_dir)
    phone = HandsetKeys.load(phone_dir)
    assert list(registry) == [HANDSET] == [phone.handset_id]
    unit_signer = keyfiles.load_ed25519_private(unit_keys / layout.UNIT_ED25519_KEY)
    stored = keyfiles.load_ed25519_public(unit_key_file(phone_dir, UNIT))
    assert stored.public_bytes_raw() == unit_signer.public_key().public_bytes_raw()

    # A real alert, sealed to the registry and signed by the unit, opens on the paired handset.
    unit_mqtt = UnitMqttClient(UNIT, unit_mqtt_config(broker, UNIT))
    channel = HandsetChannel(
        unit_mqtt,
        unit_mqtt.topics,
        UNIT,
        unit_signer,
        lambda: load_handsets(handsets_dir),
        AlertsConfig(),
        audit=type("NoAudit", (), {"append": lambda self, event: None})(),
    )
    client = HandsetClient(phone, UNIT, stored, broker.host, broker.port, (tls.ca_file, tls.cert_file, tls.key_file))
    unit_mqtt.start()
    client.start()
    try:
        assert unit_mqtt.connected.wait(WAIT_S)
        alert = Alert("a-1", UNIT, "cam0", time.time(), 0.7, 0.55, "S-1", "wanted", "", b"\xff\xd8l", b"\xff\xd8w")
        channel.deliver(alert)
        received = client.alerts.get(timeout=WAIT_S)
        assert received.alert.alert_id == "a-1" and received.alert.live_jpeg == b"\xff\xd8l"
    finally:
        client.stop()
        unit_mqtt.stop()


def test_wrong_code_is_refused_and_registers_nothing(broker: MosquittoBroker, tmp_path: Path) -> None:
    unit = UnitSide(broker, tmp_path)
    phone = HandsetKeys.generate(tmp_path / "phone", HANDSET)
    try:
        with pytest.raises(PairingError, match=rf"wrong pairing code \({MAX_ATTEMPTS - 1} tries left\)"):
            handset_pair(broker, wrong(unit.session.code), phone)
        assert "wrong pairing code" in unit.refusals.get(timeout=WAIT_S)
        assert not list(tmp_path.glob("*.json"))
        # the officer mistyped once: the right code still works
        paired_unit = handset_pair(broker, unit.session.code, phone)
        assert paired_unit.unit_id == UNIT
    finally:
        outcome = unit.stop()
    assert outcome.result == "paired" and outcome.registry_file == tmp_path / f"{HANDSET}.json"
    assert len(outcome.refusals) == 1


def request_on_the_wire(handset: Collector, topics: Topics, code: str, keys: HandsetKeys) -> bytes:
    """The request a handset sends for the open offer: what anyone able to read the topic would record."""
    assert handset.subscribe(topics.pairing_offer) == [1]
    offer = b""
    while json.loads(offer or b"{}").get("type") != "offer":  # skip the last session's `closed` notice
        offer = handset.next_on(topics.pairing_offer, timeout=WAIT_S).payload
    return HandsetPairing(keys.handset_id, code, keys.sealing, keys.signing).request(offer)


def test_a_recorded_request_replayed_later_is_refused(broker: MosquittoBroker, tmp_path: Path) -> None:
    topics = Topics.for_unit(broker.prefix, UNIT)
    phone = HandsetKeys.generate(tmp_path / "phone", HANDSET)
    handset = Collector(broker, HANDSET)  # the handset's one connection: it sends, and later replays
    try:
        first = UnitSide(broker, tmp_path)
        recorded = request_on_the_wire(handset, topics, first.session.code, phone)
        handset.publish(topics.pairing_request_for(HANDSET), recorded)
        assert first.finish().result == "paired"
        (tmp_path / f"{HANDSET}.json").unlink()  # the technician unpairs it

        second = UnitSide(broker, tmp_path)
        handset.publish(topics.pairing_request_for(HANDSET), recorded)
        assert "another (older) pairing session" in second.refusals.get(timeout=WAIT_S)

        # within one session too: a request seen once is not taken again, and costs no try
        rival = HandsetKeys.generate(tmp_path / "rival", HANDSET)
        wrong_request = request_on_the_wire(handset, topics, wrong(second.session.code), rival)
        handset.publish(topics.pairing_request_for(HANDSET), wrong_request)
        assert "wrong pairing code" in second.refusals.get(timeout=WAIT_S)
        tries_left = second.session.attempts_left
        handset.publish(topics.pairing_request_for(HANDSET), wrong_request)
        assert "replayed" in second.refusals.get(timeout=WAIT_S)
        assert second.session.attempts_left == tries_left == MAX_ATTEMPTS - 1
        assert not (tmp_path / f"{HANDSET}.json").exists()
        assert second.stop().result == "cancelled"
    finally:
        handset.close()


def test_code_expires_and_a_late_handset_is_told_so(broker: MosquittoBroker, tmp_path: Path) -> None:
    clock = Clock()
    unit = UnitSide(broker, tmp_path, clock)
    clock.now += unit.session.ttl_s + 1  # five minutes and a second later
    assert unit.finish().result == "expired"
    phone = HandsetKeys.generate(tmp_path / "phone", HANDSET)
    with pytest.raises(PairingError, match="last code expired"):
        handset_pair(broker, unit.session.code, phone)
    assert not list(tmp_path.glob("*.json"))


def test_too_many_wrong_codes_void_the_code_even_for_the_right_one(broker: MosquittoBroker, tmp_path: Path) -> None:
    unit = UnitSide(broker, tmp_path)
    phone = HandsetKeys.generate(tmp_path / "phone", HANDSET)
    for attempt in range(MAX_ATTEMPTS):
        with pytest.raises(PairingError, match="wrong pairing code") as refused:
            handset_pair(broker, wrong(unit.session.code), phone)
        if attempt == MAX_ATTEMPTS - 1:
            assert "void" in str(refused.value)
    outcome = unit.finish()
    assert outcome.result == "voided" and len(outcome.refusals) == MAX_ATTEMPTS
    with pytest.raises(PairingError, match="voided after too many wrong tries"):
        handset_pair(broker, unit.session.code, phone)
    assert not list(tmp_path.glob("*.json"))


def test_handset_pair_refuses_a_malformed_code_before_touching_the_broker(tmp_path: Path) -> None:
    missing = tmp_path / "none.crt"
    args = ["pair", "--code", "12-34", "--unit", UNIT, "--broker", "127.0.0.1:1", "--ca", str(missing)]
    args += ["--cert", str(missing), "--key", str(missing), "--keys", str(tmp_path / "k"), "--id", HANDSET]
    assert handset_main(args) == 1
    assert not (tmp_path / "k").exists()  # nothing generated for a code that cannot be right


def test_pair_handset_names_a_broker_that_is_not_there(broker: MosquittoBroker, tmp_path: Path) -> None:
    config, _, _ = write_unit(tmp_path, broker)
    broker.stop()
    from lfr_provision.identity import ProvisionError

    with pytest.raises(ProvisionError, match=rf"broker 127\.0\.0\.1:{broker.port}: connection refused"):
        pair_handset(config, emit=lambda line: None)


def test_a_handset_id_other_than_its_certificate_name_is_refused_before_sending(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    unit = UnitSide(broker, tmp_path)
    try:
        impostor = HandsetKeys.generate(tmp_path / "phone", "handset-9")
        tls = broker.client(HANDSET)  # handset-1's certificate, claiming to be handset-9
        with pytest.raises(PairingError, match="is not the CN of its certificate"):
            pair_with_unit(
                impostor.handset_id,
                unit.session.code,
                impostor.sealing,
                impostor.signing,
                UNIT,
                broker.host,
                broker.port,
                (tls.ca_file, tls.cert_file, tls.key_file),
                timeout_s=WAIT_S,
            )
    finally:
        assert unit.stop().result == "cancelled"


IMPOSTOR, VICTIM = "handset-13", "handset-12"


@pytest.fixture
def two_handsets(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker on which handset-12 and handset-13 are both enrolled for unit-a."""
    with MosquittoBroker(tmp_path / "broker2", handsets={VICTIM: [UNIT], IMPOSTOR: [UNIT]}) as running:
        yield running


def test_a_code_issued_to_one_handset_cannot_pair_another_by_naming_it(
    two_handsets: MosquittoBroker, tmp_path: Path
) -> None:
    # Found (issue 12, item 6): a code issued to pair handset-13, used over handset-13's certificate with a
    # request naming handset-12, overwrote handset-12's keys.
    broker, topics = two_handsets, Topics.for_unit(two_handsets.prefix, UNIT)
    first = UnitSide(broker, tmp_path)
    handset_pair(broker, first.session.code, HandsetKeys.generate(tmp_path / "victim", VICTIM))
    assert first.finish().result == "paired"
    victim_file = tmp_path / f"{VICTIM}.json"
    victim_keys = victim_file.read_bytes()

    unit = UnitSide(broker, tmp_path)  # the technician's new code, given to the officer holding handset-13
    attacker = HandsetKeys.generate(tmp_path / "attacker", VICTIM)  # keys the impostor wants sealed alerts for
    impostor = Collector(broker, IMPOSTOR)  # handset-13's own certificate
    try:
        assert impostor.subscribe(topics.pairing_confirm_for(IMPOSTOR)) == [1]
        request = request_on_the_wire(impostor, topics, unit.session.code, attacker)  # names handset-12
        assert json.loads(request)["handset_id"] == VICTIM
        # As it was sent when found (the one request topic), and on handset-12's own: the broker lets neither
        # through. Then on the only request topic handset-13's certificate may write: the unit refuses it.
        impostor.publish(topics.pairing_request, request)
        impostor.publish(topics.pairing_request_for(VICTIM), request)
        impostor.publish(topics.pairing_request_for(IMPOSTOR), request)
        reason = unit.refusals.get(timeout=WAIT_S)
        assert f"names handset '{VICTIM}' but was sent with the certificate of '{IMPOSTOR}'" in reason
        answer = json.loads(impostor.next_on(topics.pairing_confirm_for(IMPOSTOR), timeout=WAIT_S).payload)
        assert answer["type"] == "refused" and answer["handset_id"] == IMPOSTOR and reason.startswith(answer["reason"])
        assert unit.refusals.empty()  # one request reached the unit: the earlier two were dropped by the broker
        assert unit.session.attempts_left == MAX_ATTEMPTS and not unit.session.used
    finally:
        impostor.close()
        outcome = unit.stop()
    assert outcome.result == "cancelled" and len(outcome.refusals) == 1
    assert victim_file.read_bytes() == victim_keys  # handset-12's keys untouched
    assert not (tmp_path / f"{IMPOSTOR}.json").exists()
    assert verify(unit.audit_path, unit_id=UNIT).ok
    refused = [e for e in read_events(unit.audit_path, UNIT) if isinstance(e, PairingRefused)]
    assert [(e.sender, e.claimed, e.session) for e in refused] == [(IMPOSTOR, VICTIM, unit.session.session_id)]
    assert "names handset" in refused[0].reason


def test_no_certificate_can_publish_on_another_handsets_request_topic(two_handsets: MosquittoBroker) -> None:
    broker, topics = two_handsets, Topics.for_unit(two_handsets.prefix, UNIT)
    helper = Collector(broker, layout.pairing_identity(UNIT))  # what pair-handset subscribes to
    assert helper.subscribe(topics.pairing_requests) == [1]
    senders = [Collector(broker, name) for name in (IMPOSTOR, UNIT, "command-centre")]
    try:
        for sender in senders:
            sender.publish(topics.pairing_request_for(VICTIM), f"from {sender._connection.name}".encode())
            sender.publish(topics.pairing_request, b"on the old shared topic")
        victim = Collector(broker, VICTIM)
        victim.publish(topics.pairing_request_for(VICTIM), b"from handset-12")
        senders[0].publish(topics.pairing_request_for(IMPOSTOR), b"from handset-13")
        got = [helper.next(timeout=WAIT_S) for _ in range(2)]
        victim.close()
    finally:
        for sender in senders:
            sender.close()
    # Each sender's own messages arrive in order, so those published before the two that arrived were dropped.
    assert sorted((m.topic, m.payload) for m in got) == [
        (topics.pairing_request_for(VICTIM), b"from handset-12"),
        (topics.pairing_request_for(IMPOSTOR), b"from handset-13"),
    ]
    assert helper.messages.empty()
    helper.close()


def test_a_broker_acl_from_before_the_per_handset_request_topic_is_named_by_the_handset(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    # The upgrade trap: an ACL written before requests went to pairing/request/<handset> lets the handset read
    # the offer but drops its request; the officer is told what to regenerate, not only "no answer".
    old_acl = broker.acl_file.read_text().replace(f"pairing/request/{HANDSET}", "pairing/request")
    broker.acl_file.write_text(old_acl.replace("pairing/request/+", "pairing/request"))
    broker.restart()
    unit = UnitSide(broker, tmp_path)
    phone = HandsetKeys.generate(tmp_path / "phone", HANDSET)
    tls = broker.client(HANDSET)
    try:
        with pytest.raises(PairingError, match=r"did not answer.*regenerate it with `lfr-provision broker config`"):
            pair_with_unit(
                HANDSET, unit.session.code, phone.sealing, phone.signing, UNIT, broker.host, broker.port,
                (tls.ca_file, tls.cert_file, tls.key_file), prefix=broker.prefix, timeout_s=3,
            )  # fmt: skip
    finally:
        assert unit.stop().result == "cancelled"


def test_a_flood_of_refused_requests_is_counted_not_written_line_by_line(
    broker: MosquittoBroker, tmp_path: Path
) -> None:
    topics = Topics.for_unit(broker.prefix, UNIT)
    unit = UnitSide(broker, tmp_path)
    flood = Collector(broker, HANDSET)  # an enrolled handset sending junk on its own request topic
    for i in range(SHOWN_REFUSALS + 40):
        flood.publish(topics.pairing_request_for(HANDSET), f"junk {i}".encode())
    flood.close()  # the same identity connects next: one connection per certificate
    handset_pair(broker, unit.session.code, HandsetKeys.generate(tmp_path / "phone", HANDSET))  # costs no try
    outcome = unit.finish()
    assert outcome.result == "paired"
    assert len(outcome.refusals) == SHOWN_REFUSALS and outcome.more_refusals == {HANDSET: 40}
    refused = [e for e in read_events(unit.audit_path, UNIT) if isinstance(e, PairingRefused)]
    assert len(refused) == SHOWN_REFUSALS + 1 and sum(e.count for e in refused) == SHOWN_REFUSALS + 40
    assert refused[-1].count == 40 and refused[-1].sender == HANDSET
