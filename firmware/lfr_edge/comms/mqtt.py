"""The unit's MQTT client: mutual TLS, availability (birth, last will, stopped), reconnect, handlers.

Availability follows the Frigate/Sparkplug convention: on every (re)connect the unit publishes a
retained `online` status; the broker publishes the retained `offline` last will when the connection
dies; a clean stop publishes a retained `stopped` (a clean DISCONNECT suppresses the will). Each
status carries `seq`, which increases per connection: the will of connection N has the same `seq` as
the birth of connection N, so a consumer can ignore a late death of an older connection.

Each subscription has its own bounded queue and its own dispatcher thread, never paho's network thread:
a slow handler (applying a watchlist) cannot stall keep-alives, and a flood on one topic (junk decisions)
cannot starve another (the command centre's close). A subscription to every handset's own topic
(`.../decisions/from/+`) keeps one bounded queue per sender, served in turn: one handset's flood fills
only its own and cannot delay another's decision. A payload over the subscription's size limit is
refused before it is copied. What a subscription drops is counted and logged once per interval.
These threads are supervised (lfr_edge.daemon.supervise): a handler that raises is counted and logged
once, and the dispatcher goes on with the next message; paho's own network thread is caught by the
daemon's thread hook.

An unreachable broker is loud: every failed attempt is recorded with its reason (`connection_problem`),
the first logged at once and the rest summarised at most every `PROBLEM_LOG_INTERVAL_S`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import queue
import secrets
import socket
import ssl
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from lfr_contracts.status import BeaconState, UnitState, UnitStatus, WatchlistStatus, now_iso
from lfr_contracts.topics import Topics
from lfr_edge.config import MqttConfig
from lfr_edge.daemon.supervise import Supervisor

log = logging.getLogger(__name__)

Handler = Callable[[str, bytes], None]
DROP_LOG_INTERVAL_S = 10.0
PROBLEM_LOG_INTERVAL_S = 30.0


class Overflow(enum.Enum):
    """What a full subscription queue does with the next message."""

    DROP = "drop"  # drop it and count it (handsets' decisions: a flood must not grow memory)
    WAIT = "wait"  # hold paho's network thread until there is room (the command centre: never dropped)


@dataclass
class SubscriptionStats:
    delivered: int = 0
    dropped_full: int = 0
    dropped_oversize: int = 0
    handler_errors: int = 0


class Inbox:
    """A subscription's bounded queue: one FIFO of `per_sender` messages per sender (the last topic level of
    a `.../+` subscription; one for an exact topic), the senders served in turn."""

    def __init__(self, per_sender: int, max_senders: int) -> None:
        self.per_sender, self.max_senders = per_sender, max_senders
        self._waiting: OrderedDict[str, deque[tuple[str, bytes]]] = OrderedDict()  # senders with messages, in turn
        self._ready = threading.Condition()
        self._stopped = False

    def put(self, sender: str, item: tuple[str, bytes], *, wait: bool) -> bool:
        """Queue it; when the sender's queue is full wait for room (`wait`) or return False (dropped)."""
        with self._ready:
            while True:
                waiting = self._waiting.get(sender)
                if waiting is None and len(self._waiting) < self.max_senders:
                    waiting = self._waiting[sender] = deque()
                if waiting is not None and len(waiting) < self.per_sender:
                    waiting.append(item)
                    self._ready.notify_all()
                    return True
                if not wait or self._stopped:
                    return False
                self._ready.wait()

    def get(self) -> tuple[str, bytes] | None:
        """The next sender's oldest message (None once stopped); that sender then waits for the others."""
        with self._ready:
            while not self._waiting and not self._stopped:
                self._ready.wait()
            if self._stopped:
                return None
            sender, waiting = next(iter(self._waiting.items()))
            item = waiting.popleft()
            if waiting:
                self._waiting.move_to_end(sender)
            else:
                del self._waiting[sender]
            self._ready.notify_all()
            return item

    def stop(self, stopped: bool = True) -> None:
        with self._ready:
            self._stopped = stopped
            self._ready.notify_all()


@dataclass
class _Subscription:
    topic: str
    handler: Handler
    qos: int
    max_bytes: int
    overflow: Overflow
    inbox: Inbox
    stats: SubscriptionStats = field(default_factory=SubscriptionStats)
    thread: threading.Thread | None = None
    reported_drops: int = 0
    reported_at: float = 0.0
    dropped_from: Counter[str] = field(default_factory=Counter)  # since the last report, by sender

    def dropped(self) -> int:
        return self.stats.dropped_full + self.stats.dropped_oversize

    def report_drops(self, now: float) -> None:
        """One log line per interval for whatever was dropped since the last one."""
        new = self.dropped() - self.reported_drops
        if new and now - self.reported_at >= DROP_LOG_INTERVAL_S:
            senders = ", ".join(f"{n} from {who or 'the topic'}" for who, n in self.dropped_from.most_common(3))
            log.warning(
                "mqtt: dropped %d message(s) on %s in the last %.0f s (%d over %d bytes, %d with the queue full;"
                " %s)",
                new, self.topic, DROP_LOG_INTERVAL_S, self.stats.dropped_oversize, self.max_bytes,
                self.stats.dropped_full, senders,
            )  # fmt: skip
            self.reported_drops, self.reported_at = self.dropped(), now
            self.dropped_from.clear()


