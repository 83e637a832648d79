"""Tracking by motion, best shots under a budget, the newest-frame mailbox and the alert decision, on synthetic
faces (real embeddings are covered end to end)."""

from __future__ import annotations

import threading
import time

import numpy as np
import numpy.typing as npt
import pytest

from lfr_contracts.camera import Frame
from lfr_edge.config import EmbedConfig, MatchConfig, TrackConfig
from lfr_edge.daemon.alerting import Alerter
from lfr_edge.daemon.frames import NewestFrames
from lfr_edge.daemon.worker import PipelineWorker
from lfr_edge.vision.detect import Detection
from lfr_edge.vision.match import Cooldowns, evaluate
from lfr_edge.vision.pipeline import Face, FacePipeline
from lfr_edge.vision.quality import QualityVerdict
from lfr_edge.vision.track import Tracker, TrackUpdate
from lfr_edge.watchlist.store import SearchResult, WatchlistUnavailable

RNG = np.random.default_rng(7)


def unit(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return (v / np.linalg.norm(v)).astype(np.float32)


def person() -> npt.NDArray[np.float32]:
    return unit(RNG.normal(size=192).astype(np.float32))


KEYPOINTS = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.5, 0.75], [0.05, 0.4], [0.95, 0.4]], np.float32)


def face_at(x: float, y: float, size: float, emb: npt.NDArray[np.float32] | None, quality: float = 30.0) -> Face:
    """A face whose `embedding` is what the embedder would give for it (the tracker never reads it)."""
    det = Detection((x, y, x + size, y + size), 0.9, (KEYPOINTS * size + [x, y]).astype(np.float32))
    verdict = QualityVerdict(emb is not None, "" if emb is not None else "blurred", quality, 100.0, 0)
    noisy = None if emb is None else unit(emb + RNG.normal(scale=0.02, size=emb.shape).astype(np.float32))
    return Face(det, verdict, np.full((112, 112, 3), 99, dtype=np.uint8), noisy)


def step(tracker: Tracker, faces: list[Face], frame: int, min_frames: int = 2) -> TrackUpdate:
    """One frame as the worker runs it, without a budget: every face worth a shot is embedded."""
    update = tracker.update(faces, frame, frame / 25)
    for track, face in update.seen:
        if face.embedding is not None and track.shot_priority(face, frame, min_frames, tracker.cfg.shot_gain):
            track.add_shot(face, face.embedding, frame, frame / 25, tracker.cfg.best_k)
    return update


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
        update = step(tracker, faces, frame)
        ids.update(t.id for t in update.active)
        assert not update.ended
    assert ids == {1}


def test_two_people_crossing_keep_their_own_tracks() -> None:
    tracker = Tracker("cam0", TrackConfig())
    alice, bob = person(), person()
    for frame in range(30):
        a = face_at(50 + 20 * frame, 200, 80, alice)
        b = face_at(650 - 20 * frame, 210, 80, bob)
        step(tracker, [a, b], frame)
    assert len(tracker.tracks) == 2
    for track in tracker.tracks:
        mean = track.embeddings().mean(0)
        assert max(float(mean @ alice), float(mean @ bob)) > 0.9


def test_a_track_ends_after_max_missed_frames_and_its_faces_are_zeroed() -> None:
    tracker = Tracker("cam0", TrackConfig(max_missed_frames=2, best_k=3))
    step(tracker, [face_at(0, 0, 80, person())], 0)
    kept = tracker.tracks[0].best[0]
    for frame in range(1, 4):
        update = step(tracker, [], frame)
    assert [t.id for t in update.ended] == [1]
    update.ended[0].wipe()
    assert not kept.embedding.any() and not kept.crop.any()


def test_a_track_takes_a_shot_on_arrival_to_corroborate_and_then_only_for_a_clear_gain() -> None:
    tracker = Tracker("cam0", TrackConfig(best_k=3, shot_gain=0.15))
    alice = person()
    shots = []
    for frame, q in enumerate([10, 12, 20, 19, 22, 30, 36, 50, 5]):
        update = step(tracker, [face_at(100, 100, 80, alice, quality=q)], frame)
        shots += [q] if update.active[0].new_evidence else []
    assert shots == [10, 12, 20, 30, 36, 50]  # 19 and 22 are not 15% better than 20; 5 is worse
    assert sorted(f.quality for f in tracker.tracks[0].best) == [30, 36, 50]  # the best_k best are kept


