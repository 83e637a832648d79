"""Handset alerts through a real mosquitto with mutual TLS: sealed, signed, queued, decided."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lfr_contracts.alerts import (
    MAX_DECISION_BYTES,
    Alert,
    Decision,
    DecisionKind,
    ProtocolError,
    decode_alert,
    encode_alert,
    encode_decision,
)
from lfr_contracts.audit_events import AuditEvent, DecisionRefused, OfficerDecision
from lfr_contracts.topics import Topics
from lfr_edge.alerts.handset import HandsetChannel, PairedHandset, load_handsets, parse_handset
from lfr_edge.comms.mqtt import UnitMqttClient
from lfr_edge.config import AlertsConfig
from lfr_hwsim.broker import MosquittoBroker
from lfr_tools.handset.cli import HandsetClient, HandsetKeys
from mqtt_fixtures import Collector, unit_mqtt_config


class ListAudit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self.changed = threading.Event()

    def append(self, event: AuditEvent) -> None:
        self.events.append(event)
        self.changed.set()


def make_alert(alert_id: str = "a-1", unit: str = "unit-a") -> Alert:
    return Alert(
        alert_id,
        unit,
        "cam0",
        time.time(),
        0.71,
        0.55,
        "S-0042",
        "wanted",
        "ref 12/345",
        b"\xff\xd8live",
        b"\xff\xd8watchlist",
    )


@pytest.fixture
def handset_keys(tmp_path: Path) -> HandsetKeys:
    return HandsetKeys.generate(tmp_path / "handset", "handset-1")


def paired(keys: HandsetKeys) -> dict[str, PairedHandset]:
    return {keys.handset_id: parse_handset(keys.record(), "test")}


def test_alert_round_trip_opens_only_for_a_paired_handset(handset_keys: HandsetKeys, tmp_path: Path) -> None:
    unit_key = Ed25519PrivateKey.generate()
    payload = encode_alert(make_alert(), unit_key, [paired(handset_keys)["handset-1"].sealing_key])
    got = decode_alert(payload, "unit-a", unit_key.public_key(), handset_keys.sealing)
    assert got.subject_id == "S-0042" and got.live_jpeg == b"\xff\xd8live"
    stranger = HandsetKeys.generate(tmp_path / "other", "handset-9")
    with pytest.raises(ProtocolError, match="not sealed to this key"):
        decode_alert(payload, "unit-a", unit_key.public_key(), stranger.sealing)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p[:10], "bad magic or truncated"),
        (lambda p: b"XXXX" + p[4:], "bad magic"),
        (lambda p: p[:4] + b"\x09" + p[5:], "version 9"),
        (lambda p: p[:-1] + bytes([p[-1] ^ 1]), "signature"),
        (lambda p: p[:20] + bytes([p[20] ^ 1]) + p[21:], "signature"),
    ],
)
def test_handset_refuses_garbled_or_forged_alerts(handset_keys: HandsetKeys, mutate: Any, message: str) -> None:
    unit_key = Ed25519PrivateKey.generate()
    payload = encode_alert(make_alert(), unit_key, [paired(handset_keys)["handset-1"].sealing_key])
    with pytest.raises(ProtocolError, match=message):
        decode_alert(mutate(payload), "unit-a", unit_key.public_key(), handset_keys.sealing)


def test_alert_signed_by_another_unit_is_refused(handset_keys: HandsetKeys) -> None:
    payload = encode_alert(make_alert(), Ed25519PrivateKey.generate(), [paired(handset_keys)["handset-1"].sealing_key])
    with pytest.raises(ProtocolError, match="signature"):
        decode_alert(payload, "unit-a", Ed25519PrivateKey.generate().public_key(), handset_keys.sealing)


def test_registry_skips_a_malformed_handset_file(handset_keys: HandsetKeys, tmp_path: Path) -> None:
    folder = tmp_path / "handsets"
    folder.mkdir()
    (folder / "handset-1.json").write_bytes(handset_keys.record())
    (folder / "broken.json").write_text("{not json")
    (folder / "short.json").write_text('{"handset_id": "x", "x25519_public": "00", "ed25519_public": "00"}')
    assert list(load_handsets(folder)) == ["handset-1"]


class Unit:
    """The unit's side of the alert channel, connected to the test broker as unit-a."""

    def __init__(self, broker: MosquittoBroker, handsets: dict[str, PairedHandset], **cfg: Any) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.mqtt = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
        self.audit = ListAudit()
        self.channel = HandsetChannel(
            self.mqtt,
            self.mqtt.topics.alerts,
            "unit-a",
            self.key,
            lambda: handsets,
            AlertsConfig(**cfg),
            self.audit,
        )
        self.mqtt.subscribe(self.mqtt.topics.decisions, self.channel.on_decision, max_bytes=MAX_DECISION_BYTES)

    def start(self) -> None:
        self.mqtt.start()
        assert self.mqtt.connected.wait(10)


