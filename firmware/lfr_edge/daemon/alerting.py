"""From a match decision to one alert on every channel, and its line in the audit log.

The alert is built from plain data: the decision, the track's best face and the subject's record, opened
from the same held watchlist the decision was searched in (a list replaced in between cannot lend its
subject to another list's decision).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence

from lfr_contracts.alerts import Alert
from lfr_contracts.audit_events import AlertRaised, AuditSink
from lfr_contracts.calibration import CalibrationTable, ScoreRate
from lfr_edge.alerts.channel import AlertChannel, deliver_to_all
from lfr_edge.vision.image import encode_jpeg
from lfr_edge.vision.match import MatchDecision
from lfr_edge.vision.track import TrackFace
from lfr_edge.watchlist.store import SubjectRecord, WatchlistStore, WatchlistUnavailable

log = logging.getLogger("lfr_edge.daemon")


def new_alert_id() -> str:
    return uuid.uuid4().hex[:16]


def build_alert(
    alert_id: str,
    unit_id: str,
    wall_time: float,
    decision: MatchDecision,
    live: TrackFace,
    subject: SubjectRecord,
    context: bytes = b"",
    rate: ScoreRate | None = None,
) -> Alert:
    return Alert(
        alert_id=alert_id,
        unit=unit_id,
        camera=decision.camera,
        time=wall_time,
        score=round(decision.score, 4),
        threshold=decision.threshold,
        subject_id=subject.id,
        category=subject.category,
        reference=subject.reference,
        live_jpeg=encode_jpeg(live.crop),
        watchlist_jpeg=subject.photo_jpeg,
        context_jpeg=context,
        rate=rate,
    )


class Alerter:
    """Raises the alerts the worker's decisions call for: one `Alert`, handed to each channel in turn."""

    def __init__(
        self,
        unit_id: str,
        channels: Sequence[AlertChannel],
        audit: AuditSink,
        *,
        new_id: Callable[[], str] = new_alert_id,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        calibration: CalibrationTable | None = None,
    ) -> None:
        self._unit_id = unit_id
        self._channels = tuple(channels)
        self._audit = audit
        self._new_id = new_id
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._calibration = calibration  # the embedder's table: each alert carries its rate at the score

    def raise_alert(
        self, decision: MatchDecision, live: TrackFace, frame_time: float, store: WatchlistStore, context: bytes = b""
    ) -> Alert | None:
        """Deliver and audit one alert; None when the list was wiped before its subject could be read."""
        try:
            subject = store.subject(decision.subject_index)
        except (WatchlistUnavailable, IndexError) as exc:
            log.warning("alert for track %d dropped: %s", decision.track_id, exc)
            return None
        alert_id = self._new_id()
        # The frame's capture time is on the monotonic clock; alerts carry wall-clock time.
        wall_time = self._wall_clock() - (self._monotonic() - frame_time)
        table, score = self._calibration, round(decision.score, 4)
        rate = None if table is None else table.rate(score, store.size, store.comparisons)
        alert = build_alert(alert_id, self._unit_id, wall_time, decision, live, subject, context, rate)
        deliver_to_all(self._channels, alert)
        self._audit.append(
            AlertRaised(
                alert_id=alert_id,
                camera=decision.camera,
                subject_id=subject.id,
                score=round(float(decision.score), 3),
                watchlist_version=store.version,
            )
        )
        log.info(
            "ALERT %s: subject %s on %s, score %.3f (threshold %.2f, %d frames)",
            alert_id,
            subject.id,
            decision.camera,
            decision.score,
            decision.threshold,
            decision.supporting_frames,
        )
        return alert