def describe_connect_failure(exc: BaseException | None) -> str:
    """A technician's reading of why a connection attempt failed."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate does not verify ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the broker running, is mqtt.port right?)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror or exc})"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no answer (timed out): check mqtt.host and the network"
    if isinstance(exc, OSError):
        return f"cannot connect ({exc.strerror or exc})"
    return "cannot connect (no reason given)"


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


class UnitMqttClient:
    """One unit's connection to the broker. `start()` returns at once; `connected` is set when up."""

    def __init__(
        self, unit_id: str, cfg: MqttConfig, *, model_id: str | None = None, supervisor: Supervisor | None = None
    ) -> None:
        self.unit_id = unit_id
        self._supervisor = supervisor or Supervisor()
        self.cfg = cfg
        self.topics = Topics.for_unit(cfg.topic_prefix, unit_id)
        self.client_id = f"{unit_id}-{secrets.token_hex(4)}"
        self.connected = threading.Event()
        self.connect_count = 0
        self._seq = 0
        self._subscriptions: dict[str, _Subscription] = {}
        self._connect_listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._events: queue.Queue[bool] = queue.Queue()  # True: run the connect listeners; False: stop
        self._dispatcher: threading.Thread | None = None
        self._started = False
        self._problem: str | None = None
        self._watchlist: WatchlistStatus | None = None
        self._beacon: BeaconState | None = None
        self._model_id = model_id
        self._failed_attempts = 0
        self._problem_logged_at = 0.0
        self._client = tls_client(self.client_id, cfg.ca_file, cfg.cert_file, cfg.key_file)
        # paho annotates the delays as int, but its reconnect wait is plain float arithmetic: fractions of a
        # second work, and a unit reconnects 0.2 s after a broker restart rather than a whole second later.
        self._client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        self._set_will()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_connect_fail = self._on_connect_fail

    # lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; reconnects with capped exponential backoff until `stop()`."""
        log.info("mqtt: connecting to %s:%s as %s", self.cfg.host, self.cfg.port, self.client_id)
        self._started = True
        self._dispatcher = self._supervisor.start(f"mqtt-connect-{self.unit_id}", self._run_listeners)
        with self._lock:
            for subscription in self._subscriptions.values():
                self._start_thread(subscription)
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()

    def stop(self, timeout_s: float = 3.0) -> None:
        """Publish the retained `stopped` status (when connected), disconnect cleanly, end the threads."""
        if self.connected.is_set():
            info = self._client.publish(self.topics.status, self._status("stopped"), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt: the 'stopped' status was not delivered: %s", exc)
        self.connected.clear()  # before disconnecting: a clean stop is not logged as a lost connection
        self._client.disconnect()
        self._client.loop_stop()
        if self._dispatcher is not None:
            self._events.put(False)
            self._dispatcher.join(timeout_s)
            self._dispatcher = None
        with self._lock:
            subscriptions = list(self._subscriptions.values())
        for subscription in subscriptions:
            subscription.inbox.stop()
            if subscription.thread is not None:
                subscription.thread.join(timeout_s)
                subscription.thread = None

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

    def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        qos: int = 1,
        max_bytes: int,
        queue_size: int = 64,
        overflow: Overflow = Overflow.DROP,
        max_senders: int = 64,
    ) -> None:
        """Call `handler(topic, payload)` on this subscription's own thread for each message on `topic`, now
        and after every reconnect. Payloads over `max_bytes` are refused before they are copied. A topic
        ending in `/+` (every handset's own topic) queues `queue_size` messages per sender, for up to
        `max_senders` senders at once."""
        if "#" in topic or "+" in topic.removesuffix("/+"):
            raise ValueError(f"subscribe {topic!r}: an exact topic, or one ending in /+ (messages are routed by name)")
        inbox = Inbox(queue_size, max_senders if topic.endswith("/+") else 1)
        subscription = _Subscription(topic, handler, qos, max_bytes, overflow, inbox)
        with self._lock:
            self._subscriptions[topic] = subscription
            if self._started:
                self._start_thread(subscription)
        if self.connected.is_set():
            self._client.subscribe(topic, qos)

    def set_watchlist_status(self, status: WatchlistStatus) -> None:
        """Say which watchlist the unit holds in its retained status, now and in every later birth."""
        if status == self._watchlist:
            return
        self._watchlist = status
        if self.connected.is_set():
            self._client.publish(self.topics.status, self._status("online"), qos=1, retain=True)

    def set_beacon_status(self, beacon: BeaconState | None) -> None:
        """Say how the roof beacon is in the retained status (the handset shows it), when that changes."""
        if beacon == self._beacon:
            return
        self._beacon = beacon
        if self.connected.is_set():
            self._client.publish(self.topics.status, self._status("online"), qos=1, retain=True)

    def _status(self, state: UnitState) -> bytes:
        online = state != "offline"  # the will is the broker's word, not ours
        watchlist, beacon = (self._watchlist, self._beacon) if online else (None, None)
        return UnitStatus(state, self.unit_id, now_iso(), self._seq, watchlist, self._model_id, beacon).encode()

    def subscription_stats(self) -> dict[str, SubscriptionStats]:
        """Per topic: delivered, dropped (full queue, oversize), handler errors; for telemetry."""
        with self._lock:
            return {topic: sub.stats for topic, sub in self._subscriptions.items()}

    def connection_problem(self) -> str | None:
        """Why the broker cannot be reached right now (None while connected or before the first try)."""
        return None if self.connected.is_set() else self._problem

    # paho callbacks (network thread) ----------------------------------------------------------------

    def _set_will(self) -> None:
        self._client.will_set(self.topics.status, self._status("offline"), qos=1, retain=True)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any) -> None:
        if reason.is_failure:
            self._record_problem(f"the broker refused the connection ({reason}): is this unit's certificate allowed?")
            return
        self._problem, self._failed_attempts = None, 0
        self.connect_count += 1
        with self._lock:
            subscriptions = [(sub.topic, sub.qos) for sub in self._subscriptions.values()]
        for topic, qos in subscriptions:
            self._client.subscribe(topic, qos)
        client.publish(self.topics.status, self._status("online"), qos=1, retain=True)
        log.info("mqtt: connected to %s:%s as %s (seq %d)", self.cfg.host, self.cfg.port, self.client_id, self._seq)
        self.connected.set()
        self._events.put(True)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, properties: Any
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected:
            self._seq += 1  # the next birth and its will carry the next sequence number
            self._set_will()
            log.warning("mqtt: disconnected from %s:%s (%s); reconnecting", self.cfg.host, self.cfg.port, reason)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError:` block, so the exception is the one being handled.
        self._record_problem(describe_connect_failure(sys.exc_info()[1]))

    def _record_problem(self, why: str) -> None:
        self._problem = f"broker {self.cfg.host}:{self.cfg.port}: {why}"
        self._failed_attempts += 1
        now = time.monotonic()
        if self._failed_attempts == 1 or now - self._problem_logged_at >= PROBLEM_LOG_INTERVAL_S:
            log.error("mqtt: %s (attempt %d; retrying with backoff)", self._problem, self._failed_attempts)
            self._problem_logged_at = now

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        subscription = self._subscriptions.get(message.topic)  # an exact topic, else one handset's own topic
        sender = ""
        if subscription is None:
            head, _, sender = message.topic.rpartition("/")
            subscription = self._subscriptions.get(f"{head}/+")
        if subscription is not None:
            self._enqueue(subscription, sender, message)

    def _enqueue(self, subscription: _Subscription, sender: str, message: paho.MQTTMessage) -> None:
        if len(message.payload) > subscription.max_bytes:
            subscription.stats.dropped_oversize += 1  # refused before the payload is copied
            subscription.dropped_from[sender[:64]] += 1
        elif not subscription.inbox.put(
            sender, (message.topic, bytes(message.payload)), wait=subscription.overflow is Overflow.WAIT
        ):
            subscription.stats.dropped_full += 1
            subscription.dropped_from[sender[:64]] += 1
        subscription.report_drops(time.monotonic())

    # dispatcher threads -----------------------------------------------------------------------------

    def _start_thread(self, subscription: _Subscription) -> None:
        subscription.inbox.stop(stopped=False)
        name = "mqtt-" + [part for part in subscription.topic.split("/") if part not in ("+", "from")][-1]
        subscription.thread = self._supervisor.start(name, lambda: self._dispatch(subscription))

    def _run_listeners(self) -> None:
        while self._events.get():
            with self._lock:
                listeners = list(self._connect_listeners)
            for listener in listeners:
                try:
                    listener()
                except Exception as exc:
                    self._supervisor.caught(threading.current_thread().name, exc)

    def _dispatch(self, subscription: _Subscription) -> None:
        while (item := subscription.inbox.get()) is not None:
            topic, payload = item
            try:
                subscription.handler(topic, payload)
                subscription.stats.delivered += 1
            except Exception as exc:  # the next message is handled all the same
                subscription.stats.handler_errors += 1
                self._supervisor.caught(threading.current_thread().name, exc)
            # Drop the payload now: the next get() may block for hours, and a watchlist bundle is large.
            del item, payload