def handset_client(broker: MosquittoBroker, keys: HandsetKeys, unit: Unit) -> HandsetClient:
    tls = broker.client(keys.handset_id)
    client = HandsetClient(
        keys,
        "unit-a",
        unit.key.public_key(),
        broker.host,
        broker.port,
        (tls.ca_file, tls.cert_file, tls.key_file),
        broker.prefix,
    )
    client.start()
    return client


@pytest.mark.broker
def test_alert_reaches_the_paired_handset_and_its_decision_is_audited(
    broker: MosquittoBroker, handset_keys: HandsetKeys
) -> None:
    unit = Unit(broker, paired(handset_keys))
    unit.start()
    phone = handset_client(broker, handset_keys, unit)
    try:
        unit.channel.deliver(make_alert("a-7"))
        got = phone.alerts.get(timeout=10)
        assert got.alert.alert_id == "a-7" and got.alert.score == pytest.approx(0.71)
        phone.decide("a-7", DecisionKind.ENGAGE)
        assert unit.audit.changed.wait(10)
        assert unit.audit.events == [OfficerDecision("a-7", "handset-1", DecisionKind.ENGAGE)]
        phone.decide("a-7", DecisionKind.ENGAGE)  # a redelivery
        deadline = time.monotonic() + 10
        while unit.channel.stats.duplicate_decisions == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert unit.channel.stats.duplicate_decisions == 1
        assert len(unit.audit.events) == 1
    finally:
        phone.stop()
        unit.mqtt.stop()


@pytest.mark.broker
def test_bad_decisions_are_refused_and_audited(
    broker: MosquittoBroker, handset_keys: HandsetKeys, tmp_path: Path
) -> None:
    unit = Unit(broker, paired(handset_keys))
    unit.start()
    unit.channel.deliver(make_alert("a-1"))
    rogue = HandsetKeys.generate(tmp_path / "rogue", "handset-1")  # same id, other key: not the paired one
    sender = Collector(broker, "handset-1")
    topic = Topics.for_unit(broker.prefix, "unit-a").decisions
    engage = DecisionKind.ENGAGE
    cases = [
        b"garbage{",
        b'{"v": 1}',
        encode_decision(Decision("a-1", "unit-a", "handset-1", engage, time.time()), rogue.signing),
        encode_decision(Decision("a-404", "unit-a", "handset-1", engage, time.time()), handset_keys.signing),
        encode_decision(Decision("a-1", "unit-a", "handset-7", engage, time.time()), handset_keys.signing),
        encode_decision(Decision("a-1", "unit-b", "handset-1", engage, time.time()), handset_keys.signing),
    ]
    try:
        for payload in cases:
            unit.audit.changed.clear()
            sender.publish(topic, payload)
            assert unit.audit.changed.wait(10)
        reasons = [event.reason for event in unit.audit.events if isinstance(event, DecisionRefused)]
        assert len(reasons) == len(unit.audit.events) == len(cases)
        assert "not valid JSON" in reasons[0]
        assert "signature" in reasons[2] and "unknown alert" in reasons[3]
        assert "unknown handset" in reasons[4] and "unit-b" in reasons[5]
    finally:
        sender.close()
        unit.mqtt.stop()


