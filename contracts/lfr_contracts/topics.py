"""The MQTT topic names of a unit: one place for every side."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Every topic of one unit, in one place (DESIGN.md, MQTT topics)."""

    status: str
    watchlist: str
    watchlist_ack: str
    alerts: str
    alert_receipts: str  # handsets' signed receipts of the alerts they decrypted
    decisions: str
    decision_answers: str  # the unit's answer to one handset on `<decision_answers>/<handset id>`
    telemetry: str
    audit: str
    # Handset pairing (docs/pairing.md): the unit's retained offer, each handset's request on
    # `<pairing_request>/<handset id>` (the broker lets only the certificate with that CN write there, so the
    # topic names the sender), and the unit's answer to one handset on `<pairing_confirm>/<handset id>`.
    pairing_offer: str
    pairing_request: str
    pairing_confirm: str

    @classmethod
    def for_unit(cls, prefix: str, unit_id: str) -> Topics:
        base = f"{prefix}/units/{unit_id}"
        return cls(
            status=f"{base}/status",
            watchlist=f"{base}/watchlist",
            watchlist_ack=f"{base}/watchlist/ack",
            alerts=f"{base}/alerts",
            alert_receipts=f"{base}/alerts/ack",
            decisions=f"{base}/decisions",
            decision_answers=f"{base}/decisions/answer",
            telemetry=f"{base}/telemetry",
            audit=f"{base}/audit",
            pairing_offer=f"{base}/pairing/offer",
            pairing_request=f"{base}/pairing/request",
            pairing_confirm=f"{base}/pairing/confirm",
        )

    def decision_answer_for(self, handset_id: str) -> str:
        return f"{self.decision_answers}/{handset_id}"

    def pairing_confirm_for(self, handset_id: str) -> str:
        return f"{self.pairing_confirm}/{handset_id}"

    def pairing_request_for(self, handset_id: str) -> str:
        return f"{self.pairing_request}/{handset_id}"

    @property
    def pairing_requests(self) -> str:
        """The unit's pairing helper subscribes to every handset's request topic."""
        return f"{self.pairing_request}/+"

    def pairing_request_sender(self, topic: str) -> str | None:
        """The handset id a request topic names (the certificate CN the broker let publish there), or None
        when the topic is not one handset's request topic."""
        head, sep, handset_id = topic.rpartition("/")
        if head != self.pairing_request or not sep or not handset_id:
            return None
        return handset_id
