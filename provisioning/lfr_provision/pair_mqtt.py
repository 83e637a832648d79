"""Handset pairing carried over MQTT (docs/pairing.md, "Transport"): both ends of the three messages.

`UnitPairing` is the unit's side for `lfr-provision pair-handset`: it connects with the unit's own
certificate (a separate client id, so a running daemon stays connected and its retained status is left
alone), publishes the session's offer retained, feeds each request on the request topic to the pure
`PairingSession.accept`, registers the handset and answers on `pairing/confirm/<handset id>`. A refused
request gets a `refused` answer there too (the reason only: never how close the code was), so the
officer sees "wrong code" at once instead of waiting for a time-out. `pair_with_unit` is the handset's
side for `lfr-handset pair`.

The broker's ACL lets only the unit write the offer and the confirmations, and each handset read only its
own confirmation topic; the code, not the broker, is what authenticates the exchange.
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from lfr_edge.comms.mqtt import Topics, connect_tls
from lfr_provision import handsets
from lfr_provision.pairing import (
    MAX_MESSAGE_BYTES,
    VERSION,
    HandsetPairing,
    PairedHandset,
    PairedUnit,
    PairingError,
    PairingSession,
)

Tls = tuple[Path, Path, Path]  # CA, client certificate, client key
WAIT_S = 10.0  # upper bound for one broker round trip (subscribe, publish)
CLOSED_REASONS = {
    "paired": "has been used",
    "expired": "expired",
    "voided": "was voided after too many wrong tries",
    "cancelled": "was cancelled",
}


@dataclass
class PairingOutcome:
    """How a pairing session ended: `paired` (with the handset and its registry file), `expired`,
    `voided` (too many wrong codes) or `cancelled`; `refusals` lists every refused request, in order."""

    result: str
    handset: PairedHandset | None = None
    registry_file: Path | None = None
    refusals: list[str] = field(default_factory=list)


class _Subscriber:
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


def _handset_of(request: bytes) -> tuple[str, str] | None:
    """(handset id, handset nonce) of a request, read loosely: only to address the refusal to it."""
    try:
        data = json.loads(request) if len(request) <= MAX_MESSAGE_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    handset_id, nonce = data.get("handset_id"), data.get("handset_nonce")
    if not isinstance(handset_id, str) or not isinstance(nonce, str) or len(nonce) > 64:
        return None
    if not handset_id or len(handset_id) > 64 or not all(c.isalnum() or c in "-_" for c in handset_id):
        return None
    return handset_id, nonce


class UnitPairing:
    """The unit's side of one pairing session over MQTT: open(), serve() until done, close()."""

    def __init__(
        self,
        session: PairingSession,
        host: str,
        port: int,
        tls: Tls,
        handsets_dir: Path,
        *,
        prefix: str = "lfr/v1",
        expected_handset: str | None = None,
        on_refusal: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.session = session
        self.topics = Topics.for_unit(prefix, session.unit_id)
        self.handsets_dir = handsets_dir
        self.expected_handset = expected_handset
        self.on_refusal = on_refusal
        self._where = (host, port, tls)
        self._mqtt: _Subscriber | None = None
        self._cancel = threading.Event()

    def open(self, timeout_s: float = WAIT_S) -> None:
        """Connect, listen for requests, then publish the offer (retained, so a late handset finds it)."""
        host, port, tls = self._where
        client_id = f"{self.session.unit_id}-pairing-{secrets.token_hex(3)}"
        self._mqtt = _Subscriber(connect_tls(client_id, host, port, tls, timeout_s=timeout_s))
        self._mqtt.subscribe(self.topics.pairing_request)
        self._mqtt.publish(self.topics.pairing_offer, self.session.offer(), retain=True)

    def cancel(self) -> None:
        """Stop serve() early (Ctrl-C, a test's clean-up)."""
        self._cancel.set()

    def serve(self) -> PairingOutcome:
        """Answer requests until one pairs, the code expires or is voided, or cancel() is called."""
        if self._mqtt is None:
            raise RuntimeError("open() first")
        outcome = PairingOutcome("cancelled")
        while not self._cancel.is_set():
            if self.session.now() > self.session.expires_at:
                outcome.result = "expired"
                break
            try:
                message = self._mqtt.messages.get(timeout=0.2)  # wakes for cancel() and expiry
            except queue.Empty:
                continue
            payload = bytes(message.payload)
            try:
                handset, confirm = self._accept(payload)
            except PairingError as exc:
                reason = str(exc)
                outcome.refusals.append(reason)
                self.on_refusal(reason)
                self._answer_refusal(payload, reason)
                if self.session.attempts_left <= 0:
                    outcome.result = "voided"
                    break
                continue  # an expired code ends the loop at its top
            path = handsets.register(self.handsets_dir, handset)
            self._mqtt.publish(self.topics.pairing_confirm_for(handset.handset_id), confirm)
            return PairingOutcome("paired", handset, path, outcome.refusals)
        return outcome

    def _accept(self, payload: bytes) -> tuple[PairedHandset, bytes]:
        if self.expected_handset is not None:
            sender = _handset_of(payload)
            if sender is not None and sender[0] != self.expected_handset:
                raise PairingError(f"request: this pairing is for handset {self.expected_handset!r} only")
        return self.session.accept(payload)

    def _answer_refusal(self, request: bytes, reason: str) -> None:
        sender = _handset_of(request)
        if sender is not None and self._mqtt is not None:
            handset_id, nonce = sender
            body = json.dumps(
                {"type": "refused", "v": VERSION, "handset_id": handset_id, "handset_nonce": nonce,
                 "reason": reason[:200]}
            ).encode()  # fmt: skip
            with contextlib.suppress(ConnectionError):  # a courtesy: the handset times out without it
                self._mqtt.publish(self.topics.pairing_confirm_for(handset_id), body)

    def close(self, result: str = "cancelled") -> None:
        """Replace the retained offer with a retained `closed` notice (so a handset that comes late is
        told at once, not left waiting) and disconnect. Safe to call twice."""
        mqtt, self._mqtt = self._mqtt, None
        if mqtt is None:
            return
        notice = {"type": "closed", "v": VERSION, "unit_id": self.session.unit_id, "result": result}
        with contextlib.suppress(ConnectionError):  # the offer expires by itself anyway
            mqtt.publish(self.topics.pairing_offer, json.dumps(notice).encode(), retain=True)
        mqtt.close()


def certificate_cn(cert_file: Path) -> str:
    """The CN of a client certificate: the broker's username for it, and so the handset's id."""
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        raise PairingError(f"{cert_file}: cannot read the client certificate ({exc})") from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise PairingError(f"{cert_file}: the client certificate has no CN")
    return str(names[0].value)


def pair_with_unit(
    handset_id: str,
    code: str,
    sealing: X25519PrivateKey,
    signing: Ed25519PrivateKey,
    unit_id: str,
    host: str,
    port: int,
    tls: Tls,
    *,
    prefix: str = "lfr/v1",
    timeout_s: float = 30.0,
) -> PairedUnit:
    """The handset's side: read the unit's open offer, send the code-authenticated request, check the
    unit's confirmation. Raises PairingError (refused, no offer, no answer) or ConnectionError."""
    pairing = HandsetPairing(handset_id, code, sealing, signing)  # checks the code's form first
    cn = certificate_cn(tls[1])
    if cn != handset_id:
        raise PairingError(
            f"handset id {handset_id!r} is not the CN of its certificate {tls[1]} ({cn!r}): the broker "
            f"only lets {cn!r} read its own answer, so pair with the id {cn!r}"
        )
    topics = Topics.for_unit(prefix, unit_id)
    client_id = f"{handset_id}-pairing-{secrets.token_hex(3)}"
    mqtt = _Subscriber(connect_tls(client_id, host, port, tls, timeout_s=min(timeout_s, WAIT_S)))
    try:
        confirm_topic = topics.pairing_confirm_for(handset_id)
        mqtt.subscribe(confirm_topic)
        mqtt.subscribe(topics.pairing_offer)
        deadline = time.monotonic() + timeout_s
        offer = _next(mqtt, topics.pairing_offer, deadline, f"no pairing is open on unit {unit_id}")
        closed = _json(offer)
        if closed.get("type") == "closed":
            why = CLOSED_REASONS.get(str(closed.get("result")), "was closed")
            raise PairingError(
                f"no pairing is open on unit {unit_id} (the last code {why}); ask the technician to run "
                "`lfr-provision pair-handset` for a new code"
            )
        request = pairing.request(offer)
        nonce = json.loads(request)["handset_nonce"]
        mqtt.publish(topics.pairing_request, request)
        while True:
            answer = _next(mqtt, confirm_topic, deadline, f"unit {unit_id} did not answer the request")
            data = _json(answer)
            if data.get("handset_nonce") != nonce:
                continue  # an answer to an earlier attempt (or to someone replaying one)
            if data.get("type") == "refused":
                raise PairingError(f"unit {unit_id} refused: {str(data.get('reason', '?'))[:200]}")
            return pairing.confirm(answer)
    finally:
        mqtt.close()


def _next(mqtt: _Subscriber, topic: str, deadline: float, why: str) -> bytes:
    """The next non-empty message on `topic` before the deadline (an empty retained one is a withdrawn
    offer)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PairingError(f"{why} (check the unit id and that pair-handset is still running)")
        try:
            message = mqtt.messages.get(timeout=remaining)
        except queue.Empty:
            continue
        if message.topic == topic and message.payload:
            return bytes(message.payload)


def _json(payload: bytes) -> dict[str, Any]:
    try:
        data = json.loads(payload) if len(payload) <= MAX_MESSAGE_BYTES else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    return data if isinstance(data, dict) else {}
