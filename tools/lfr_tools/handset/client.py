"""The handset's side of the protocol: its keys, its MQTT session with one unit, alerts opened and
acknowledged, the unit's retained status, and decisions with the unit's answer. `lfr-handset listen`,
`decide` and `app` all use it.
"""

from __future__ import annotations

import argparse
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from lfr_contracts import crypto
from lfr_contracts.alerts import Alert, Decision, DecisionKind, ProtocolError, decode_alert, encode_decision
from lfr_contracts.receipts import AlertReceipt, DecisionAnswer, decode_answer, encode_receipt
from lfr_contracts.status import StatusError, UnitStatus
from lfr_contracts.topics import Topics
from lfr_edge import keyfiles
from lfr_edge.alerts.handset import handset_record
from lfr_edge.comms.mqtt import tls_client
from lfr_tools.handset.unit_state import read_status

log = logging.getLogger(__name__)

MAX_UNCLAIMED_ANSWERS = 100  # answers nobody waits for (a decision that timed out) are kept this long

SEALING_KEY = "handset-x25519.key"
SIGNING_KEY = "handset-ed25519.key"


def unit_key_file(directory: Path, unit_id: str) -> Path:
    """Where pairing stores a unit's Ed25519 public key (alerts from that unit are checked with it)."""
    return directory / f"unit-{unit_id}-ed25519.pub"


@dataclass(frozen=True)
class HandsetKeys:
    handset_id: str
    sealing: X25519PrivateKey
    signing: Ed25519PrivateKey

    @staticmethod
    def generate(directory: Path, handset_id: str) -> HandsetKeys:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        keys = HandsetKeys(handset_id, X25519PrivateKey.generate(), Ed25519PrivateKey.generate())
        keyfiles.save_private_key(directory / SEALING_KEY, keys.sealing)
        keyfiles.save_private_key(directory / SIGNING_KEY, keys.signing)
        (directory / "handset-id").write_text(handset_id + "\n")
        (directory / f"{handset_id}.json").write_bytes(keys.record())
        return keys

    @staticmethod
    def load(directory: Path) -> HandsetKeys:
        try:
            handset_id = (directory / "handset-id").read_text().strip()
        except OSError as exc:
            raise crypto.KeyFileError(f"{directory / 'handset-id'}: cannot read ({exc.strerror})") from exc
        return HandsetKeys(
            handset_id,
            keyfiles.load_x25519_private(directory / SEALING_KEY),
            keyfiles.load_ed25519_private(directory / SIGNING_KEY),
        )

    def record(self) -> bytes:
        """The public record the unit keeps in its handsets directory."""
        return handset_record(self.handset_id, self.sealing.public_key(), self.signing.public_key())


@dataclass(frozen=True)
class ReceivedAlert:
    alert: Alert
    received_at: float  # epoch seconds, when the message arrived (before it was verified and decrypted)
    decoded_at: float | None = None  # epoch seconds, once verified and decrypted

    @property
    def age_ms(self) -> float:
        return (self.received_at - self.alert.time) * 1e3

    @property
    def decoded_age_ms(self) -> float | None:
        """Frame time to the alert decrypted at the handset (what the officer can first see)."""
        return None if self.decoded_at is None else (self.decoded_at - self.alert.time) * 1e3


ClientMode = Literal["listen", "decide", "once"]
OnAlert = Callable[[ReceivedAlert], None]
OnStatus = Callable[[UnitStatus, float], None]  # the unit's retained status, and when it arrived (epoch s)


