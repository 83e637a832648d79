"""Broker fixtures for every MQTT test: a real mosquitto with mutual TLS and the project's ACL."""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from lfr_edge.comms.mqtt import tls_client
from lfr_edge.config import MqttConfig
from lfr_hwsim.broker import MosquittoBroker, mosquitto_binary


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A running mosquitto on a free loopback port; handset-1 is paired with unit-a."""
    try:
        mosquitto_binary()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    with MosquittoBroker(tmp_path / "broker", handsets={"handset-1": ["unit-a"]}) as running:
        yield running


def unit_mqtt_config(broker: MosquittoBroker, name: str, **overrides: Any) -> MqttConfig:
    tls = broker.client(name)
    cfg = MqttConfig(
        host=broker.host,
        port=broker.port,
        ca_file=tls.ca_file,
        cert_file=tls.cert_file,
        key_file=tls.key_file,
        topic_prefix=broker.prefix,
        keepalive_s=5,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
    )
    return replace(cfg, **overrides)


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool


class Collector:
    """A connected test client (any certificate name) that records what it receives in a queue."""

    def __init__(self, broker: MosquittoBroker, name: str) -> None:
        tls = broker.client(name)
        self.client = tls_client(f"{name}-{secrets.token_hex(3)}", tls.ca_file, tls.cert_file, tls.key_file)
        self.messages: queue.Queue[Received] = queue.Queue()
        self.subacks: queue.Queue[list[int]] = queue.Queue()
        self._up = threading.Event()
        self.client.on_connect = lambda c, u, f, reason, p: self._up.set()
        self.client.on_message = lambda c, u, m: self.messages.put(
            Received(m.topic, bytes(m.payload), m.retain)
        )
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put([int(x.value) for x in codes])
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self._up.wait(10), f"{name} could not connect: {broker.log_tail()}"

    def subscribe(self, topic: str) -> list[int]:
        self.client.subscribe(topic, 1)
        return self.subacks.get(timeout=10)

    def next(self, timeout: float = 10.0) -> Received:
        return self.messages.get(timeout=timeout)

    def next_on(self, topic: str, timeout: float = 10.0) -> Received:
        """The next message on `topic`, skipping others."""
        while True:
            msg = self.next(timeout)
            if paho.topic_matches_sub(topic, msg.topic):
                return msg

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
