"""A short-lived client of the broker, for people's tools rather than the daemon: the technician's pairing
helper, broker check and self-test (lfr_provision), the handset's side of pairing. It connects now with mutual
TLS and says why it could not; its messages land in a queue and subscribe() waits for the broker's SUBACK.
The daemon's own client, with reconnect and availability, is lfr_edge.comms.mqtt.UnitMqttClient.
"""

from __future__ import annotations

import queue
import ssl
from pathlib import Path

import paho.mqtt.client as paho

from lfr_edge.comms.mqtt import tls_client

WAIT_S = 10.0  # upper bound for one broker round trip (subscribe, publish)


def connect_tls(
    client_id: str,
    host: str,
    port: int,
    tls: tuple[Path, Path, Path],  # CA, certificate, key
    *,
    keepalive: int = 10,
    timeout_s: float = 10.0,
) -> paho.Client:
    """Connect now with mutual TLS and return once the broker accepted (for short-lived tools: pairing,
    self-test). Raises ConnectionError naming the broker and the reason (TLS files, trust, refusal)."""
    where = f"broker {host}:{port}"
    try:
        client = tls_client(client_id, *tls)
    except (OSError, ssl.SSLError, ValueError) as exc:
        files = ", ".join(str(p) for p in tls)
        raise ConnectionError(f"{where}: cannot use the TLS files ({files}): {exc}") from exc
    outcome: queue.Queue[str | None] = queue.Queue()
    client.on_connect = lambda c, u, f, reason, p: outcome.put(
        f"the broker refused the connection ({reason})" if reason.is_failure else None
    )
    client.on_disconnect = lambda c, u, f, reason, p: outcome.put(
        f"the broker closed the connection before accepting it ({reason}); "
        f"is the certificate {tls[1]} signed by the broker's CA and its CN allowed?"
    )
    try:
        client.connect(host, port, keepalive=keepalive)
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionError(
            f"{where}: TLS: the broker's certificate does not verify against {tls[0]} ({exc.verify_message})"
        ) from exc
    except ssl.SSLError as exc:
        raise ConnectionError(f"{where}: TLS handshake failed ({exc.reason or exc})") from exc
    except ConnectionRefusedError as exc:
        raise ConnectionError(f"{where}: connection refused (is the broker running?)") from exc
    except OSError as exc:
        raise ConnectionError(f"{where}: cannot connect ({exc.strerror or exc})") from exc
    client.loop_start()
    try:
        failure = outcome.get(timeout=timeout_s)
    except queue.Empty:
        failure = f"no answer to CONNECT within {timeout_s:g} s"
    if failure is not None:
        client.disconnect()
        client.loop_stop()
        raise ConnectionError(f"{where}: {failure}")
    client.on_connect = None
    client.on_disconnect = None
    return client


class QueuedClient:
    """A connected paho client whose messages land in a queue; subscribe() waits for the broker's SUBACK."""

    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._subacks: queue.Queue[list[int]] = queue.Queue()
        client.on_message = lambda c, u, m: self.messages.put(m)
        client.on_subscribe = lambda c, u, mid, codes, p: self._subacks.put([int(x.value) for x in codes])

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, 1)
        try:
            codes = self._subacks.get(timeout=WAIT_S)
        except queue.Empty:
            raise ConnectionError(f"the broker did not answer the subscription to {topic}") from None
        if any(code >= 0x80 for code in codes):
            raise ConnectionError(f"the broker's ACL does not let this certificate read {topic}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(WAIT_S)
        except (RuntimeError, ValueError) as exc:
            raise ConnectionError(f"publishing on {topic} failed: {exc}") from exc
        if not info.is_published():
            raise ConnectionError(f"the broker did not acknowledge the message on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