class HandsetClient:
    """Connects as one handset (its own client certificate) and receives one unit's alerts.

    `listen` (the default) holds the handset's persistent session (clean_session off, QoS 1 subscriptions
    to the alerts and to the unit's answers to its decisions): the broker keeps the subscriptions while the
    handset is offline and queues the alerts published meanwhile, which arrive when it reconnects. The
    broker names the session after the certificate, so `decide` resumes that same session rather than
    starting a clean one (which would erase it): it acknowledges only the unit's answers, never an alert,
    so an alert the broker hands it stays queued for `listen`. `once` is a clean session of its own.

    `listen` also follows the unit's retained status. Alerts go to `on_alert` (on the MQTT thread) when it is
    given, else to the `alerts` queue; statuses to `on_status`. Answers are matched to the decision waiting
    for them, so several decisions may wait at once.
    """

    def __init__(
        self,
        keys: HandsetKeys,
        unit_id: str,
        unit_key: Ed25519PublicKey,
        host: str,
        port: int,
        tls: tuple[Path, Path, Path],  # CA, certificate, key
        prefix: str = "lfr/v1",
        persistent: bool = True,
        mode: ClientMode | None = None,
        on_alert: OnAlert | None = None,
        on_status: OnStatus | None = None,
    ) -> None:
        self.keys = keys
        self.unit_id = unit_id
        self.unit_key = unit_key
        self.topics = Topics.for_unit(prefix, unit_id)
        self.alerts: queue.Queue[ReceivedAlert] = queue.Queue()
        self.statuses: queue.Queue[UnitStatus] = queue.Queue()  # the unit's status as it changes, without on_status
        self.refused: queue.Queue[str] = queue.Queue()
        self._answers: list[DecisionAnswer] = []  # answers not yet taken by a waiting decision (bounded)
        self._answered = threading.Condition()
        self._on_alert = on_alert
        self._on_status = on_status
        self.seen: set[str] = set()
        self.duplicates = 0
        self.connected = threading.Event()
        self.mode: ClientMode = mode or ("listen" if persistent else "once")
        client_id = keys.handset_id if self.mode != "once" else f"{keys.handset_id}-{secrets.token_hex(3)}"
        self._client = tls_client(client_id, *tls, clean_session=self.mode == "once")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = lambda *a: self.connected.clear()
        if self.mode == "decide":
            self._client.manual_ack_set(True)  # an alert it is handed stays unacknowledged, queued for `listen`
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *a: self.connected.set()  # ready once the broker has the subscription
        self._client.reconnect_delay_set(1, 2)
        self._host, self._port = host, port

    def start(self, timeout: float = 10.0) -> None:
        self._client.connect_async(self._host, self._port, keepalive=10)
        self._client.loop_start()
        if not self.connected.wait(timeout):
            raise ConnectionError(f"handset {self.keys.handset_id}: no connection to {self._host}:{self._port}")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def decide(self, alert_id: str, decision: DecisionKind, timeout: float = 10.0) -> DecisionAnswer:
        """Send a signed decision and wait for the unit's answer (accepted, or refused with the reason);
        TimeoutError when none comes: the decision may not have been recorded."""
        message = Decision(alert_id, self.unit_id, self.keys.handset_id, decision, time.time())
        info = self._client.publish(self.topics.decisions, encode_decision(message, self.keys.signing), qos=1)
        info.wait_for_publish(timeout)
        deadline = time.monotonic() + timeout
        with self._answered:
            while (left := deadline - time.monotonic()) > 0:
                for answer in self._answers:
                    if answer.alert_id == alert_id and answer.decision == decision:
                        self._answers.remove(answer)
                        return answer
                self._answered.wait(left)
        raise TimeoutError(f"unit {self.unit_id} did not answer the decision on {alert_id} within {timeout:g} s")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            return
        answers = (self.topics.decision_answer_for(self.keys.handset_id), 1)
        if self.mode == "decide":
            client.subscribe([answers])
        else:
            status = (self.topics.status, 0)  # QoS 0: never queued while away; the retained one comes on connect
            client.subscribe([(self.topics.alerts, 1), answers, status])

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        if message.topic == self.topics.status:
            if self.mode == "decide":  # the session's status subscription (from `listen`): nothing to keep
                client.ack(message.mid, message.qos)
            else:
                self._on_unit_status(bytes(message.payload))
            return
        if message.topic != self.topics.alerts:
            self._on_answer(bytes(message.payload))
            if self.mode == "decide":
                client.ack(message.mid, message.qos)
            return
        if self.mode == "decide":
            return  # left unacknowledged: the broker gives it to `listen` when it is back
        received_at = time.time()
        try:
            alert = decode_alert(bytes(message.payload), self.unit_id, self.unit_key, self.keys.sealing)
            decoded_at = time.time()
        except ProtocolError as exc:
            self.refused.put(str(exc))
            log.warning("%s", refusal_message(exc, self.keys.handset_id, self.unit_id))
            return
        receipt = AlertReceipt(self.unit_id, self.keys.handset_id, alert.alert_id, time.time())
        self._client.publish(self.topics.alert_receipts, encode_receipt(receipt, self.keys.signing), qos=1)
        if alert.alert_id in self.seen:  # the unit re-sends until a receipt arrives: show each alert once
            self.duplicates += 1
            return
        self.seen.add(alert.alert_id)
        received = ReceivedAlert(alert, received_at, decoded_at)
        if self._on_alert is None:
            self.alerts.put(received)
        else:
            self._on_alert(received)

    def _on_answer(self, payload: bytes) -> None:
        try:
            answer = decode_answer(payload, self.unit_key)
        except ProtocolError as exc:
            log.warning("answer refused: %s", exc)
            return
        with self._answered:
            self._answers = [*self._answers[-(MAX_UNCLAIMED_ANSWERS - 1) :], answer]
            self._answered.notify_all()

    def _on_unit_status(self, payload: bytes) -> None:
        try:
            status = read_status(payload, self.unit_id)
        except StatusError as exc:
            log.warning("unit %s: status ignored: %s", self.unit_id, exc)
            return
        if status is not None and self._on_status is not None:
            self._on_status(status, time.time())
        elif status is not None:
            self.statuses.put(status)


def refusal_message(exc: ProtocolError, handset_id: str, unit_id: str) -> str:
    """One line for a refused alert (its reason already says "alert refused"); for an alert sealed to other
    keys, what to do about it."""
    if isinstance(exc.__cause__, crypto.NotForThisKey):
        return (
            f"{exc}: handset {handset_id} is not paired with unit {unit_id} (or was unpaired, or re-keyed); "
            "pair it: `lfr-provision pair-handset` on the unit, then `lfr-handset pair --code CODE ...`"
        )
    return str(exc)


def client_from_args(
    args: argparse.Namespace,
    mode: ClientMode,
    on_alert: OnAlert | None = None,
    on_status: OnStatus | None = None,
) -> HandsetClient:
    """The client the connection options describe (the unit's key from pairing unless --unit-key names one)."""
    keys = HandsetKeys.load(args.keys)
    unit_key_path = args.unit_key or unit_key_file(args.keys, args.unit)
    if args.unit_key is None and not unit_key_path.exists():
        raise crypto.KeyFileError(f"{unit_key_path}: no key for unit {args.unit}; pair first or give --unit-key")
    unit_key = keyfiles.load_ed25519_public(unit_key_path)
    host, port = args.broker
    tls = (args.ca, args.cert, args.key)
    return HandsetClient(
        keys, args.unit, unit_key, host, port, tls, args.prefix, mode=mode, on_alert=on_alert, on_status=on_status
    )
