"""Broker fixtures for every MQTT test: a real mosquitto with mutual TLS and the project's ACL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lfr_edge.config import MqttConfig
from lfr_hwsim.broker import Collector, MosquittoBroker, Received, mosquitto_binary

__all__ = ["Collector", "Received", "broker", "unit_mqtt_config"]


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
