"""The per-frame work: faces → tracks → best shots embedded → match decisions → alerts, and the counters.

One worker thread runs the shared models for every camera (interpreters are not thread-safe); each
camera has its own tracker. Each cycle takes the newest frame of every camera (lfr_edge.daemon.frames),
finds and scores the faces, follows them by motion, and only then embeds (its crop redone from keypoints
found close up) a face of a track that is new or clearly better than the track's best shot: at most
`embed.max_per_frame` per cycle for all cameras, new tracks first, so a frame costs what people arriving
cost, not what people in view cost. A frame's pixels are zeroed at the end of its cycle (after a match's
context picture is cut from it), every face's crop too (tracks keep copies of their shots), and an ended
track's shots before they are dropped (tests/test_canary.py searches memory).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lfr_contracts.alerts import MAX_CONTEXT_PX
from lfr_contracts.camera import Frame
from lfr_edge.config import EmbedConfig, MatchConfig, TrackConfig
from lfr_edge.daemon.alerting import Alerter
from lfr_edge.vision.image import context_jpeg
from lfr_edge.vision.match import Cooldowns, MatchDecision, evaluate
from lfr_edge.vision.pipeline import Face, FacePipeline
from lfr_edge.vision.track import Track, Tracker, TrackUpdate
from lfr_edge.watchlist.store import WatchlistStore

log = logging.getLogger(__name__)

HeldWatchlist = Callable[[], WatchlistStore | None]
Seen = tuple[Frame, TrackUpdate]


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
    camera_times: dict[str, deque[float]] = field(default_factory=dict)
    last_frame_at: float = 0.0

    def record_frame(self, camera: str, faces: list[Face], stage_ms: dict[str, float]) -> None:
        self.frames += 1
        self.faces_seen += len(faces)
        self.faces_by_camera[camera] += len(faces)
        self.rejected.update(f.quality.reason for f in faces if not f.quality.ok)
        self.record_stages(stage_ms)
        self.last_frame_at = time.monotonic()
        self.frame_times.append(self.last_frame_at)
        self.camera_times.setdefault(camera, deque(maxlen=50)).append(self.last_frame_at)

    def record_stages(self, stage_ms: dict[str, float]) -> None:
        for stage, ms in stage_ms.items():
            self.stage_ms.setdefault(stage, deque(maxlen=200)).append(ms)

    def record_tracks_started(self, count: int) -> None:
        self.tracks_started += count

    def record_track_ended(self, matched: bool) -> None:
        self.tracks_ended += 1
        if not matched:
            self.tracks_ended_unmatched += 1

    def record_alert(self) -> None:
        self.alerts += 1

    def fps(self) -> float:
        return _rate(self.frame_times)

    def camera_fps(self) -> dict[str, float]:
        """Frames processed per second, per camera: below the camera's rate when the unit falls behind."""
        return {
            camera: round(_rate(times), 2) for camera, times in list(self.camera_times.items())
        }  # telemetry's thread

    def stage_medians(self) -> dict[str, float]:
        return {stage: round(statistics.median(v), 2) for stage, v in self.stage_ms.items() if v}


def _rate(times: deque[float]) -> float:
    if len(times) < 2:
        return 0.0
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else 0.0


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
        embed_cfg: EmbedConfig | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.trackers = {name: Tracker(name, track_cfg) for name in cameras}
        self.track_cfg = track_cfg
        self.match_cfg = match_cfg
        self.embed_cfg = embed_cfg or EmbedConfig()
        self.watchlist = watchlist
        self.alerter = alerter
        self.clock = clock
        self.cooldowns = Cooldowns(match_cfg.cooldown_s)
        self.stats = PipelineStats()
        self._matched_against: tuple[int, object] | None = None  # the list the tracks were last compared with

    def apply(self, track_cfg: TrackConfig, match_cfg: MatchConfig, embed_cfg: EmbedConfig) -> None:
        """Reloaded [track], [match] and [embed] sections, from the next frame on; cooldowns keep their history."""
        for tracker in self.trackers.values():
            tracker.apply(track_cfg)
        self.track_cfg, self.match_cfg, self.embed_cfg = track_cfg, match_cfg, embed_cfg
        self.cooldowns.apply(match_cfg)

    def process(self, frames: Sequence[Frame]) -> list[MatchDecision]:
        """One cycle: the newest frame of each camera that has one; they share the embedding budget."""
        started = time.perf_counter()
        seen: list[Seen] = []
        try:
            for frame in frames:
                faces, stage_ms = self.pipeline.observe(frame.image)
                update = self.trackers[frame.camera].update(faces, frame.index, frame.timestamp)
                seen.append((frame, update))
                self.stats.record_tracks_started(sum(1 for t in update.active if t.frames_seen == 1))
                self.stats.record_frame(frame.camera, faces, stage_ms)
            t_embed = time.perf_counter()
            self.stats.faces_embedded += self._take_shots(seen)
            t_match = time.perf_counter()
            decisions = self._match([(frame, track) for frame, update in seen for track in update.active])
            t_end = time.perf_counter()
        finally:
            for frame in frames:  # done with (a match's context picture is taken): overwrite it
                frame.image.fill(0)
            for _, update in seen:  # tracks hold their own copies of their best shots
                for _, face in update.seen:
                    face.aligned.fill(0)
        for _, update in seen:
            self._end(update.ended)
        spans = {"embed": t_match - t_embed, "match": t_end - t_match, "frame": time.perf_counter() - started}
        self.stats.record_stages({stage: seconds * 1e3 for stage, seconds in spans.items()})
        return decisions

    def _take_shots(self, seen: list[Seen]) -> int:
        """Embed the faces worth it, within the budget: new tracks first, then the largest quality gains."""
        wanted = []
        for frame, update in seen:
            for track, face in update.seen:
                priority = track.shot_priority(face, frame.index, self.match_cfg.min_frames, self.track_cfg.shot_gain)
                if priority is not None:
                    wanted.append((priority, track, face, frame))
        wanted.sort(key=lambda w: w[0])
        chosen = wanted[: self.embed_cfg.max_per_frame]
        for _, _, face, frame in chosen:
            self.pipeline.refine(frame.image, face)
        rows = self.pipeline.embed_crops([face.aligned for _, _, face, _ in chosen])
        try:
            for (_, track, face, frame), row in zip(chosen, rows, strict=True):
                track.add_shot(face, row, frame.index, frame.timestamp, self.track_cfg.best_k)
        finally:
            rows.fill(0)  # the tracks took copies
        return len(chosen)

    def _match(self, active: list[tuple[Frame, Track]]) -> list[MatchDecision]:
        decisions: list[MatchDecision] = []
        watchlist, now = self.watchlist(), self.clock()
        if watchlist is None:
            return decisions
        # A list that arrives (or changes) while someone is in view is news for every track, not only
        # for those that just got a better shot: a person standing still is compared with it too.
        held = getattr(watchlist, "store", watchlist)
        key = (id(held), getattr(held, "version", None))
        new_list, self._matched_against = key != self._matched_against, key
        for frame, track in active:
            if track.new_evidence or new_list:
                for decision in evaluate(track, watchlist, self.match_cfg, self.cooldowns, now):
                    decisions.append(decision)
                    self._deliver(decision, track, frame, watchlist)
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