def _walk(tracker: Tracker, emb: npt.NDArray[np.float32], frames: int, min_frames: int = 2) -> None:
    for frame in range(frames):
        step(tracker, [face_at(100, 100, 80, emb)], frame, min_frames)


def test_watchlisted_track_is_alerted_once_and_a_stranger_never() -> None:
    alice, bob, stranger = person(), person(), person()
    watchlist = ListWatchlist(["S-ALICE", "S-BOB"], np.stack([alice, bob]), threshold=0.6)
    cfg = MatchConfig(min_frames=2, margin=0.05, cooldown_s=60)
    cooldowns = Cooldowns(cfg.cooldown_s)
    tracker = Tracker("cam0", TrackConfig())
    alerts = []
    for frame in range(10):
        update = step(tracker, [face_at(100, 100, 80, alice), face_at(600, 100, 80, stranger)], frame)
        for track in update.active:
            alerts += evaluate(track, watchlist, cfg, cooldowns, now=frame / 25)
    assert [(a.subject_id, a.camera) for a in alerts] == [("S-ALICE", "cam0")]
    assert alerts[0].score > 0.9 and alerts[0].supporting_frames >= 2


def test_no_alert_before_min_frames_of_evidence() -> None:
    alice = person()
    watchlist = ListWatchlist(["S-ALICE"], alice[None], threshold=0.6)
    tracker = Tracker("cam0", TrackConfig())
    _walk(tracker, alice, 2, min_frames=3)
    cfg = MatchConfig(min_frames=3)
    assert evaluate(tracker.tracks[0], watchlist, cfg, Cooldowns(0), now=0) == []
    step(tracker, [face_at(100, 100, 80, alice)], 2, min_frames=3)  # a third frame: a third shot
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
    step(tracker, [face_at(0, 0, 80, person())], 0)
    for frame in range(1, 3):
        assert step(tracker, [], frame).ended == []
    tracker.apply(TrackConfig(max_missed_frames=2))
    assert [t.id for t in step(tracker, [], 3).ended] == [1]


# -- best shots under the per-frame budget (the worker), and the newest-frame mailbox ---------------------------


