"""Handset pairing carried over MQTT (docs/pairing.md, "Transport"): both ends of the three messages.

`UnitPairing` is the unit's side for `lfr-provision pair-handset`: it connects as the unit's pairing
identity (`<unit>.pairing`, its own certificate for the unit's key: the broker binds each client id to a
certificate, so the running daemon stays connected as the unit and its retained status is left alone),
publishes the session's offer retained, feeds each request to the pure `PairingSession.accept` with the
handset id its topic names, registers the handset and answers on `pairing/confirm/<handset id>`. Each
handset sends on its own `pairing/request/<handset id>`, which the broker's ACL lets only the certificate
with that CN write: the topic names the sender, and a request naming another handset is refused. A refused
request is answered on the sender's confirm topic too (the reason only: never how close the code was), so
the officer sees "wrong code" at once instead of waiting for a time-out. Every pairing and refusal is
written to the pairing audit log. `pair_with_unit` (tools/lfr_tools/handset/pairing.py) is the handset's side.

The broker's ACL lets only the unit write the offer and the confirmations, each handset write only its own
request topic and read only its own confirmation topic; the code authenticates the exchange, the
certificate the handset's id.
"""

from __future__ import annotations

import contextlib
import json
import queue
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lfr_contracts.audit_events import AuditSink, HandsetPaired, PairingRefused
from lfr_contracts.pairing import (
    VERSION,
    PairedHandset,
    PairingError,
    PairingSession,
    loose_fields,
)
from lfr_contracts.topics import Topics
from lfr_contracts.untrusted import is_identifier
from lfr_provision import handsets
from lfr_tools.broker_client import WAIT_S, QueuedClient, connect_tls

Tls = tuple[Path, Path, Path]  # CA, client certificate, client key


SHOWN_REFUSALS = 20  # per session, each shown and audited; later ones are counted, one audit line per sender


@dataclass
class PairingOutcome:
    """How a pairing session ended: `paired` (with the handset and its registry file), `expired`,
    `voided` (too many wrong codes) or `cancelled`; `refusals` lists the first SHOWN_REFUSALS refused
    requests, in order, and `more_refusals` counts the later ones by sender (a flood writes a line each)."""

    result: str
    handset: PairedHandset | None = None
    registry_file: Path | None = None
    refusals: list[str] = field(default_factory=list)
    more_refusals: Counter[str] = field(default_factory=Counter)


def _nonce_of(request: bytes) -> str | None:
    """The handset nonce of a request, read loosely: only so the sender can match the refusal to its try."""
    nonce = loose_fields(request).get("handset_nonce")  # bounded: a deeply nested request must not end it
    return nonce if isinstance(nonce, str) and len(nonce) <= 64 else None


def _claimed(request: bytes) -> str | None:
    """The handset id a request names, read loosely (for the audit log), when it is a valid id."""
    handset_id = loose_fields(request).get("handset_id")
    return handset_id if isinstance(handset_id, str) and is_identifier(handset_id) else None


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
        audit: AuditSink,
        prefix: str = "lfr/v1",
        expected_handset: str | None = None,
        on_refusal: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.session = session
        self.audit = audit
        self.topics = Topics.for_unit(prefix, session.unit_id)
        self.handsets_dir = handsets_dir
        self.expected_handset = expected_handset
        self.on_refusal = on_refusal
        self._where = (host, port, tls)
        self._mqtt: QueuedClient | None = None
        self._cancel = threading.Event()

    def open(self, timeout_s: float = WAIT_S) -> None:
        """Connect, listen for requests, then publish the offer (retained, so a late handset finds it)."""
        host, port, tls = self._where
        client_id = f"{self.session.unit_id}-pairing-{secrets.token_hex(3)}"  # the broker uses the CN
        self._mqtt = QueuedClient(connect_tls(client_id, host, port, tls, timeout_s=timeout_s))
        self._mqtt.subscribe(self.topics.pairing_requests)  # every handset's own request topic
        self._mqtt.publish(self.topics.pairing_offer, self.session.offer(), retain=True)

    def cancel(self) -> None:
        """Stop serve() early (Ctrl-C, a test's clean-up)."""
        self._cancel.set()

    def serve(self) -> PairingOutcome:
        """Answer requests until one pairs, the code expires or is voided, or cancel() is called."""
        if self._mqtt is None:
            raise RuntimeError("open() first")
        outcome = PairingOutcome("cancelled")
        try:
            return self._serve(outcome)
        finally:
            for sender, count in sorted(outcome.more_refusals.items()):
                reason = f"{count} more refused request(s) from {sender}, counted after the first {SHOWN_REFUSALS}"
                self.on_refusal(reason)
                self.audit.append(PairingRefused(sender, self.session.session_id, reason, count=count))

    def _serve(self, outcome: PairingOutcome) -> PairingOutcome:
        assert self._mqtt is not None
        while not self._cancel.is_set():
            if self.session.now() > self.session.expires_at:
                outcome.result = "expired"
                break
            try:
                message = self._mqtt.messages.get(timeout=0.2)  # wakes for cancel() and expiry
            except queue.Empty:
                continue
            payload = bytes(message.payload)
            sender = self.topics.pairing_request_sender(message.topic)
            if sender is None:
                continue  # not a request topic: the subscription delivers none, the broker writes none
            try:
                handset, confirm = self._accept(payload, sender)
            except PairingError as exc:
                reason = str(exc)
                if len(outcome.refusals) < SHOWN_REFUSALS:
                    outcome.refusals.append(reason)
                    self.on_refusal(reason)
                    self.audit.append(PairingRefused(sender, self.session.session_id, reason[:200], _claimed(payload)))
                else:
                    outcome.more_refusals[sender] += 1
                self._answer_refusal(sender, payload, reason)
                if self.session.attempts_left <= 0:
                    outcome.result = "voided"
                    break
                continue  # an expired code ends the loop at its top
            replaced = handsets.is_paired(self.handsets_dir, handset.handset_id)
            path = handsets.register(self.handsets_dir, handset)
            self.audit.append(HandsetPaired(handset.handset_id, self.session.session_id, replaced))
            self._mqtt.publish(self.topics.pairing_confirm_for(handset.handset_id), confirm)
            outcome.result, outcome.handset, outcome.registry_file = "paired", handset, path
            return outcome
        return outcome

    def _accept(self, payload: bytes, sender: str) -> tuple[PairedHandset, bytes]:
        if self.expected_handset is not None and sender != self.expected_handset:
            raise PairingError(f"request: this pairing is for handset {self.expected_handset!r} only")
        return self.session.accept(payload, sender=sender)

    def _answer_refusal(self, sender: str, request: bytes, reason: str) -> None:
        """Tell the sender (on its own confirm topic, whatever id the request named) why it was refused."""
        nonce = _nonce_of(request)
        if nonce is not None and self._mqtt is not None:
            body = json.dumps(
                {"type": "refused", "v": VERSION, "handset_id": sender, "handset_nonce": nonce,
                 "reason": reason[:200]}
            ).encode()  # fmt: skip
            with contextlib.suppress(ConnectionError):  # a courtesy: the handset times out without it
                self._mqtt.publish(self.topics.pairing_confirm_for(sender), body)

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
