"""The handset's side of pairing over MQTT (docs/pairing.md, "Transport"), for `lfr-handset pair`.

It reads the unit's open offer, sends the code-authenticated request and checks the unit's confirmation;
the unit's side is `lfr_provision.pair_mqtt.UnitPairing`.
"""

from __future__ import annotations

import json
import queue
import secrets
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from lfr_contracts.pairing import HandsetPairing, PairedUnit, PairingError, loose_fields
from lfr_contracts.topics import Topics
from lfr_tools.broker_client import WAIT_S, QueuedClient, connect_tls

Tls = tuple[Path, Path, Path]  # CA, client certificate, client key
CLOSED_REASONS = {
    "paired": "has been used",
    "expired": "expired",
    "voided": "was voided after too many wrong tries",
    "cancelled": "was cancelled",
}


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
            f"only lets {cn!r} send its own request and read its own answer, so pair with the id {cn!r}"
        )
    topics = Topics.for_unit(prefix, unit_id)
    client_id = f"{handset_id}-pairing-{secrets.token_hex(3)}"
    mqtt = QueuedClient(connect_tls(client_id, host, port, tls, timeout_s=min(timeout_s, WAIT_S)))
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
        mqtt.publish(topics.pairing_request_for(handset_id), request)  # the broker lets only this CN write it
        while True:
            answer = _next(
                mqtt,
                confirm_topic,
                deadline,
                f"unit {unit_id} did not answer the request (a broker whose ACL predates "
                f"{topics.pairing_request_for(handset_id)} drops it: regenerate it with `lfr-provision broker config`)",
            )
            data = _json(answer)
            if data.get("handset_nonce") != nonce:
                continue  # an answer to an earlier attempt (or to someone replaying one)
            if data.get("type") == "refused":
                raise PairingError(f"unit {unit_id} refused: {str(data.get('reason', '?'))[:200]}")
            return pairing.confirm(answer)
    finally:
        mqtt.close()


def _next(mqtt: QueuedClient, topic: str, deadline: float, why: str) -> bytes:
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
    return loose_fields(payload)
