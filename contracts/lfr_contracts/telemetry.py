"""The unit's telemetry message (unit → command centre, `.../telemetry`, QoS 0): counts and timings only.

UTF-8 JSON of `Telemetry`. The unit builds one every `daemon.telemetry_interval_s` and sends it with
`encode_telemetry`; the command centre, the demo and the benchmarks read it with `decode_telemetry`,
which refuses a missing, unknown or mistyped field by name. No frame, crop or embedding is ever part of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lfr_contracts import records
from lfr_contracts.beacon import Pattern
from lfr_contracts.status import WatchlistStatus

MAX_TELEMETRY_BYTES = 64 * 1024


class TelemetryError(ValueError):
    """A telemetry message is not valid JSON of the telemetry message; the message names the field."""


class CameraState(StrEnum):
    STARTING = "starting"
    STREAMING = "streaming"
    STALLED = "stalled"  # streaming, but no frame for a while (a hung camera)
    RECONNECTING = "reconnecting"
    ENDED = "ended"  # the source's stream ended (a replay or a simulated scene)
    STOPPED = "stopped"


@dataclass(frozen=True)
class BeaconLink:
    connected: bool  # the serial port is open
    responsive: bool  # the last command was answered
    pattern: Pattern | None  # what the beacon acknowledged showing since the port was opened


@dataclass(frozen=True)
class ThreadHealth:
    """The daemon's supervised threads (lfr_edge.daemon.supervise)."""

    failures: dict[str, int]  # unexpected exceptions per thread since start (threads that had none are left out)
    down: tuple[str, ...]  # threads that could not recover: the unit stops petting systemd's watchdog


@dataclass(frozen=True)
class AuditHealth:
    """Whether the audit log is being written (lfr_edge.audit.log): a full disk is a fault, not a crash."""

    writable: bool  # False from a failed write until writing works again
    lost: int  # records that could not be written since start (each gap record in the log counts its own)
    failing_since: float | None  # epoch seconds of the first failed write of the current episode


@dataclass(frozen=True)
class Telemetry:
    unit: str
    time: float  # epoch seconds at the unit
    uptime_s: float
    fps: float
    frames: int
    faces_seen: int
    faces_embedded: int
    faces_rejected: dict[str, int]  # by quality reason
    tracks_started: int
    tracks_ended_unmatched: int
    alerts: int
    stage_ms: dict[str, float]  # median per pipeline stage
    frames_skipped: dict[str, int]  # per camera: frames a newer one replaced before the pipeline took them
    camera_fps: dict[str, float]  # per camera: frames processed per second (below the camera's when behind)
    cpu_temp_c: float | None
    watchlist: WatchlistStatus  # which list the unit holds, or why none
    cameras: dict[str, CameraState]
    camera_dropped: dict[str, int]  # by each camera source
    beacon: BeaconLink | None  # None when the unit has no beacon
    alerts_outbox: dict[str, int]  # the handset channel's counters
    threads: ThreadHealth
    audit: AuditHealth
    messages_dropped: dict[str, int] = field(default_factory=dict)  # per subscribed topic: oversize or queue full

    @property
    def dropped_total(self) -> int:
        """Frames the pipeline had no time for: skipped for a newer one, or lost by a camera source."""
        return sum(self.frames_skipped.values()) + sum(self.camera_dropped.values())


def encode_telemetry(message: Telemetry) -> bytes:
    return records.to_json(message)


def decode_telemetry(payload: bytes) -> Telemetry:
    """A `Telemetry`, or TelemetryError naming the field: size, depth and numbers are bounded before parsing."""
    try:
        return records.from_json(Telemetry, payload, MAX_TELEMETRY_BYTES, "telemetry")
    except records.RecordError as exc:
        raise TelemetryError(str(exc)) from None
