"""Handset pairing carried over MQTT (docs/pairing.md, "Transport"): both ends of the three messages.

`UnitPairing` is the unit's side for `lfr-provision pair-handset`: it connects as the unit's pairing
identity (`<unit>.pairing`, its own certificate for the unit's key: the broker binds each client id to a
certificate, so the running daemon stays connected as the unit and its retained status is left alone),
publishes the session's offer retained, feeds each request on the request topic to the pure
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lfr_contracts.pairing import (
    VERSION,
    PairedHandset,
    PairingError,
    PairingSession,
    loose_fields,
)
from lfr_contracts.topics import Topics
from lfr_provision import handsets
from lfr_tools.broker_client import WAIT_S, QueuedClient, connect_tls

Tls = tuple[Path, Path, Path]  # CA, client certificate, client key


@dataclass
class PairingOutcome:
    """How a pairing session ended: `paired` (with the handset and its registry file), `expired`,
    `voided` (too many wrong codes) or `cancelled`; `refusals` lists every refused request, in order."""

    result: str
    handset: PairedHandset | None = None
    registry_file: Path | None = None
    refusals: list[str] = field(default_factory=list)


def _handset_of(request: bytes) -> tuple[str, str] | None:
    """(handset id, handset nonce) of a request, read loosely: only to address the refusal to it."""
    data = loose_fields(request)  # bounded: a deeply nested request must not end pair-handset
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
        self._mqtt: QueuedClient | None = None
        self._cancel = threading.Event()

    def open(self, timeout_s: float = WAIT_S) -> None:
        """Connect, listen for requests, then publish the offer (retained, so a late handset finds it)."""
        host, port, tls = self._where
        client_id = f"{self.session.unit_id}-pairing-{secrets.token_hex(3)}"  # the broker uses the CN
        self._mqtt = QueuedClient(connect_tls(client_id, host, port, tls, timeout_s=timeout_s))
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
