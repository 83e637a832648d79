"""The unit's MQTT client and the broker's ACL, against a real mosquitto with mutual TLS."""

from __future__ import annotations

import json
import logging
import queue
import time

import pytest

from lfr_contracts.status import StatusError, UnitStatus, WatchlistStatus
from lfr_contracts.topics import Topics
from lfr_edge.comms.mqtt import Overflow, UnitMqttClient
from lfr_hwsim.broker import MosquittoBroker, free_port
from mqtt_fixtures import Collector, unit_mqtt_config

pytestmark = pytest.mark.broker


def status_of(payload: bytes) -> dict[str, object]:
    data = json.loads(payload)
    assert isinstance(data, dict)
    return data


def test_topics_follow_the_design_names() -> None:
    topics = Topics.for_unit("lfr/v1", "van-7")
    assert topics.status == "lfr/v1/units/van-7/status"
    assert topics.watchlist_ack == "lfr/v1/units/van-7/watchlist/ack"
    assert topics.decision_from("handset-1") == "lfr/v1/units/van-7/decisions/from/handset-1"
    assert topics.receipt_from("handset-1") == "lfr/v1/units/van-7/alerts/ack/from/handset-1"
    assert Topics.handset_of(topics.decisions, topics.decision_from("h-2")) == "h-2"
    assert Topics.handset_of(topics.decisions, topics.decision_answer_for("h-2")) is None


def test_a_unit_cannot_read_another_units_watchlist(broker: MosquittoBroker) -> None:
    centre = Collector(broker, "command-centre")
    centre.publish("lfr/v1/units/unit-b/watchlist", b"for b", retain=True)
    centre.publish("lfr/v1/units/unit-a/watchlist", b"for a", retain=True)
    spy = Collector(broker, "unit-a")
    spy.subscribe("lfr/v1/units/unit-b/watchlist")
    spy.subscribe("lfr/v1/units/unit-a/watchlist")
    first = spy.next()  # retained messages arrive in subscription order: b's would come first
    assert (first.topic, first.payload) == ("lfr/v1/units/unit-a/watchlist", b"for a")
    assert spy.messages.empty()
    spy.close()
    centre.close()


def test_a_unit_cannot_write_another_units_status_or_any_watchlist(broker: MosquittoBroker) -> None:
    watcher = Collector(broker, "command-centre")
    watcher.subscribe("lfr/v1/units/+/status")
    intruder = Collector(broker, "unit-a")
    intruder.publish("lfr/v1/units/unit-b/status", b"forged")
    intruder.publish("lfr/v1/units/unit-a/watchlist", b"self-made list", retain=True)
    intruder.publish("lfr/v1/units/unit-a/status", b"own")  # allowed: the marker that the others were dropped
    msg = watcher.next()
    assert (msg.topic, msg.payload) == ("lfr/v1/units/unit-a/status", b"own")
    handset = Collector(broker, "handset-1")
    handset.publish("lfr/v1/units/unit-a/decisions/from/handset-1", b"marker", retain=True)
    reader = Collector(broker, "unit-a")
    reader.subscribe("lfr/v1/units/unit-a/watchlist")
    reader.subscribe("lfr/v1/units/unit-a/decisions/from/+")
    first = reader.next()  # a retained watchlist would have come before the decision marker
    assert (first.topic, first.payload) == ("lfr/v1/units/unit-a/decisions/from/handset-1", b"marker")
    for c in (watcher, intruder, reader, handset):
        c.close()


def test_birth_will_and_stopped_statuses_are_retained(broker: MosquittoBroker) -> None:
    watcher = Collector(broker, "command-centre")
    watcher.subscribe("lfr/v1/units/unit-a/status")
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
    unit.start()
    assert unit.connected.wait(10)
    birth = status_of(watcher.next().payload)
    assert birth["state"] == "online" and birth["unit"] == "unit-a"
    unit.stop()
    stopped = status_of(watcher.next().payload)
    assert stopped["state"] == "stopped" and stopped["seq"] == birth["seq"]
    late = Collector(broker, "command-centre")
    late.subscribe("lfr/v1/units/unit-a/status")
    retained = late.next()
    assert retained.retain and status_of(retained.payload)["state"] == "stopped"
    watcher.close()
    late.close()


