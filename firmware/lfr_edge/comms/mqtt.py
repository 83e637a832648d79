"""The unit's MQTT client: mutual TLS, availability (birth, last will, stopped), reconnect, handlers.

Availability follows the Frigate/Sparkplug convention: on every (re)connect the unit publishes a
retained `online` status; the broker publishes the retained `offline` last will when the connection
dies; a clean stop publishes a retained `stopped` (a clean DISCONNECT suppresses the will). Each
status carries `seq`, which increases per connection: the will of connection N has the same `seq` as
the birth of connection N, so a consumer can ignore a late death of an older connection.

Handlers run on one dispatcher thread, never on paho's network thread, so a slow handler (applying a
watchlist) cannot stall keep-alives.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from lfr_contracts.topics import Topics, status_payload
from lfr_edge.config import MqttConfig

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
WAIT_S = 10.0  # short-lived tools: upper bound for one broker round trip (subscribe, publish)
_CONNECTED = ("", b"")  # a marker on the dispatcher queue: run the connect listeners


def tls_client(
    client_id: str, ca_file: Path, cert_file: Path, key_file: Path, *, clean_session: bool = True
) -> paho.Client:
    """A plain paho client with mutual TLS, for tools (lfr-watchlist publish, handsets, tests)."""
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=paho.MQTTv311
    )
    client.tls_set(
        ca_certs=str(ca_file),
        certfile=str(cert_file),
        keyfile=str(key_file),
        tls_version=ssl.PROTOCOL_TLS_CLIENT,
    )
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """Send each MQTT packet at once. With Nagle's algorithm on, an alert that follows a QoS 0 message
    (telemetry, which the broker never answers) waited for the broker's delayed ACK: 30-40 ms more."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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


class UnitMqttClient:
    """One unit's connection to the broker. `start()` returns at once; `connected` is set when up."""

    def __init__(self, unit_id: str, cfg: MqttConfig, *, dispatch_queue_size: int = 64) -> None:
        self.unit_id = unit_id
        self.cfg = cfg
        self.topics = Topics.for_unit(cfg.topic_prefix, unit_id)
        self.client_id = f"{unit_id}-{secrets.token_hex(4)}"
        self.connected = threading.Event()
        self.connect_count = 0
        self._seq = 0
        self._handlers: dict[str, tuple[Handler, int]] = {}
        self._connect_listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._inbox: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=dispatch_queue_size)
        self._dispatcher: threading.Thread | None = None
        self._client = tls_client(self.client_id, cfg.ca_file, cfg.cert_file, cfg.key_file)
        # paho annotates the delays as int, but its reconnect wait is plain float arithmetic: fractions of a
        # second work, and a unit reconnects 0.2 s after a broker restart rather than a whole second later.
        self._client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        self._set_will()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; reconnects with capped exponential backoff until `stop()`."""
        self._dispatcher = threading.Thread(target=self._dispatch, name=f"mqtt-dispatch-{self.unit_id}", daemon=True)
        self._dispatcher.start()
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Publish the retained `stopped` status (when connected), disconnect cleanly, end the threads."""
        if self.connected.is_set():
            info = self._client.publish(
                self.topics.status, status_payload("stopped", self.unit_id, self._seq), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: the 'stopped' status was not delivered: %s", exc)
        self.connected.clear()  # before disconnecting: a clean stop is not logged as a lost connection
        self._client.disconnect()
        self._client.loop_stop()
        if self._dispatcher is not None:
            self._inbox.put(None)
            self._dispatcher.join(timeout_s)
            self._dispatcher = None

    # publishing and subscribing ---------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        """Queue a message. True when paho accepted it (QoS 1 messages also wait out a disconnection)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return True
        return info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0

    def add_connect_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` on the dispatcher thread after each (re)connect (e.g. to flush queued alerts)."""
        with self._lock:
            self._connect_listeners.append(listener)

    def subscribe(self, topic: str, handler: Handler, *, qos: int = 1) -> None:
        """Call `handler(topic, payload)` for each message on `topic`, now and after every reconnect."""
        with self._lock:
            self._handlers[topic] = (handler, qos)
        if self.connected.is_set():
            self._client.subscribe(topic, qos)

    # paho callbacks (network thread) ----------------------------------------------------------------

    def _set_will(self) -> None:
        self._client.will_set(
            self.topics.status, status_payload("offline", self.unit_id, self._seq), qos=1, retain=True
        )

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            log.warning("mqtt: broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason)
            return
        self.connect_count += 1
        with self._lock:
            subscriptions = [(topic, qos) for topic, (_, qos) in self._handlers.items()]
        for topic, qos in subscriptions:
            client.subscribe(topic, qos)
        client.publish(self.topics.status, status_payload("online", self.unit_id, self._seq), qos=1, retain=True)
        log.info("mqtt: connected to %s:%s as %s (seq %d)", self.cfg.host, self.cfg.port, self.client_id, self._seq)
        self.connected.set()
        try:
            self._inbox.put_nowait(_CONNECTED)
        except queue.Full:
            log.error("mqtt: handler queue full, connect listeners not run")

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected:
            self._seq += 1  # the next birth and its will carry the next sequence number
            self._set_will()
            log.warning("mqtt: disconnected from %s:%s (%s); reconnecting", self.cfg.host, self.cfg.port, reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            self._inbox.put_nowait((message.topic, bytes(message.payload)))
        except queue.Full:
            log.error("mqtt: handler queue full, dropped a message on %s", message.topic)

    # dispatcher thread ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        while (item := self._inbox.get()) is not None:
            if item is _CONNECTED:
                with self._lock:
                    listeners = list(self._connect_listeners)
                for listener in listeners:
                    try:
                        listener()
                    except Exception:
                        log.exception("mqtt: connect listener failed")
                continue
            topic, payload = item
            with self._lock:
                handlers = [h for sub, (h, _) in self._handlers.items() if paho.topic_matches_sub(sub, topic)]
            for handler in handlers:
                try:
                    handler(topic, payload)
                except Exception:
                    log.exception("mqtt: handler for %s failed", topic)
            # Drop the payload now: the next get() may block for hours, and a watchlist bundle is large.
            del item, payload
