"""The per-frame work: faces → tracks → match decisions → alerts, and the counters telemetry reports.

One worker thread runs the shared models for every camera (interpreters are not thread-safe); each
camera has its own tracker. A frame's pixels are zeroed once processed (after a match's context picture is
cut from it), the frame's face crops and embeddings once the tracker has taken its copies, and an ended
track's faces before they are dropped: what is not a match does not outlive its frame or track
(tests/test_canary.py searches the process's memory).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lfr_contracts.alerts import MAX_CONTEXT_PX
from lfr_contracts.camera import Frame
from lfr_edge.config import MatchConfig, TrackConfig
from lfr_edge.daemon.alerting import Alerter
from lfr_edge.vision.image import context_jpeg
from lfr_edge.vision.match import Cooldowns, MatchDecision, evaluate
from lfr_edge.vision.pipeline import Face, FacePipeline
from lfr_edge.vision.track import Track, Tracker
from lfr_edge.watchlist.store import WatchlistStore

log = logging.getLogger(__name__)

HeldWatchlist = Callable[[], WatchlistStore | None]


@dataclass
class PipelineStats:
    """Counts only: no biometric data. Read by telemetry, STATUS= and the audit's deployment report."""

    frames: int = 0
    faces_seen: int = 0
    faces_by_camera: Counter[str] = field(default_factory=Counter)
    faces_embedded: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    tracks_started: int = 0
    tracks_ended: int = 0
    tracks_ended_unmatched: int = 0
    alerts: int = 0
    stage_ms: dict[str, deque[float]] = field(default_factory=dict)
    frame_times: deque[float] = field(default_factory=lambda: deque(maxlen=100))
    last_frame_at: float = 0.0

    def record_frame(self, camera: str, faces: list[Face], stage_ms: dict[str, float]) -> None:
        self.frames += 1
        self.faces_seen += len(faces)
        self.faces_by_camera[camera] += len(faces)
        self.faces_embedded += sum(1 for f in faces if f.embedding is not None)
        self.rejected.update(f.quality.reason for f in faces if f.embedding is None)
        for stage, ms in stage_ms.items():
            self.stage_ms.setdefault(stage, deque(maxlen=200)).append(ms)
        self.last_frame_at = time.monotonic()
        self.frame_times.append(self.last_frame_at)

    def record_tracks_started(self, count: int) -> None:
        self.tracks_started += count

    def record_track_ended(self, matched: bool) -> None:
        self.tracks_ended += 1
        if not matched:
            self.tracks_ended_unmatched += 1

    def record_alert(self) -> None:
        self.alerts += 1

    def fps(self) -> float:
        if len(self.frame_times) < 2:
            return 0.0
        span = self.frame_times[-1] - self.frame_times[0]
        return (len(self.frame_times) - 1) / span if span > 0 else 0.0

    def stage_medians(self) -> dict[str, float]:
        return {stage: round(statistics.median(v), 2) for stage, v in self.stage_ms.items() if v}


class PipelineWorker:
    def __init__(
        self,
        pipeline: FacePipeline,
        cameras: list[str],
        track_cfg: TrackConfig,
        match_cfg: MatchConfig,
        watchlist: HeldWatchlist,
        alerter: Alerter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pipeline = pipeline
        self.trackers = {name: Tracker(name, track_cfg) for name in cameras}
        self.match_cfg = match_cfg
        self.watchlist = watchlist
        self.alerter = alerter
        self.clock = clock
        self.cooldowns = Cooldowns(match_cfg.cooldown_s)
        self.stats = PipelineStats()
        self._matched_against: tuple[int, object] | None = None  # the list the tracks were last compared with

    def apply(self, track_cfg: TrackConfig, match_cfg: MatchConfig) -> None:
        """Reloaded [track] and [match] sections, from the next frame on; cooldowns keep their history."""
        for tracker in self.trackers.values():
            tracker.apply(track_cfg)
        self.match_cfg = match_cfg
        self.cooldowns.apply(match_cfg)

    def process(self, frame: Frame) -> list[MatchDecision]:
        started = time.perf_counter()
        try:
            return self._process(frame, started)
        finally:
            frame.image.fill(0)  # the frame is done with (a match's context picture is taken): overwrite it

    def _process(self, frame: Frame, started: float) -> list[MatchDecision]:
        result = self.pipeline.process(frame.image)
        tracker = self.trackers[frame.camera]
        update = tracker.update(result.faces, frame.index, frame.timestamp)
        self.stats.record_tracks_started(sum(1 for t in update.active if t.frames_seen == 1))
        for face in result.faces:  # tracks hold their own copies of their best faces
            face.aligned.fill(0)
            if face.embedding is not None:
                face.embedding.fill(0)
        t_match = time.perf_counter()
        decisions: list[MatchDecision] = []
        watchlist = self.watchlist()
        now = self.clock()
        if watchlist is not None:
            # A list that arrives (or changes) while someone is in view is news for every track, not only
            # for those that just got a better face: a person standing still is compared with it too.
            held = getattr(watchlist, "store", watchlist)
            key = (id(held), getattr(held, "version", None))
            new_list, self._matched_against = key != self._matched_against, key
            for track in update.active:
                if track.new_evidence or new_list:
                    for decision in evaluate(track, watchlist, self.match_cfg, self.cooldowns, now):
                        decisions.append(decision)
                        self._deliver(decision, track, frame, watchlist)
        match_ms = (time.perf_counter() - t_match) * 1e3
        self._end(update.ended)
        frame_ms = (time.perf_counter() - started) * 1e3
        self.stats.record_frame(frame.camera, result.faces, {**result.stage_ms, "match": match_ms, "frame": frame_ms})
        return decisions

    def _deliver(self, decision: MatchDecision, track: Track, frame: Frame, watchlist: WatchlistStore) -> None:
        live = track.best_face()
        if live is None:  # evaluate() needs embeddings, so a track with a decision has faces
            return
        self.stats.record_alert()
        try:
            context = context_jpeg(frame.image, track.box, MAX_CONTEXT_PX)  # a match: the person in this frame
            self.alerter.raise_alert(decision, live, frame.timestamp, watchlist, context)
        except Exception:  # a broken alert path must not stop the pipeline; each channel logs its own faults
            log.exception("alert delivery failed for track %d", decision.track_id)

    def _end(self, ended: list[Track]) -> None:
        for track in ended:
            self.stats.record_track_ended(matched=bool(track.alerted_subjects))
            track.wipe()
        if ended:
            self.pipeline.forget()  # the model's workspace may hold the last of them: one blank run, per track end

    def end_all_tracks(self) -> None:
        for tracker in self.trackers.values():
            self._end(tracker.end_all())