def test_last_will_says_offline_when_the_connection_dies(broker: MosquittoBroker) -> None:
    watcher = Collector(broker, "command-centre")
    watcher.subscribe("lfr/v1/units/unit-a/status")
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
    unit.start()
    assert unit.connected.wait(10)
    assert status_of(watcher.next().payload)["state"] == "online"
    unit._client.loop_stop()  # the process "dies": the socket is dropped without DISCONNECT
    sock = unit._client.socket()
    assert sock is not None
    sock.close()
    will = status_of(watcher.next().payload)
    assert will["state"] == "offline" and will["seq"] == 0
    watcher.close()


def test_broker_restart_reconnects_resubscribes_and_republishes_birth(broker: MosquittoBroker) -> None:
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
    received: queue.Queue[bytes] = queue.Queue()
    unit.subscribe(unit.topics.watchlist, lambda topic, payload: received.put(payload), max_bytes=1024)
    unit.start()
    assert unit.connected.wait(10)
    broker.restart()
    watcher = Collector(broker, "command-centre")
    watcher.subscribe("lfr/v1/units/unit-a/status")
    # The broker may still retain the first connection's status until the unit has reconnected.
    birth = status_of(watcher.next_on("lfr/v1/units/unit-a/status", timeout=30).payload)
    while birth["seq"] == 0:
        birth = status_of(watcher.next_on("lfr/v1/units/unit-a/status", timeout=30).payload)
    assert birth["state"] == "online" and birth["seq"] == 1  # the second connection's birth
    assert unit.connect_count == 2
    watcher.publish(unit.topics.watchlist, b"after restart")  # not retained: needs a live subscription
    assert received.get(timeout=10) == b"after restart"
    unit.stop()
    watcher.close()


def test_publish_reports_whether_the_message_was_queued(broker: MosquittoBroker) -> None:
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
    unit.start()
    assert unit.connected.wait(10)
    assert unit.publish(unit.topics.telemetry, b"{}", qos=1)
    unit.stop()
    assert not unit.publish(unit.topics.telemetry, b"{}", qos=0)


def test_packets_go_out_at_once_without_nagle_delay(broker: MosquittoBroker) -> None:
    """An alert published right after a QoS 0 message must not wait for the broker's delayed ACK."""
    import socket

    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
    unit.start()
    try:
        assert unit.connected.wait(10)
        sock = unit._client.socket()
        assert isinstance(sock, socket.socket) and sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        unit.stop()


def test_a_flood_of_decisions_cannot_delay_or_drop_the_command_centres_close(broker: MosquittoBroker) -> None:
    """3,000 junk decisions into a slow handler: the watchlist topic has its own queue and thread, so the
    command centre's message is handled within a second, and what the flood lost is counted, not logged
    line by line."""
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
    closes: queue.Queue[float] = queue.Queue()
    unit.subscribe(
        unit.topics.watchlist, lambda t, p: closes.put(time.monotonic()), max_bytes=1024, overflow=Overflow.WAIT
    )
    decisions = unit.topics.every_sender(unit.topics.decisions)
    unit.subscribe(decisions, lambda t, p: time.sleep(0.005), max_bytes=4096, queue_size=64)
    unit.start()
    handset, centre = Collector(broker, "handset-1"), Collector(broker, "command-centre")
    try:
        assert unit.connected.wait(10)
        for i in range(3000):
            handset.client.publish(unit.topics.decision_from("handset-1"), b"junk %d" % i, qos=0)
        time.sleep(0.2)  # the flood is arriving
        sent = time.monotonic()
        centre.publish(unit.topics.watchlist, b"LFRC close", retain=False)
        handled = closes.get(timeout=5)
        assert handled - sent < 1.0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = unit.subscription_stats()[decisions]
            if stats.delivered + stats.dropped_full >= 3000:
                break
            time.sleep(0.1)
        assert stats.dropped_full > 0 and stats.delivered + stats.dropped_full == 3000
    finally:
        handset.close()
        centre.close()
        unit.stop()


