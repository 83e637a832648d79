"""The unit's answer to each watchlist message (unit → command centre, `.../watchlist/ack`, QoS 1, not retained).

UTF-8 JSON of `WatchlistAck`: `applied` (deployment, version, digest, subjects), `waiting` (the window opens
later, or the clock is not yet synchronised: reason, version), `refused` (reason, detail, the version the
message claimed, if any) or `closed` (deployment, nonce). The unit writes it with `encode_ack`; the command
centre (`lfr-watchlist publish|close --wait-ack`) reads it with `decode_ack`, which refuses anything else with
`AckError` naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lfr_contracts import records

AckStatus = Literal["applied", "waiting", "refused", "closed"]
MAX_ACK_BYTES = 8192
MAX_DETAIL = 500  # characters of a refusal's detail the unit sends


class AckError(ValueError):
    """A watchlist ack is not one a unit writes; the message names what was wrong."""


@dataclass(frozen=True)
class WatchlistAck:
    status: AckStatus
    version: int | None = None
    deployment: str | None = None
    digest: str | None = None  # the applied bundle body's sha256 (hex)
    subjects: int | None = None
    reason: str | None = None  # a refusal's or a wait's short code
    detail: str | None = None
    nonce: str | None = None  # the close command's

    @property
    def done(self) -> bool:
        """The message took effect: a list applied, or a deployment closed."""
        return self.status in ("applied", "closed")


def encode_ack(ack: WatchlistAck) -> bytes:
    return records.to_json(ack)


def decode_ack(payload: bytes) -> WatchlistAck:
    try:
        return records.from_json(WatchlistAck, payload, MAX_ACK_BYTES, "watchlist ack")
    except records.RecordError as exc:
        raise AckError(str(exc)) from None
