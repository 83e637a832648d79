"""Alerts to paired handsets over MQTT, and the officers' decisions coming back, acknowledged end to end.

Each alert is sealed to every paired handset and signed by the unit. It stays in a bounded in-memory outbox
until a paired handset's signed receipt says it was decrypted, or its time-to-live ends: it is re-published
on every reconnect and every `RESEND_S`, since the broker's PUBACK is no proof of delivery (a broker that
loses its state loses what it queued). What expires or overflows is counted and logged, never written to
disk. Timers run on the monotonic clock: a step of the wall clock neither expires nor holds an alert.

Each handset sends its decisions and receipts on its own topics (`.../decisions/from/<handset id>`,
`.../alerts/ack/from/<handset id>`), which the broker's ACL lets only the certificate with that CN write:
the topic names the sender, and a message naming another handset is refused. Every decision is answered
on the sender's answer topic: accepted (with its revision when the officer changed it) or refused with the
reason. Decisions are verified against the handset's pairing key and audited; a repeat of the same
decision (QoS 1 redelivery) is answered again but audited once. Each sender may send `DECISION_RATE`
decisions a second (burst `DECISION_BURST`), counted on the topic's id before anything is parsed, so no
handset can spend another's allowance; refusals and what the rate limit dropped are counted and reported
once per `REFUSAL_REPORT_S`, in the log and the audit log, not per message.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from lfr_contracts import crypto
from lfr_contracts.alerts import Alert, Decision, DecisionKind, ProtocolError, encode_alert, parse_decision
from lfr_contracts.audit_events import AuditSink, DecisionRefused, OfficerDecision
from lfr_contracts.receipts import DecisionAnswer, claimed_receipt, decode_receipt, encode_answer
from lfr_contracts.topics import Topics
from lfr_edge.alerts.channel import UnitState
from lfr_edge.config import AlertsConfig

log = logging.getLogger(__name__)

RECENT_ALERTS = 1000  # alert ids remembered for decisions and duplicate detection
RESEND_S = 5.0  # an alert no handset has acknowledged is published again this often
DECISION_RATE, DECISION_BURST = 2.0, 10  # per handset: decisions a second, and the burst allowed
REFUSAL_REPORT_S = 10.0


class Publisher(Protocol):
    connected: threading.Event

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool: ...


class HandsetRegistryError(ValueError):
    """A paired-handset file is unreadable or malformed; the message names the file."""


@dataclass(frozen=True)
class PairedHandset:
    handset_id: str
    sealing_key: X25519PublicKey  # alerts are sealed to it
    signing_key: Ed25519PublicKey  # its decisions are verified with it


def load_handsets(directory: Path) -> dict[str, PairedHandset]:
    """Every `<handset id>.json` in the directory (written by pairing); a bad file is named and skipped."""
    handsets: dict[str, PairedHandset] = {}
    if not directory.is_dir():
        return handsets
    for path in sorted(directory.glob("*.json")):
        try:
            handset = parse_handset(path.read_bytes(), str(path))
        except (OSError, HandsetRegistryError) as exc:
            log.error("paired handset %s ignored: %s", path, exc)
            continue
        handsets[handset.handset_id] = handset
    return handsets


def parse_handset(data: bytes, name: str) -> PairedHandset:
    """A registry record: {"handset_id", "x25519_public", "ed25519_public" (PEM), "paired_at"}."""
    try:
        body = json.loads(data)
        sealing = serialization.load_pem_public_key(body["x25519_public"].encode())
        signing = serialization.load_pem_public_key(body["ed25519_public"].encode())
        handset_id = str(body["handset_id"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HandsetRegistryError(f"{name}: not a paired-handset record ({exc!r})") from exc
    if not isinstance(sealing, X25519PublicKey) or not isinstance(signing, Ed25519PublicKey):
        raise HandsetRegistryError(f"{name}: x25519_public / ed25519_public hold the wrong key types")
    return PairedHandset(handset_id, sealing, signing)


def _pem(key: X25519PublicKey | Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def handset_record(handset_id: str, sealing: X25519PublicKey, signing: Ed25519PublicKey) -> bytes:
    return json.dumps(
        {"handset_id": handset_id, "x25519_public": _pem(sealing), "ed25519_public": _pem(signing)},
        indent=2,
    ).encode()


@dataclass
class OutboxStats:
    sent: int = 0  # publications, re-sends included
    resent: int = 0
    delivered: int = 0  # alerts a handset acknowledged
    queued: int = 0  # alerts waiting for a receipt
    expired: int = 0
    overflowed: int = 0
    no_handsets: int = 0
    decisions: int = 0
    revised_decisions: int = 0
    duplicate_decisions: int = 0
    refused_decisions: int = 0
    rate_limited_decisions: int = 0


@dataclass
class _Pending:
    alert_id: str
    payload: bytes
    expires: float  # monotonic
    sent_at: float | None = None  # monotonic, the last publication


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Refusals:
    """Refused and rate-limited decisions since the last report, by reason."""

    by_reason: Counter[str] = field(default_factory=Counter)
    reported_at: float = -math.inf  # the first refusal after a quiet interval is reported at once


def _not_the_sender(what: str, sender: str | None, claimed: str) -> str:
    """Why a message naming another handset than its topic is refused (the topic names the certificate)."""
    if sender is None:
        return f"{what} on a topic that names no handset"
    return f"{what} sent on handset {sender!r}'s topic names handset {claimed[:64]!r}: a handset speaks for itself only"


class HandsetChannel:
    """The paired handsets as an alert channel: each alert sealed to all of them, kept until one acknowledges."""

    name = "handsets"

    def __init__(
        self,
        mqtt: Publisher,
        topics: Topics,
        unit_id: str,
        unit_key: Ed25519PrivateKey,
        handsets: Callable[[], dict[str, PairedHandset]],
        cfg: AlertsConfig,
        audit: AuditSink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mqtt = mqtt
        self.topics = topics
        self.unit_id = unit_id
        self.unit_key = unit_key
        self.handsets = handsets
        self.cfg = cfg
        self.audit = audit
        self.clock = clock
        self.stats = OutboxStats()
        self._outbox: OrderedDict[str, _Pending] = OrderedDict()
        self._recent: OrderedDict[str, dict[str, tuple[DecisionKind, int]]] = OrderedDict()  # alert -> decisions
        self._buckets: dict[str, _Bucket] = {}
        self._refusals = _Refusals()
        self._lock = threading.Lock()

    def apply(self, cfg: AlertsConfig) -> None:
        """A reloaded [alerts] section: the outbox's size and time-to-live for the alerts queued from now."""
        self.cfg = cfg

    def show_state(self, state: UnitState) -> None:
        """Nothing to show: the handset protocol carries alerts only; the unit's state is on its status topic."""

    # alerts ---------------------------------------------------------------------------------------

    def deliver(self, alert: Alert) -> None:
        """Seal, sign and queue one alert, then publish what can be published now. Never blocks long."""
        paired = self.handsets()
        with self._lock:
            self._recent[alert.alert_id] = {}
            while len(self._recent) > RECENT_ALERTS:
                self._recent.popitem(last=False)
        if not paired:
            self.stats.no_handsets += 1
            log.error("alert %s: no paired handset to send it to (pair one with lfr-provision)", alert.alert_id)
            return
        payload = encode_alert(alert, self.unit_key, [h.sealing_key for h in paired.values()])
        with self._lock:
            if len(self._outbox) >= self.cfg.queue_max:
                dropped, _ = self._outbox.popitem(last=False)
                self.stats.overflowed += 1
                log.warning("alert outbox full (%d): the oldest alert, %s, was dropped", self.cfg.queue_max, dropped)
            self._outbox[alert.alert_id] = _Pending(alert.alert_id, payload, self.clock() + self.cfg.queue_ttl_s)
            self.stats.queued = len(self._outbox)
        self.flush()

    def flush(self, *, resend_all: bool = False) -> None:
        """Publish what no handset has acknowledged yet: never sent, due for a re-send, or all of it after a
        reconnect (`resend_all`); drop and count what is past its time-to-live."""
        with self._lock:
            now = self.clock()
            for pending in list(self._outbox.values()):
                if pending.expires < now:
                    del self._outbox[pending.alert_id]
                    self.stats.expired += 1
                    log.warning("alert %s expired unacknowledged after %.0f s", pending.alert_id, self.cfg.queue_ttl_s)
                    continue
                due = resend_all or pending.sent_at is None or now - pending.sent_at >= RESEND_S
                if not due:
                    continue
                if not self.mqtt.connected.is_set() or not self.mqtt.publish(
                    self.topics.alerts, pending.payload, qos=1
                ):
                    break
                self.stats.resent += pending.sent_at is not None
                pending.sent_at = now
                self.stats.sent += 1
            self.stats.queued = len(self._outbox)
        self._report_refusals()

    def on_receipt(self, topic: str, payload: bytes) -> None:
        """A handset decrypted an alert: it leaves the outbox. Anything unsigned, unknown or sent on another
        handset's topic is refused (counted)."""
        sender = Topics.handset_of(self.topics.alert_receipts, topic)
        try:
            claimed = claimed_receipt(payload)
            if claimed.handset != sender:
                raise ProtocolError(_not_the_sender("receipt", sender, claimed.handset))
            handset = self.handsets().get(claimed.handset)
            if handset is None or claimed.unit != self.unit_id:
                raise ProtocolError(f"receipt from unknown handset {claimed.handset!r} or for another unit")
            decode_receipt(payload, handset.signing_key)
        except ProtocolError as exc:
            self._refused(f"receipt: {exc}")
            return
        with self._lock:
            pending = self._outbox.pop(claimed.alert_id, None)
            self.stats.queued = len(self._outbox)
        if pending is not None:
            self.stats.delivered += 1
            log.info("alert %s acknowledged by %s", claimed.alert_id, claimed.handset)

    # decisions ------------------------------------------------------------------------------------

    def on_decision(self, topic: str, payload: bytes) -> None:
        """Verify an officer's decision, audit it and answer it; refuse anything unsigned, unknown, malformed
        or naming another handset than its topic, and answer the refusal to the sender."""
        sender = Topics.handset_of(self.topics.decisions, topic)
        if sender is None:
            self._refused(f"decision on {topic[:100]!r}, not a handset's decision topic")
            return
        if not self._within_rate(sender):
            return
        try:
            decision, signature, signed = parse_decision(payload)
        except ProtocolError as exc:
            self._refused(str(exc))
            return
        handset = self.handsets().get(decision.handset)
        try:
            if decision.handset != sender:
                raise ProtocolError(_not_the_sender("decision", sender, decision.handset))
            if decision.unit != self.unit_id:
                raise ProtocolError(f"decision is for unit {decision.unit!r}")
            if handset is None:
                raise ProtocolError(f"decision from unknown handset {decision.handset!r}")
            try:
                crypto.verify(handset.signing_key, signature, signed)
            except crypto.CryptoError as exc:
                raise ProtocolError(f"decision signature from {decision.handset!r} is not valid") from exc
            revision = self._record(decision)
        except ProtocolError as exc:
            self._refused(str(exc))
            self._answer(sender, decision, "refused", str(exc), 0)  # the broker vouches for the sender
            return
        self._answer(sender, decision, "accepted", "", revision)

    def _record(self, decision: Decision) -> int:
        """The decision's revision: 0 the first, +1 for each change; a repeat is answered, not audited again."""
        with self._lock:
            decided = self._recent.get(decision.alert_id)
            if decided is None:
                raise ProtocolError(
                    f"decision for unknown alert {decision.alert_id!r} (raised before the unit restarted, or too old)"
                )
            previous = decided.get(decision.handset)
            if previous is not None and previous[0] == decision.decision:
                self.stats.duplicate_decisions += 1
                return previous[1]
            revision = 0 if previous is None else previous[1] + 1
            decided[decision.handset] = (decision.decision, revision)
        self.stats.decisions += 1
        self.stats.revised_decisions += revision > 0
        change = f" (revision {revision})" if revision else ""
        log.info(
            "officer decision on alert %s: %s%s (%s)", decision.alert_id, decision.decision, change, decision.handset
        )
        self.audit.append(
            OfficerDecision(
                alert_id=decision.alert_id, handset_id=decision.handset, decision=decision.decision, revision=revision
            )
        )
        return revision

    def _answer(self, sender: str, decision: Decision, status: str, reason: str, revision: int) -> None:
        answer = DecisionAnswer(
            unit=self.unit_id,
            handset=sender,
            alert_id=decision.alert_id,
            decision=decision.decision,
            status="accepted" if status == "accepted" else "refused",
            reason=reason,
            revision=revision,
            time=time.time(),
        )
        topic = self.topics.decision_answer_for(sender)
        if not self.mqtt.publish(topic, encode_answer(answer, self.unit_key), qos=1):
            log.warning("could not queue the answer to %s's decision on %s", sender, decision.alert_id)

    def _within_rate(self, handset: str) -> bool:
        """A token bucket per sender (the id its topic names: only its certificate can spend it), checked
        before the decision is even parsed."""
        now = self.clock()
        with self._lock:
            bucket = self._buckets.setdefault(handset[:64], _Bucket(float(DECISION_BURST), now))
            bucket.tokens = min(float(DECISION_BURST), bucket.tokens + (now - bucket.at) * DECISION_RATE)
            bucket.at = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return True
            if len(self._buckets) > 4 * RECENT_ALERTS:  # junk ids must not grow the table without bound
                self._buckets.clear()
        self.stats.rate_limited_decisions += 1
        self._refused(f"over the rate of {DECISION_RATE:g} decisions a second for handset {handset[:64]!r}")
        return False

    def _refused(self, reason: str) -> None:
        self.stats.refused_decisions += 1
        with self._lock:
            self._refusals.by_reason[reason[:200]] += 1
        self._report_refusals()

    def close(self) -> None:
        """At stop: the refusals counted since the last report go to the log and the audit log now."""
        self._report_refusals(now_or_never=True)

    def _report_refusals(self, *, now_or_never: bool = False) -> None:
        """At most once per REFUSAL_REPORT_S: one log line, and one audit event per reason with its count."""
        now = self.clock()
        with self._lock:
            due = now_or_never or now - self._refusals.reported_at >= REFUSAL_REPORT_S
            if not self._refusals.by_reason or not due:
                return
            counts, self._refusals = self._refusals.by_reason, _Refusals(reported_at=now)
        total = sum(counts.values())
        top = ", ".join(f"{n} x {reason}" for reason, n in counts.most_common(3))
        log.warning("refused %d handset message(s) in the last %.0f s: %s", total, REFUSAL_REPORT_S, top)
        for reason, n in counts.most_common(20):
            self.audit.append(DecisionRefused(reason=reason, count=n))