def _received(got: queue.Queue[bytes], payload: bytes, timeout_s: float) -> bool:
    try:
        return got.get(timeout=timeout_s) == payload
    except queue.Empty:
        return False


def test_an_oversize_payload_is_refused_before_the_handler(broker: MosquittoBroker) -> None:
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"))
    got: queue.Queue[bytes] = queue.Queue()
    unit.subscribe(unit.topics.every_sender(unit.topics.decisions), lambda t, p: got.put(p), max_bytes=100)
    unit.start()
    handset = Collector(broker, "handset-1")
    try:
        assert unit.connected.wait(10)
        # `connected` is set as the unit sends its SUBSCRIBE: a message may reach the broker first. Probes until
        # one comes back show the subscription is live (a loaded machine lost the oversize message otherwise).
        deadline = time.monotonic() + 10
        while not _received(got, b"probe", 0.2) and time.monotonic() < deadline:
            handset.publish(unit.topics.decision_from("handset-1"), b"probe")
        handset.publish(unit.topics.decision_from("handset-1"), b"x" * 5000)
        handset.publish(unit.topics.decision_from("handset-1"), b"small")
        assert next(p for p in iter(lambda: got.get(timeout=5), None) if p != b"probe") == b"small"
        assert unit.subscription_stats()[unit.topics.every_sender(unit.topics.decisions)].dropped_oversize == 1
    finally:
        handset.close()
        unit.stop()


def test_an_unreachable_broker_is_logged_with_the_reason_within_5_s(
    broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    closed_port = free_port()
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a", port=closed_port))
    caplog.set_level(logging.ERROR, logger="lfr_edge.comms.mqtt")
    unit.start()
    try:
        deadline = time.monotonic() + 5
        while unit.connection_problem() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        problem = unit.connection_problem()
        assert problem is not None and f":{closed_port}" in problem and "connection refused" in problem
        assert any("connection refused" in r.getMessage() for r in caplog.records)
        time.sleep(1.5)  # several more attempts with the test's short backoff: still one line
        assert sum("connection refused" in r.getMessage() for r in caplog.records) == 1
    finally:
        unit.stop()


def test_the_retained_status_says_which_watchlist_and_model_the_unit_has(broker: MosquittoBroker) -> None:
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"), model_id="mobilefacenet/int8/abc")
    unit.set_watchlist_status(WatchlistStatus("refused", version=7, reason="wrong_unit", detail="for unit-b"))
    unit.start()
    watcher = Collector(broker, "command-centre")
    try:
        assert unit.connected.wait(10)
        watcher.subscribe(unit.topics.status)
        birth = UnitStatus.decode(watcher.next_on(unit.topics.status).payload)
        assert birth.state == "online" and birth.model == "mobilefacenet/int8/abc"
        assert birth.watchlist is not None and birth.watchlist.summary() == "refused: wrong_unit (for unit-b)"
        unit.set_watchlist_status(WatchlistStatus("active", "op-1", 8, 12, 2e9))
        update = UnitStatus.decode(watcher.next_on(unit.topics.status).payload)
        assert update.seq == birth.seq and update.watchlist == WatchlistStatus("active", "op-1", 8, 12, 2e9)
    finally:
        watcher.close()
        unit.stop()
    with pytest.raises(StatusError):
        UnitStatus.decode(b'{"state": "online", "unit": "u", "time": "t", "seq": true}')
