"""Tracking and the alert decision, on synthetic faces (real embeddings are covered end to end)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from lfr_edge.config import MatchConfig, TrackConfig
from lfr_edge.vision.detect import Detection
from lfr_edge.vision.match import Cooldowns, evaluate
from lfr_edge.vision.pipeline import Face
from lfr_edge.vision.quality import QualityVerdict
from lfr_edge.vision.track import Tracker
from lfr_edge.watchlist.store import SearchResult, WatchlistUnavailable

RNG = np.random.default_rng(7)


def unit(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (v / np.linalg.norm(v)).astype(np.float32)


def person() -> npt.NDArray[np.float32]:
    return unit(RNG.normal(size=192).astype(np.float32))


def face_at(x: float, y: float, size: float, emb: npt.NDArray[np.float32] | None, quality: float = 30.0) -> Face:
    det = Detection((x, y, x + size, y + size), 0.9, np.zeros((6, 2), dtype=np.float32))
    verdict = QualityVerdict(emb is not None, "" if emb is not None else "blurred", quality, 100.0, 0.0)
    noisy = None if emb is None else unit(emb + RNG.normal(scale=0.02, size=emb.shape).astype(np.float32))
    return Face(det, verdict, np.full((112, 112, 3), 99, dtype=np.uint8), noisy)


class ListWatchlist:
    """A tiny exact watchlist for decision tests."""

    def __init__(self, ids: list[str], matrix: npt.NDArray[np.float32], threshold: float) -> None:
        self.ids, self.matrix, self._threshold = ids, matrix, threshold

    @property
    def threshold(self) -> float:
        return self._threshold

    def search(self, probes: npt.NDArray[np.float32], now: float, k: int = 3) -> SearchResult:
        scores = probes @ self.matrix.T
        order = np.argsort(-scores, axis=1)[:, :k]
        return SearchResult(order.astype(np.int64), np.take_along_axis(scores, order, axis=1))

    def subject_id(self, index: int) -> str:
        return self.ids[index]


def test_one_person_walking_gets_one_track_through_short_misses() -> None:
    tracker = Tracker("cam0", TrackConfig(max_missed_frames=3))
    alice = person()
    ids: set[int] = set()
    for frame in range(20):
        faces = [] if frame in (5, 6) else [face_at(100 + 8 * frame, 100, 60 + frame, alice)]
        update = tracker.update(faces, frame, frame / 25)
        ids.update(t.id for t in update.active)
        assert not update.ended
    assert ids == {1}


def test_two_people_crossing_keep_their_own_tracks() -> None:
    tracker = Tracker("cam0", TrackConfig())
    alice, bob = person(), person()
    for frame in range(30):
        a = face_at(50 + 20 * frame, 200, 80, alice)
        b = face_at(650 - 20 * frame, 210, 80, bob)
        tracker.update([a, b], frame, frame / 25)
    assert len(tracker.tracks) == 2
    for track in tracker.tracks:
        mean = track.embeddings().mean(0)
        assert max(float(mean @ alice), float(mean @ bob)) > 0.9


def test_a_track_ends_after_max_missed_frames_and_its_faces_are_zeroed() -> None:
    tracker = Tracker("cam0", TrackConfig(max_missed_frames=2, best_k=3))
    tracker.update([face_at(0, 0, 80, person())], 0, 0.0)
    kept = tracker.tracks[0].best[0]
    for frame in range(1, 4):
        update = tracker.update([], frame, frame / 25)
    assert [t.id for t in update.ended] == [1]
    update.ended[0].wipe()
    assert not kept.embedding.any() and not kept.crop.any()


def test_track_keeps_only_its_best_k_faces_by_quality() -> None:
    tracker = Tracker("cam0", TrackConfig(best_k=3))
    alice = person()
    for frame, q in enumerate([10, 50, 20, 40, 5, 30]):
        tracker.update([face_at(100, 100, 80, alice, quality=q)], frame, frame / 25)
    assert sorted(f.quality for f in tracker.tracks[0].best) == [30, 40, 50]


def _walk(tracker: Tracker, emb: npt.NDArray[np.float32], frames: int) -> None:
    for frame in range(frames):
        tracker.update([face_at(100, 100, 80, emb)], frame, frame / 25)


def test_watchlisted_track_is_alerted_once_and_a_stranger_never() -> None:
    alice, bob, stranger = person(), person(), person()
    watchlist = ListWatchlist(["S-ALICE", "S-BOB"], np.stack([alice, bob]), threshold=0.6)
    cfg = MatchConfig(min_frames=2, margin=0.05, cooldown_s=60)
    cooldowns = Cooldowns(cfg.cooldown_s)
    tracker = Tracker("cam0", TrackConfig())
    alerts = []
    for frame in range(10):
        update = tracker.update([face_at(100, 100, 80, alice), face_at(600, 100, 80, stranger)], frame, frame / 25)
        for track in update.active:
            alerts += evaluate(track, watchlist, cfg, cooldowns, now=frame / 25)
    assert [(a.subject_id, a.camera) for a in alerts] == [("S-ALICE", "cam0")]
    assert alerts[0].score > 0.9 and alerts[0].supporting_frames >= 2


def test_no_alert_before_min_frames_of_evidence() -> None:
    alice = person()
    watchlist = ListWatchlist(["S-ALICE"], alice[None], threshold=0.6)
    tracker = Tracker("cam0", TrackConfig())
    _walk(tracker, alice, 2)
    cfg = MatchConfig(min_frames=3)
    assert evaluate(tracker.tracks[0], watchlist, cfg, Cooldowns(0), now=0) == []
    _walk(tracker, alice, 1)
    assert len(evaluate(tracker.tracks[0], watchlist, cfg, Cooldowns(0), now=0)) == 1


def test_an_ambiguous_match_without_margin_is_not_alerted() -> None:
    alice = person()
    twin = unit(alice + 0.01 * person())
    watchlist = ListWatchlist(["S-ALICE", "S-TWIN"], np.stack([alice, twin]), threshold=0.6)
    tracker = Tracker("cam0", TrackConfig())
    _walk(tracker, alice, 5)
    assert evaluate(tracker.tracks[0], watchlist, MatchConfig(margin=0.05), Cooldowns(0), now=0) == []


def test_cooldown_suppresses_a_second_track_of_the_same_subject() -> None:
    alice = person()
    watchlist = ListWatchlist(["S-ALICE"], alice[None], threshold=0.6)
    monotonic = [1000.0]
    cooldowns = Cooldowns(60, clock=lambda: monotonic[0])
    first, second = Tracker("cam0", TrackConfig()), Tracker("cam1", TrackConfig())
    _walk(first, alice, 3)
    _walk(second, alice, 3)
    assert len(evaluate(first.tracks[0], watchlist, MatchConfig(), cooldowns, now=10)) == 1
    monotonic[0] += 10
    assert evaluate(second.tracks[0], watchlist, MatchConfig(), cooldowns, now=20) == []
    monotonic[0] += 51
    assert len(evaluate(second.tracks[0], watchlist, MatchConfig(), cooldowns, now=71)) == 1


@pytest.mark.parametrize("wall_step_s", [-3600.0, 3 * 3600.0])
def test_a_wall_clock_step_neither_silences_a_subject_nor_repeats_its_alert(wall_step_s: float) -> None:
    """The cooldown runs on the monotonic clock: the wall clock (`now`, for the list's validity) may jump."""
    alice = person()
    watchlist = ListWatchlist(["S-ALICE"], alice[None], threshold=0.6)
    monotonic = [1000.0]
    cooldowns = Cooldowns(60, clock=lambda: monotonic[0])
    tracks = [Tracker(f"cam{n}", TrackConfig()) for n in range(3)]
    for tracker in tracks:
        _walk(tracker, alice, 3)
    wall = 1_700_000_000.0
    assert len(evaluate(tracks[0].tracks[0], watchlist, MatchConfig(), cooldowns, now=wall)) == 1
    monotonic[0] += 5
    assert evaluate(tracks[1].tracks[0], watchlist, MatchConfig(), cooldowns, now=wall + wall_step_s) == []
    monotonic[0] += 60
    assert len(evaluate(tracks[2].tracks[0], watchlist, MatchConfig(), cooldowns, now=wall + wall_step_s)) == 1


def test_an_empty_or_expired_watchlist_gives_no_decision() -> None:
    class Expired(ListWatchlist):
        def search(self, probes: npt.NDArray[np.float32], now: float, k: int = 3) -> SearchResult:
            raise WatchlistUnavailable("watchlist version 1 is outside its validity window")

    alice = person()
    tracker = Tracker("cam0", TrackConfig())
    _walk(tracker, alice, 4)
    track = tracker.tracks[0]
    assert evaluate(track, Expired(["S"], alice[None], 0.5), MatchConfig(), Cooldowns(0), now=0) == []
    assert evaluate(track, ListWatchlist([], np.zeros((0, 192), np.float32), 0.5), MatchConfig(), Cooldowns(0), 0) == []
    assert not track.alerted_subjects


def test_a_list_wiped_during_the_search_gives_no_decision_and_marks_nothing() -> None:
    class WipedMidway(ListWatchlist):
        def subject_id(self, index: int) -> str:
            raise WatchlistUnavailable("the watchlist was wiped")

    alice = person()
    tracker = Tracker("cam0", TrackConfig())
    _walk(tracker, alice, 4)
    cooldowns = Cooldowns(60)
    assert evaluate(tracker.tracks[0], WipedMidway(["S-ALICE"], alice[None], 0.5), MatchConfig(), cooldowns, 0) == []
    assert not tracker.tracks[0].alerted_subjects and cooldowns.last == {}


def test_a_reloaded_cooldown_applies_to_the_next_decision() -> None:
    alice = person()
    watchlist = ListWatchlist(["S-ALICE"], alice[None], threshold=0.6)
    monotonic = [1000.0]
    cooldowns = Cooldowns(60, clock=lambda: monotonic[0])
    first, second = Tracker("cam0", TrackConfig()), Tracker("cam1", TrackConfig())
    _walk(first, alice, 3)
    _walk(second, alice, 3)
    assert len(evaluate(first.tracks[0], watchlist, MatchConfig(), cooldowns, now=10)) == 1
    monotonic[0] += 10
    assert evaluate(second.tracks[0], watchlist, MatchConfig(), cooldowns, now=20) == []
    cooldowns.apply(MatchConfig(cooldown_s=5.0))
    assert len(evaluate(second.tracks[0], watchlist, MatchConfig(), cooldowns, now=20)) == 1


def test_a_reloaded_track_config_applies_to_the_next_frame() -> None:
    tracker = Tracker("cam0", TrackConfig(max_missed_frames=10))
    tracker.update([face_at(0, 0, 80, person())], 0, 0.0)
    for frame in range(1, 3):
        assert tracker.update([], frame, frame / 25).ended == []
    tracker.apply(TrackConfig(max_missed_frames=2))
    assert [t.id for t in tracker.update([], 3, 3 / 25).ended] == [1]