@pytest.mark.broker
def test_alerts_wait_while_the_broker_is_down_and_go_out_on_reconnect(
    broker: MosquittoBroker, handset_keys: HandsetKeys
) -> None:
    unit = Unit(broker, paired(handset_keys), queue_max=10, queue_ttl_s=60)
    unit.start()
    broker.stop()
    deadline = time.monotonic() + 10
    while unit.mqtt.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    unit.channel.deliver(make_alert("queued-1"))
    unit.channel.deliver(make_alert("queued-2"))
    assert unit.channel.stats.queued == 2 and unit.channel.stats.sent == 0
    broker.start()
    phone = handset_client(broker, handset_keys, unit)
    try:
        assert unit.mqtt.connected.wait(10)
        unit.channel.flush()  # the daemon calls this on every reconnect
        ids = {phone.alerts.get(timeout=10).alert.alert_id for _ in range(2)}
        assert ids == {"queued-1", "queued-2"}
    finally:
        phone.stop()
        unit.mqtt.stop()


def test_outbox_expires_and_overflows_are_counted_not_kept(handset_keys: HandsetKeys) -> None:
    class Offline:
        connected = threading.Event()

        def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
            raise AssertionError("nothing is published while offline")

    now = [1000.0]
    channel = HandsetChannel(
        Offline(),
        "t",
        "unit-a",
        Ed25519PrivateKey.generate(),
        lambda: paired(handset_keys),
        AlertsConfig(queue_max=2, queue_ttl_s=30),
        ListAudit(),
        clock=lambda: now[0],
    )
    for i in range(3):
        channel.deliver(make_alert(f"a-{i}"))
    assert channel.stats.overflowed == 1 and channel.stats.queued == 2
    now[0] += 31
    channel.flush()
    assert channel.stats.expired == 2 and channel.stats.queued == 0
    channel.apply(AlertsConfig(queue_max=1, queue_ttl_s=5))  # a reload: the next alerts get the new limits
    for i in range(2):
        channel.deliver(make_alert(f"b-{i}"))
    assert channel.stats.overflowed == 2 and channel.stats.queued == 1
    now[0] += 6
    channel.flush()
    assert channel.stats.expired == 3 and channel.stats.queued == 0


@pytest.mark.broker
def test_a_handset_that_is_not_paired_cannot_read_the_alert(
    broker: MosquittoBroker, handset_keys: HandsetKeys, tmp_path: Path
) -> None:
    unit = Unit(broker, paired(handset_keys))
    unit.start()
    # A device holding a handset certificate (broker access) but not the paired keys sees only ciphertext.
    other_keys = HandsetKeys.generate(tmp_path / "h2", "handset-1")  # right certificate, wrong keys
    eavesdropper = handset_client(broker, other_keys, unit)
    try:
        unit.channel.deliver(make_alert("secret"))
        assert "not sealed to this key" in eavesdropper.refused.get(timeout=10)
        with pytest.raises(queue.Empty):
            eavesdropper.alerts.get_nowait()
    finally:
        eavesdropper.stop()
        unit.mqtt.stop()


def test_an_alert_with_no_paired_handset_is_counted_and_never_published(tmp_path: Path) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.connected = threading.Event()
            self.connected.set()
            self.sent: list[bytes] = []

        def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
            self.sent.append(payload)
            return True

    registry = load_handsets(tmp_path / "no-such-folder")
    mqtt = Recorder()
    channel = HandsetChannel(
        mqtt, "t", "unit-a", Ed25519PrivateKey.generate(), lambda: registry, AlertsConfig(), ListAudit()
    )
    channel.deliver(make_alert("lonely"))
    assert registry == {} and channel.stats.no_handsets == 1 and mqtt.sent == []
