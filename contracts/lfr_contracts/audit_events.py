"""One typed class per audit event: what the unit writes to its audit log and what the report reads back.

A line of the log is {"seq", "time", "event": <the class's `name`>, ...the event's fields, "prev"}; the log
(lfr_edge.audit.log) adds seq, time and prev. Writers build these classes and hand them to the log;
readers (the deployment report) turn each line back into one with `decode_event`, which refuses a
missing, unknown or mistyped field by name. Only counts, identifiers, times and decisions belong here:
the log refuses anything that looks like biometric data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from lfr_contracts import records
from lfr_contracts.alerts import DecisionKind

LINE_FIELDS = ("seq", "time", "event", "prev")  # what the log adds around an event's fields
_EVENT_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")


class AuditEventError(ValueError):
    """A log line is not a known event with the fields of its class; the message says what is wrong."""


class WipeReason(StrEnum):
    """Why the held watchlist was zeroed and dropped."""

    EXPIRED = "expired"  # its validity window ended
    CLOSED = "closed"  # the command centre closed its deployment
    SHUTDOWN = "shutdown"  # the unit stopped


class FaultComponent(StrEnum):
    CAMERA = "camera"
    BEACON = "beacon"
    BROKER = "broker"


class FaultProblem(StrEnum):
    STALLED = "stalled"  # a camera that is streaming delivers no frames
    DISCONNECTED = "disconnected"  # a camera, the beacon's serial port or the broker connection was lost
    UNRESPONSIVE = "unresponsive"  # the beacon's port is open but it does not answer


@dataclass(frozen=True)
class AuditEvent:
    """Base of every event; `name` is the `event` of its log lines."""

    name: ClassVar[str]

    def to_fields(self) -> dict[str, Any]:
        """The event's fields as JSON values (its line without seq, time, event and prev)."""
        return records.encode(self)


@dataclass(frozen=True)
class LogCreated(AuditEvent):
    """The first line of every log; after a damaged log was set aside, names it and its sha256."""

    name: ClassVar[str] = "log_created"
    unit: str
    previous_log: str | None = None
    previous_log_sha256: str | None = None


@dataclass(frozen=True)
class RecordsLost(AuditEvent):
    """A gap in the log: records that could not be written (the file system was full or failing), counted
    while it lasted and written, chained like any other line, as soon as writing works again. At start, an
    incomplete last line (a write cut short by a power cut) is cut off and recorded here too."""

    name: ClassVar[str] = "gap"
    lost: int  # records that are not in the log
    lost_events: dict[str, int]  # how many of each event
    since: str  # ISO 8601 UTC: the first record lost (or when the cut tail was found)
    until: str  # the last record lost
    error: str  # why they could not be written, e.g. "No space left on device"
    cut_bytes: int | None = None  # the incomplete last line that was cut off at start: its length
    cut_sha256: str | None = None  # and its sha256


@dataclass(frozen=True)
class Started(AuditEvent):
    name: ClassVar[str] = "started"
    version: str
    cameras: tuple[str, ...]


@dataclass(frozen=True)
class Stopped(AuditEvent):
    name: ClassVar[str] = "stopped"
    reason: str
    frames: int


@dataclass(frozen=True)
class ConfigReloaded(AuditEvent):
    """SIGHUP: the live sections were applied; `restart_needed` names the changed ones that were not."""

    name: ClassVar[str] = "config_reloaded"
    restart_needed: tuple[str, ...]


@dataclass(frozen=True)
class FacesSeen(AuditEvent):
    """Faces tracked on one camera since the previous faces_seen of that camera (a count, nothing else)."""

    name: ClassVar[str] = "faces_seen"
    camera: str
    count: int


@dataclass(frozen=True)
class AlertRaised(AuditEvent):
    name: ClassVar[str] = "alert_raised"
    alert_id: str
    camera: str
    subject_id: str
    score: float
    watchlist_version: int


@dataclass(frozen=True)
class OfficerDecision(AuditEvent):
    """A signed decision from a paired handset, verified by the unit."""

    name: ClassVar[str] = "decision"
    alert_id: str
    handset_id: str
    decision: DecisionKind
    revision: int = 0  # an officer's changed decision on the same alert: 1, 2, ...; the report counts the last


@dataclass(frozen=True)
class DecisionRefused(AuditEvent):
    """Decision messages that were malformed, unsigned, from an unknown handset, for an unknown alert or over
    a handset's rate: one event per reason and interval, so a flood does not write a line per message."""

    name: ClassVar[str] = "decision_refused"
    reason: str
    count: int = 1


@dataclass(frozen=True)
class WatchlistApplied(AuditEvent):
    name: ClassVar[str] = "watchlist_applied"
    deployment: str
    version: int
    digest: str  # sha256 of the sealed body
    subjects: int
    valid_from: str  # ISO 8601 UTC
    valid_until: str
    replaced: int | None  # the version it replaced, if one was held


