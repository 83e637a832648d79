"""Alerts to paired handsets over MQTT, and the officers' decisions coming back.

Each alert is sealed to every paired handset and signed by the unit. While the broker is unreachable,
alerts wait in a bounded in-memory outbox with a time-to-live and go out on reconnect; what expires or
overflows is counted and logged, never written to disk. Decisions are verified against the handset's
pairing key and written to the audit log; duplicates (QoS 1 redelivery) are recognised by alert id.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from lfr_contracts import crypto
from lfr_contracts.alerts import Alert, ProtocolError, encode_alert, parse_decision
from lfr_contracts.audit_events import AuditSink, DecisionRefused, OfficerDecision
from lfr_edge.alerts.channel import UnitState
from lfr_edge.config import AlertsConfig

log = logging.getLogger(__name__)

RECENT_ALERTS = 1000  # alert ids remembered for decisions and duplicate detection


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
    sent: int = 0
    queued: int = 0
    expired: int = 0
    overflowed: int = 0
    no_handsets: int = 0
    decisions: int = 0
    duplicate_decisions: int = 0
    refused_decisions: int = 0


class HandsetChannel:
    """The paired handsets as an alert channel: each alert sealed to all of them, queued while offline."""

    name = "handsets"

    def __init__(
        self,
        mqtt: Publisher,
        alerts_topic: str,
        unit_id: str,
        unit_key: Ed25519PrivateKey,
        handsets: Callable[[], dict[str, PairedHandset]],
        cfg: AlertsConfig,
        audit: AuditSink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.mqtt = mqtt
        self.topic = alerts_topic
        self.unit_id = unit_id
        self.unit_key = unit_key
        self.handsets = handsets
        self.cfg = cfg
        self.audit = audit
        self.clock = clock
        self.stats = OutboxStats()
        self._outbox: deque[tuple[float, str, bytes]] = deque()
        self._recent: OrderedDict[str, set[str]] = OrderedDict()  # alert id -> handsets that decided
        self._lock = threading.Lock()

    def apply(self, cfg: AlertsConfig) -> None:
        """A reloaded [alerts] section: the outbox's size and time-to-live for the alerts queued from now."""
        self.cfg = cfg

    def show_state(self, state: UnitState) -> None:
        """Nothing to show: the handset protocol carries alerts only; the unit's state is on its status topic."""

    def deliver(self, alert: Alert) -> None:
        """Seal, sign and queue one alert, then publish what can be published now. Never blocks long."""
        paired = self.handsets()
        with self._lock:
            self._recent[alert.alert_id] = set()
            while len(self._recent) > RECENT_ALERTS:
                self._recent.popitem(last=False)
        if not paired:
            self.stats.no_handsets += 1
            log.error("alert %s: no paired handset to send it to (pair one with lfr-provision)", alert.alert_id)
            return
        payload = encode_alert(alert, self.unit_key, [h.sealing_key for h in paired.values()])
        with self._lock:
            if len(self._outbox) >= self.cfg.queue_max:
                self._outbox.popleft()
                self.stats.overflowed += 1
                log.warning("alert outbox full (%d): the oldest alert was dropped", self.cfg.queue_max)
            self._outbox.append((self.clock() + self.cfg.queue_ttl_s, alert.alert_id, payload))
            self.stats.queued = len(self._outbox)
        self.flush()

    def flush(self) -> None:
        """Publish queued alerts while connected; drop and count the ones past their time-to-live."""
        with self._lock:
            now = self.clock()
            while self._outbox:
                expires, alert_id, payload = self._outbox[0]
                if expires < now:
                    self._outbox.popleft()
                    self.stats.expired += 1
                    log.warning("alert %s expired undelivered after %.0f s", alert_id, self.cfg.queue_ttl_s)
                    continue
                if not self.mqtt.connected.is_set() or not self.mqtt.publish(self.topic, payload, qos=1):
                    break
                self._outbox.popleft()
                self.stats.sent += 1
            self.stats.queued = len(self._outbox)

    def on_decision(self, topic: str, payload: bytes) -> None:
        """Verify an officer's decision and audit it; refuse anything unsigned, unknown or malformed."""
        try:
            decision, signature, signed = parse_decision(payload)
            if decision.unit != self.unit_id:
                raise ProtocolError(f"decision is for unit {decision.unit!r}")
            handset = self.handsets().get(decision.handset)
            if handset is None:
                raise ProtocolError(f"decision from unknown handset {decision.handset!r}")
            try:
                crypto.verify(handset.signing_key, signature, signed)
            except crypto.CryptoError as exc:
                raise ProtocolError(f"decision signature from {decision.handset!r} is not valid") from exc
            with self._lock:
                deciders = self._recent.get(decision.alert_id)
                if deciders is None:
                    raise ProtocolError(f"decision for unknown alert {decision.alert_id!r}")
                if decision.handset in deciders:
                    self.stats.duplicate_decisions += 1
                    log.debug("duplicate decision for alert %s from %s", decision.alert_id, decision.handset)
                    return
                deciders.add(decision.handset)
        except ProtocolError as exc:
            self.stats.refused_decisions += 1
            log.warning("decision refused: %s", exc)
            self.audit.append(DecisionRefused(reason=str(exc)[:200]))
            return
        self.stats.decisions += 1
        log.info("officer decision on alert %s: %s (%s)", decision.alert_id, decision.decision, decision.handset)
        self.audit.append(
            OfficerDecision(alert_id=decision.alert_id, handset_id=decision.handset, decision=decision.decision)
        )
