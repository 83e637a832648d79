"""From a match decision to every alert channel: one failing channel is logged and the others still get it.

The decisions come from the real matching against a real store; the audit lines are read back from the
real audit log; the last test runs the real pipeline worker over real photos.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from lfr_contracts.alerts import Alert
from lfr_contracts.audit_events import AlertRaised, AuditEvent, LogCreated, decode_event
from lfr_contracts.bundle import AppliedHistory, SubjectEntry, open_bundle
from lfr_contracts.camera import Frame
from lfr_edge.alerts.channel import UnitState
from lfr_edge.audit.log import AuditLog
from lfr_edge.config import MatchConfig, TrackConfig
from lfr_edge.daemon.alerting import Alerter
from lfr_edge.daemon.worker import PipelineWorker
from lfr_edge.vision.match import Cooldowns, MatchDecision, evaluate
from lfr_edge.vision.pipeline import FacePipeline
from lfr_edge.vision.track import Track, TrackFace
from lfr_edge.watchlist.store import WatchlistStore
from lfr_tools.audit.verify import read_verified
from lfr_tools.command_centre.enrol import PipelineEnroller
from lfr_tools.photos.image import read_image
from watchlist_helpers import MODEL, NOW, Keys, make_bundle, subjects, unit_vectors


class Recording:
    """A channel that keeps what it is given."""

    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.alerts: list[Alert] = []
        self.states: list[UnitState] = []

    def deliver(self, alert: Alert) -> None:
        self.alerts.append(alert)

    def show_state(self, state: UnitState) -> None:
        self.states.append(state)


class Broken:
    """A channel whose output is gone (a driver bug, a dead device)."""

    name = "broken"

    def deliver(self, alert: Alert) -> None:
        raise OSError("device gone")

    def show_state(self, state: UnitState) -> None:
        raise OSError("device gone")


def open_store(entries: list[SubjectEntry], model_id: str = MODEL, now: float = NOW) -> WatchlistStore:
    keys = Keys()
    data = make_bundle(keys, subjects=entries, model_id=model_id, valid_from=now - 60, valid_until=now + 3600)
    opened = open_bundle(
        data, command_centre_key=keys.centre.public_key(), unit_key=keys.unit, unit_id="unit-a",
        model_id=model_id, now=now, history=AppliedHistory(), max_bytes=1 << 24,
    )  # fmt: skip
    try:
        return WatchlistStore.from_opened(opened)
    finally:
        opened.wipe()


def track_towards(probe: npt.NDArray[np.float32], frames: int = 2) -> Track:
    track = Track(4, "cam1", (0.0, 0.0, 10.0, 10.0), NOW, NOW, 0)
    for i in range(frames):
        crop = np.full((112, 112, 3), 40 + i, dtype=np.uint8)
        track.best.append(TrackFace(1.0 + i, probe.copy(), crop, i, NOW))
    return track


def decision_for(store: WatchlistStore, subject: int) -> tuple[MatchDecision, Track]:
    track = track_towards(unit_vectors(5, seed=3)[subject])
    (decision,) = evaluate(track, store, MatchConfig(), Cooldowns(60), NOW)
    return decision, track


def audit_events(path: Path) -> list[AuditEvent]:
    """The log as its readers see it: the verified lines, decoded into their event classes."""
    report, lines = read_verified(path)
    assert report.ok
    return [decode_event(line.event, line.fields) for line in lines]


def test_every_channel_gets_the_alert_even_after_one_fails(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(subjects(5, seed=3))
    decision, track = decision_for(store, 2)
    first, last = Recording("first"), Recording("last")
    audit = AuditLog.open(tmp_path / "audit.jsonl", "unit-a")
    alerter = Alerter("unit-a", [first, Broken(), last], audit, new_id=lambda: "a-0001")
    live = track.best_face()
    assert live is not None
    frame_time = time.monotonic() - 0.5
    with caplog.at_level(logging.ERROR, logger="lfr_edge.alerts.channel"):
        alert = alerter.raise_alert(decision, live, frame_time, store)
    audit.close()
    assert alert is not None and first.alerts == [alert] and last.alerts == [alert]
    assert (alert.alert_id, alert.unit, alert.camera, alert.subject_id) == ("a-0001", "unit-a", "cam1", "S002")
    assert (alert.category, alert.reference, alert.watchlist_jpeg) == ("wanted", "ref 2", b"\xff\xd8jpeg2")
    assert alert.score == round(decision.score, 4) and alert.threshold == store.threshold
    assert alert.live_jpeg[:2] == b"\xff\xd8"  # the track's best face, as JPEG
    assert abs(alert.time - (time.time() - 0.5)) < 5.0  # the frame's time, on the wall clock
    failures = [r for r in caplog.records if "the broken channel failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    raised = [e for e in audit_events(tmp_path / "audit.jsonl") if isinstance(e, AlertRaised)]
    assert raised == [AlertRaised("a-0001", "cam1", "S002", round(decision.score, 3), store.version)]


def test_a_list_wiped_after_the_decision_raises_no_alert(tmp_path: Path) -> None:
    store = open_store(subjects(5, seed=3))
    decision, track = decision_for(store, 1)
    store.wipe()
    channel = Recording()
    audit = AuditLog.open(tmp_path / "audit.jsonl", "unit-a")
    live = track.best_face()
    assert live is not None
    assert Alerter("unit-a", [channel], audit).raise_alert(decision, live, time.monotonic(), store) is None
    audit.close()
    assert channel.alerts == []
    assert [type(e) for e in audit_events(tmp_path / "audit.jsonl")] == [LogCreated]


def test_the_worker_hands_a_watchlisted_face_to_every_channel_and_keeps_going(
    faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    photos = sorted((faces / "wild" / "7205").glob("*.jpg"))
    enroller = PipelineEnroller(pipeline)
    enrolled = [enroller.enrol(read_image(p)) for p in photos[:2]]
    rows = np.stack([e.embedding for e in enrolled if e.embedding is not None])
    now = time.time()
    store = open_store([SubjectEntry("S-7205", "wanted", "", rows, enrolled[0].photo_jpeg)], pipeline.model_id, now)
    recording = Recording()
    audit = AuditLog.open(tmp_path / "audit.jsonl", "unit-a")
    worker = PipelineWorker(
        pipeline, ["cam0"], TrackConfig(), MatchConfig(), lambda: store, Alerter("unit-a", [Broken(), recording], audit)
    )
    frames = [read_image(p) for p in photos[2:5] for _ in range(3)]  # each photo held for three frames
    decisions = [worker.process([Frame("cam0", i, time.monotonic(), image)]) for i, image in enumerate(frames)]
    audit.close()
    assert worker.stats.frames == len(frames)
    assert sum(len(d) for d in decisions) == worker.stats.alerts == 1
    assert [a.subject_id for a in recording.alerts] == ["S-7205"]
    raised = [e.subject_id for e in audit_events(tmp_path / "audit.jsonl") if isinstance(e, AlertRaised)]
    assert raised == ["S-7205"]
    assert all(not image.any() for image in frames)  # every frame was overwritten once processed