@dataclass(frozen=True)
class WatchlistRefused(AuditEvent):
    """A bundle or close command that was refused; the held list did not change."""

    name: ClassVar[str] = "watchlist_refused"
    reason: str  # lfr_contracts.bundle.BundleError.reason
    detail: str
    version: int | None  # the version a refused bundle claims (unverified), if it could be read


@dataclass(frozen=True)
class WatchlistRefusedRepeats(AuditEvent):
    """Refusals of one reason within one interval after the first (which has its own watchlist_refused):
    a flood of bad messages writes one line per reason and interval, not one per message."""

    name: ClassVar[str] = "watchlist_refused_repeats"
    reason: str
    count: int
    since: str  # ISO 8601 UTC: the first refusal counted here
    until: str  # the last one
    detail: str  # the last one's detail
    version: int | None  # the version the last one claims, if it could be read


@dataclass(frozen=True)
class WatchlistClose(AuditEvent):
    """A signed close command for a deployment was accepted (a held list of it was wiped just before)."""

    name: ClassVar[str] = "watchlist_close"
    deployment: str
    nonce: str


@dataclass(frozen=True)
class WatchlistWiped(AuditEvent):
    name: ClassVar[str] = "watchlist_wiped"
    deployment: str
    version: int
    subjects: int
    reason: WipeReason


@dataclass(frozen=True)
class Fault(AuditEvent):
    """A fault episode began (one event per episode, however long it lasts)."""

    name: ClassVar[str] = "fault"
    component: FaultComponent
    source: str  # which one: the camera's name, the beacon's port, the broker's host:port
    problem: FaultProblem
    detail: str


@dataclass(frozen=True)
class FaultCleared(AuditEvent):
    """The fault episode of the same component, source and problem ended."""

    name: ClassVar[str] = "fault_cleared"
    component: FaultComponent
    source: str
    problem: FaultProblem
    lasted_s: float


@dataclass(frozen=True)
class HandsetPaired(AuditEvent):
    """`lfr-provision pair-handset` registered a handset's public keys (in the pairing log: the daemon owns
    the unit's audit log, so the pairing helper keeps a chain of its own beside it; docs/pairing.md)."""

    name: ClassVar[str] = "handset_paired"
    handset_id: str
    session: str  # the pairing session's id
    replaced: bool  # the handset was paired before: its old keys were replaced


@dataclass(frozen=True)
class PairingRefused(AuditEvent):
    """A pairing request was refused. `sender` is the certificate CN the broker vouches for (the request
    topic's last level); `claimed` is the handset id the request named, when it named a valid one. A session
    writes its first refusals one by one, then one line per sender with the `count` of the rest."""

    name: ClassVar[str] = "pairing_refused"
    sender: str
    session: str
    reason: str
    claimed: str | None = None
    count: int = 1


EVENTS: Mapping[str, type[AuditEvent]] = {
    cls.name: cls
    for cls in (
        LogCreated,
        RecordsLost,
        Started,
        Stopped,
        ConfigReloaded,
        FacesSeen,
        AlertRaised,
        OfficerDecision,
        DecisionRefused,
        WatchlistApplied,
        WatchlistRefused,
        WatchlistRefusedRepeats,
        WatchlistClose,
        WatchlistWiped,
        Fault,
        FaultCleared,
        HandsetPaired,
        PairingRefused,
    )
}


def _check_declarations() -> None:
    for name, cls in EVENTS.items():
        if not _EVENT_NAME.match(name):
            raise AssertionError(f"{cls.__name__}: event name {name!r} must be lower-case letters, digits, _ or .")
        clash = {f.name for f in dataclasses.fields(cls)} & set(LINE_FIELDS)
        if clash:
            raise AssertionError(f"{cls.__name__}: field(s) {sorted(clash)} are the log line's own")


_check_declarations()


def decode_event(name: str, fields: Mapping[str, Any]) -> AuditEvent:
    """The event of one log line (its `event` and its fields without seq, time, event and prev)."""
    cls = EVENTS.get(name)
    if cls is None:
        raise AuditEventError(f"unknown audit event {name!r}")
    try:
        return records.decode(cls, fields, name)
    except records.RecordError as exc:
        raise AuditEventError(str(exc)) from exc


def check_event(event: AuditEvent) -> None:
    """Raise AuditEventError when an event's values do not have its declared types (before it is written)."""
    if EVENTS.get(event.name) is not type(event):
        raise AuditEventError(f"{type(event).__name__} is not a declared audit event (see EVENTS)")
    decode_event(event.name, event.to_fields())


class AuditSink(Protocol):
    """What a writer needs of the audit log (lfr_edge.audit.log.AuditLog is one)."""

    def append(self, event: AuditEvent) -> object: ...