class ScriptedPipeline(FacePipeline):
    """The worker's view of the models: faces as the scene script places them; embedding counts each crop."""

    def __init__(self) -> None:  # no models: the faces come from the script
        self.script: list[Face] = []
        self.embedded_per_call: list[int] = []

    def observe(self, image: npt.NDArray[np.uint8]) -> tuple[list[Face], dict[str, float]]:
        return list(self.script), {}

    def refine(self, image: npt.NDArray[np.uint8], face: Face) -> None:
        pass  # the script's crops are the faces

    def embed_crops(self, crops: list[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        self.embedded_per_call.append(len(crops))
        return np.stack([person() for _ in crops]) if crops else np.zeros((0, 192), np.float32)

    def forget(self) -> None:
        pass


class NoAudit:
    def append(self, event: object) -> None:
        raise AssertionError("no watchlist is held: nothing may be alerted or audited")


def crowd_worker(budget: int) -> tuple[PipelineWorker, ScriptedPipeline]:
    pipeline = ScriptedPipeline()
    alerter = Alerter("unit-a", [], NoAudit())
    worker = PipelineWorker(
        pipeline,
        ["cam0"],
        TrackConfig(),
        MatchConfig(),
        lambda: None,
        alerter,
        embed_cfg=EmbedConfig(max_per_frame=budget),
    )
    return worker, pipeline


def crowd(n: int, frame: int) -> list[Face]:
    """n people in a grid walking right at 2 px a frame, their faces 60 px wide."""
    return [
        face_at(40 + 150 * (i % 8) + 2 * frame, 40 + 130 * (i // 8), 60.0, person(), quality=60.0) for i in range(n)
    ]


@pytest.mark.parametrize("in_view", [5, 10, 20, 40])
def test_embeddings_per_frame_stay_bounded_as_people_in_view_grow(in_view: int) -> None:
    worker, pipeline = crowd_worker(budget=4)
    image = np.zeros((8, 8, 3), np.uint8)
    for frame in range(60):
        pipeline.script = crowd(in_view, frame)
        worker.process([Frame("cam0", frame, frame / 25, image)])
    assert max(pipeline.embedded_per_call) <= 4  # never more than the budget, however many are in view
    assert len(worker.trackers["cam0"].tracks) == in_view  # one track per person, by motion alone
    # Each person costs min_frames (2) shots on arrival, then nothing while their face gets no better:
    # the cost follows people arriving, not people in view (who are seen 60 times each).
    assert worker.stats.faces_embedded == 2 * in_view and worker.stats.faces_seen == 60 * in_view
    settled = -(-2 * in_view // 4)  # frames the budget needs for everyone's first two shots
    assert sum(pipeline.embedded_per_call[settled:]) == 0


def test_a_newcomer_is_embedded_before_the_gains_of_people_already_in_view() -> None:
    worker, pipeline = crowd_worker(budget=2)
    image = np.zeros((8, 8, 3), np.uint8)
    for frame in range(40):  # 20 people in view, each with its first two shots long before frame 40
        pipeline.script = crowd(20, frame)
        worker.process([Frame("cam0", frame, frame / 25, image)])
    # In frame 40 all 20 turn to the camera (twice the quality: each worth a better shot) as a newcomer arrives
    turned = [face_at(40 + 150 * (i % 8) + 80, 40 + 130 * (i // 8), 60.0, person(), quality=120.0) for i in range(20)]
    newcomer = face_at(600, 600, 50, person(), quality=50)
    pipeline.script = [*turned, newcomer]
    worker.process([Frame("cam0", 40, 40 / 25, image)])
    [track] = [t for t in worker.trackers["cam0"].tracks if t.frames_seen == 1]
    assert [shot.frame_index for shot in track.best] == [40]  # its first shot, in the frame it arrived
    assert pipeline.embedded_per_call[-1] == 2  # the budget: the newcomer, then one of the 20 better shots
    improved = [t for t in worker.trackers["cam0"].tracks if t is not track and t.best[-1].frame_index == 40]
    assert len(improved) == 1


def test_a_camera_keeps_only_its_newest_frame_and_counts_the_ones_skipped() -> None:
    mailbox = NewestFrames()
    images = [np.full((4, 4, 3), 7, np.uint8) for _ in range(5)]
    for i, image in enumerate(images):
        mailbox.put(Frame("cam0", i, i / 25, image))
    mailbox.put(Frame("cam1", 0, 0.01, np.ones((4, 4, 3), np.uint8)))
    taken = mailbox.take(timeout=0)
    assert [(f.camera, f.index) for f in taken] == [("cam1", 0), ("cam0", 4)]  # oldest capture first
    assert mailbox.skipped == {"cam0": 4} and not any(image.any() for image in images[:4])  # overwritten
    assert mailbox.take(timeout=0.01) == []


def test_the_worker_never_processes_a_frame_older_than_the_newest_one_available() -> None:
    """A camera at 200 fps into a slow worker: each frame taken is at least as new as every frame put before
    the take began; the worker lowers its frame rate (frames skipped), not its freshness."""
    mailbox, stop = NewestFrames(), threading.Event()
    newest = [-1]

    def camera() -> None:
        index = 0
        while not stop.is_set():
            mailbox.put(Frame("cam0", index, time.monotonic(), np.zeros((4, 4, 3), np.uint8)))
            newest[0] = index
            index += 1
            time.sleep(0.005)

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    try:
        taken: list[int] = []
        while len(taken) < 20:
            available = newest[0]
            frames = mailbox.take(timeout=5.0)
            assert frames, "the camera thread stopped delivering"
            [frame] = frames
            assert frame.index >= available
            taken.append(frame.index)
            time.sleep(0.03)  # the worker's frame takes longer than the camera's interval
    finally:
        stop.set()
        thread.join(5)
    assert taken == sorted(set(taken)) and mailbox.skipped["cam0"] > 0
