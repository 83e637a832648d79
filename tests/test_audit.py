"""The hash-chained audit log and the deployment report, driven by the real writers.

The chain tests write typed events with the real AuditLog; the report tests let the real watchlist sync,
handset channel and fault monitor write the log and check every figure against what they were made to
do. `audit-before-typed-events.jsonl` was written by the code before the typed events: it still
verifies, and the report names the lines whose fields changed instead of reading None from them.
(tests/test_deployment_report.py runs a whole deployment on the simulator and reads its report.)
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from lfr_contracts import bundle
from lfr_contracts.alerts import Alert, Decision, DecisionKind, encode_decision
from lfr_contracts.audit_events import (
    EVENTS,
    AlertRaised,
    AuditEvent,
    AuditEventError,
    FacesSeen,
    Fault,
    FaultCleared,
    FaultComponent,
    FaultProblem,
    LogCreated,
    OfficerDecision,
    RecordsLost,
    Started,
    Stopped,
    WatchlistApplied,
    WatchlistRefused,
    WipeReason,
    decode_event,
)
from lfr_contracts.topics import Topics
from lfr_edge.alerts.handset import HandsetChannel, parse_handset
from lfr_edge.audit.faults import FaultMonitor, Problem, current_problems
from lfr_edge.audit.log import AuditChainError, AuditError, AuditLog, BiometricFieldError, Head, genesis_hash
from lfr_edge.config import AlertsConfig
from lfr_edge.watchlist.lifecycle import LifecycleFile
from lfr_edge.watchlist.sync import WatchlistSync
from lfr_tools.audit import cli
from lfr_tools.audit.report import deployment_report, read_events
from lfr_tools.audit.verify import verify
from lfr_tools.handset.cli import HandsetKeys
from watchlist_helpers import MODEL, NOW, Keys, make_bundle

UNIT = "van-07"
BEFORE_TYPED_EVENTS = Path(__file__).with_name("audit-before-typed-events.jsonl")


def write_log(path: Path, events: int = 6) -> list[bytes]:
    with AuditLog.open(path, UNIT) as log:
        log.append(Started(version="0.1.0", cameras=("cam0",)))
        for i in range(events - 2):
            log.append(FacesSeen(camera="cam0", count=i))
    return path.read_bytes().splitlines(keepends=True)


# the chain ---------------------------------------------------------------------------------------------


def test_fresh_log_verifies_and_starts_from_the_units_genesis(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    first = json.loads(lines[0])
    assert first["event"] == LogCreated.name and first["unit"] == UNIT and first["seq"] == 0
    assert first["prev"] == genesis_hash(UNIT)
    assert list(first) == ["seq", "time", "event", "unit", "prev"]
    report = verify(path)
    assert report.ok and report.events == 6
    assert report.summary() == "chain intact: 6 events"
    assert verify(path, unit_id=UNIT).ok
    assert not verify(path, unit_id="van-08").ok


def test_file_is_created_mode_0640_even_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_log(tmp_path / "audit.jsonl")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "audit.jsonl").stat().st_mode) == 0o640


def test_edited_line_is_detected_at_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    lines[2] = lines[2].replace(b'"count":0', b'"count":9')
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert not report.ok
    assert report.bad_line == 4 and "line 3 was altered" in report.problem
    assert report.events == 3


def test_deleted_line_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    del lines[3]
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert not report.ok and report.bad_line == 4 and "missing" in report.problem


def test_deleted_first_line_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    path.write_bytes(b"".join(lines[1:]))
    report = verify(path, unit_id=UNIT)
    assert not report.ok and report.bad_line == 1


def test_reordered_lines_are_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    lines[2], lines[3] = lines[3], lines[2]
    path.write_bytes(b"".join(lines))
    report = verify(path)
    assert not report.ok and report.bad_line == 3 and "expected" in report.problem


def test_a_cut_in_the_middle_of_the_file_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    data = b"".join(write_log(path))
    middle = len(data) // 2
    path.write_bytes(data[: middle - 30] + data[middle + 30 :])
    report = verify(path)
    assert not report.ok and report.bad_line is not None and 2 <= report.bad_line <= 5


def test_an_incomplete_last_line_is_detected_then_cut_off_and_recorded_as_a_gap_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    cut = lines[-1][:-10]  # a write cut short (a power cut): no newline
    path.write_bytes(b"".join(lines[:-1]) + cut)
    report = verify(path)
    assert not report.ok and report.bad_line == 6 and "incomplete" in report.problem
    with AuditLog.open(path, UNIT) as log:  # the rest of the chain is intact: it goes on, not set aside
        log.append(Stopped(reason="signal", frames=10))
    report = verify(path)
    assert report.ok and report.events == 7 and (report.gaps, report.lost) == (1, 1)
    assert "1 gap(s) recorded, 1 record(s) lost" in report.summary()
    gap = read_events(path)[5]
    assert isinstance(gap, RecordsLost) and gap.lost_events == {"faces_seen": 1}
    assert gap.cut_bytes == len(cut) and gap.cut_sha256 == hashlib.sha256(cut).hexdigest()
    assert path.read_bytes().startswith(b"".join(lines[:-1]))
    assert not list(tmp_path.glob("*.damaged-*"))


def test_a_cut_tail_is_caught_by_the_published_head(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    head = verify(path).head
    assert head is not None and head.seq == 5
    path.write_bytes(b"".join(lines[:-1]))
    assert verify(path).ok  # a shorter chain is intact on its own...
    report = verify(path, expected_head=head)  # ...but not against the head the unit published
    assert not report.ok and "published head is seq 5" in report.problem


def test_reopening_resumes_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    with AuditLog.open(path, UNIT) as log:
        assert log.head is not None and log.head.seq == 5
        head = log.append(Stopped(reason="signal", frames=10))
    assert head is not None and head.seq == 6
    report = verify(path)
    assert report.ok and report.events == 7 and report.head == head


def test_resume_refuses_a_tail_that_does_not_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    lines[-1] = lines[-1].replace(b'"count":3', b'"count":4')
    lines[-2] = lines[-2].replace(b'"count":2', b'"count":7')
    path.write_bytes(b"".join(lines))
    with pytest.raises(AuditChainError, match="does not chain"):
        AuditLog.open(path, UNIT)


def test_damaged_log_is_kept_aside_and_a_new_chain_names_it(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    lines[-2] = lines[-2].replace(b'"count":2', b'"count":7')
    data = b"".join(lines)
    path.write_bytes(data)
    with pytest.raises(AuditChainError, match="does not chain"):
        AuditLog.open(path, UNIT)
    with AuditLog.open(path, UNIT, on_damage="rotate", clock=lambda: "2025-06-01T10:00:00.000Z") as log:
        log.append(Started(version="0.1.0", cameras=("cam0",)))
    kept = tmp_path / "audit.jsonl.damaged-2025-06-01T100000.000Z"
    assert kept.read_bytes() == data
    events = read_events(path)
    assert isinstance(events[0], LogCreated) and events[0].previous_log == kept.name
    assert events[0].previous_log_sha256 is not None and len(events[0].previous_log_sha256) == 64
    assert verify(path).ok


# what may enter ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CarelessEvent(AuditEvent):
    """An event a future writer might get wrong: a field that can hold anything."""

    name: ClassVar[str] = "careless"
    crop: object


@pytest.mark.parametrize(
    "value",
    [
        b"\x00\x01",
        bytearray(4),
        memoryview(b"abcd"),
        np.zeros(192, dtype=np.float32),
        np.float32(0.5),
        [0.1, 0.2, 0.3, 0.4, 0.5],
        list(range(20)),
        {"nested": {"embedding": [0.5] * 10}},
        "QUJD" * 40,
        "x" * 2000,
    ],
    ids=["bytes", "bytearray", "memoryview", "ndarray", "np-scalar", "floats", "ints", "nested", "base64", "long"],
)
def test_biometric_looking_values_are_refused_and_nothing_is_written(tmp_path: Path, value: object) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, UNIT) as log:
        before = path.read_bytes()
        with pytest.raises(BiometricFieldError, match="audit field crop"):
            log.append(CarelessEvent(crop=value))
        assert path.read_bytes() == before


def test_a_declared_event_with_an_encoded_picture_in_a_text_field_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, UNIT) as log:
        before = path.read_bytes()
        with pytest.raises(BiometricFieldError, match="audit field detail"):
            log.append(WatchlistRefused(reason="garbled", detail="QUJD" * 40, version=None))
        assert path.read_bytes() == before


def test_mistyped_or_undeclared_events_are_refused_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, UNIT) as log:
        before = path.read_bytes()
        with pytest.raises(AuditError, match=r"alert_raised\.score: expected a finite number, got float nan"):
            log.append(AlertRaised("a1", "cam0", "S-1", float("nan"), 3))
        with pytest.raises(AuditError, match=r"faces_seen\.count: expected an integer, got bool True"):
            log.append(FacesSeen("cam0", True))  # a bool is an int to the type checker, not to the log
        with pytest.raises(AuditError, match="not a declared audit event"):
            log.append(CarelessEvent(crop=3))
        assert path.read_bytes() == before


def test_every_event_declares_a_unique_line_name() -> None:
    assert len(EVENTS) == len({cls.__name__ for cls in EVENTS.values()})
    assert all(name == cls.name for name, cls in EVENTS.items())


@pytest.mark.parametrize(
    ("name", "fields", "complaint"),
    [
        (FacesSeen.name, {"camera": "cam0"}, "faces_seen.count: missing"),
        (FacesSeen.name, {"camera": "cam0", "count": 3, "deployment_id": "x"}, "unknown field(s) 'deployment_id'"),
        (FacesSeen.name, {"camera": "cam0", "count": True}, "faces_seen.count: expected an integer"),
        (OfficerDecision.name, {"alert_id": "a", "handset_id": "h", "decision": "shrug"}, "'shrug' is not one of"),
        (Started.name, {"version": "1", "cameras": "cam0"}, "started.cameras: expected a list"),
        (WatchlistApplied.name, {}, "watchlist_applied.deployment: missing"),
        ("warp_drive", {}, "unknown audit event 'warp_drive'"),
    ],
)
def test_a_line_that_does_not_fit_its_event_is_named(name: str, fields: dict[str, object], complaint: str) -> None:
    with pytest.raises(AuditEventError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        decode_event(name, fields)


# logs written before the typed events -------------------------------------------------------------------


def test_a_log_written_before_the_typed_events_still_verifies_and_its_format_is_unchanged(tmp_path: Path) -> None:
    old = BEFORE_TYPED_EVENTS.read_bytes().splitlines(keepends=True)
    assert verify(BEFORE_TYPED_EVENTS).ok and verify(BEFORE_TYPED_EVENTS, unit_id=UNIT).ok
    times = iter(["2026-03-01T10:00:00.000Z", "2026-03-01T10:01:00.000Z"])
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, UNIT, clock=lambda: next(times)) as log:
        log.append(Started(version="0.1.0", cameras=("cam0",)))
    assert path.read_bytes().splitlines(keepends=True) == old[:2]  # byte for byte, hash chain included
    # and resuming that old log goes on with the same chain
    copy = tmp_path / "old.jsonl"
    copy.write_bytes(b"".join(old))
    with AuditLog.open(copy, UNIT) as log:
        log.append(Started(version="0.2.0", cameras=("cam0",)))
    assert verify(copy).ok


def test_the_report_of_an_old_log_names_the_lines_whose_fields_changed(tmp_path: Path) -> None:
    report = deployment_report(BEFORE_TYPED_EVENTS)
    assert report.chain.ok and not report.ok
    assert report.unreadable == (
        "line 3: watchlist_applied.valid_from: missing",
        "line 6: watchlist_wiped.subjects: missing",
    )
    assert "unreadable line 3: watchlist_applied.valid_from: missing" in report.text()
    assert report.faces_seen == 12 and report.watchlists_refused == {"rollback": 1} and report.watchlists_closed == 1
    assert cli.main(["report", str(BEFORE_TYPED_EVENTS)]) == 1
    with pytest.raises(AuditError, match="line 3"):
        read_events(BEFORE_TYPED_EVENTS)


# the report, from the real writers ----------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_report_follows_every_watchlist_the_real_sync_applied_refused_replaced_expired_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    keys, clock = Keys(), Clock(NOW)
    with AuditLog.open(path, UNIT) as log:
        sync = WatchlistSync(
            unit_id="unit-a", model_id=MODEL, command_centre_key=keys.centre.public_key(), unit_key=keys.unit,
            max_bundle_bytes=100_000, ack_topic="ack", publish=lambda topic, payload: True, audit=log, clock=clock,
            record=LifecycleFile(tmp_path / "lifecycle.json", UNIT, Ed25519PrivateKey.generate()),
        )  # fmt: skip
        sync.handle_message("t", make_bundle(keys, version=5))
        sync.handle_message("t", make_bundle(keys, version=4))  # older: rollback
        sync.handle_message("t", make_bundle(keys, version=9, unit_id="unit-b"))  # for another unit
        sync.handle_message("t", make_bundle(keys, version=6, valid_until=NOW + 600))  # replaces v5
        clock.now = NOW + 600
        assert sync.check_expiry()  # v6 expires
        sync.handle_message("t", make_bundle(keys, version=7, deployment="DEP-2", valid_until=NOW + 7200))
        close = bundle.build_close("DEP-2", "unit-a", keys.centre, clock.now, "n1")
        sync.handle_message("t", close)
        sync.handle_message("t", close)  # the retained close again, after a reconnect: one close
        sync.handle_message("t", make_bundle(keys, version=8, deployment="DEP-3", valid_until=NOW + 7200))
        sync.shutdown()
    report = deployment_report(path)
    assert report.ok and report.units == (UNIT,)
    assert report.deployments == ("DEP-1", "DEP-2", "DEP-3")
    window = bundle.iso(NOW - 60)
    assert [
        (w.deployment, w.version, w.subjects, w.valid_from, w.valid_until, w.ended_by) for w in report.watchlists
    ] == [
        ("DEP-1", 5, 3, window, bundle.iso(NOW + 3600), "replaced by v6"),
        ("DEP-1", 6, 3, window, bundle.iso(NOW + 600), "expired"),
        ("DEP-2", 7, 3, window, bundle.iso(NOW + 7200), "closed"),
        ("DEP-3", 8, 3, window, bundle.iso(NOW + 7200), "shutdown"),
    ]
    assert all(w.ended_at is not None and w.applied_at <= w.ended_at for w in report.watchlists)
    assert (report.watchlists_applied, report.watchlists_closed, report.watchlists_expired) == (4, 1, 1)
    assert (report.watchlists_replaced, report.watchlists_wiped_at_shutdown) == (1, 1)
    assert report.watchlists_refused == {"rollback": 1, "wrong_unit": 1}
    assert report.faces_seen == 0 and report.alerts == 0 and report.faults == ()
    text = report.text()
    assert "watchlists:         applied 4, closed 1, expired 1, refused 2 (rollback 1, wrong_unit 1)" in text
    assert f"  DEP-2 v7: 3 subjects, valid {window} .. {bundle.iso(NOW + 7200)}; applied " in text
    assert cli.main(["report", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["watchlists"][2]["ended_by"] == "closed" and out["watchlists_refused"]["rollback"] == 1


class LoopbackPublisher:
    """Stands in for the broker connection: always connected, keeps what was published."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.published: list[bytes] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> bool:
        self.published.append(payload)
        return True


def test_the_report_counts_each_decision_the_real_handset_channel_audited(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = tmp_path / "audit.jsonl"
    phone = HandsetKeys.generate(tmp_path / "handset", "handset-1")
    paired = {"handset-1": parse_handset(phone.record(), "test")}
    sent = [DecisionKind.ENGAGE, DecisionKind.FALSE_ALERT, DecisionKind.ENGAGE, DecisionKind.NO_ACTION]
    own_topic = Topics.for_unit("lfr/v1", UNIT).decision_from("handset-1")
    with AuditLog.open(path, UNIT) as log:
        channel = HandsetChannel(
            LoopbackPublisher(),
            Topics.for_unit("lfr/v1", UNIT),
            UNIT,
            Ed25519PrivateKey.generate(),
            lambda: paired,
            AlertsConfig(),
            log,
        )
        for n, kind in enumerate(sent):
            alert_id = f"a-{n}"
            channel.deliver(Alert(alert_id, UNIT, "cam0", time.time(), 0.7, 0.5, "S-1", "wanted", "", b"\xff", b"\xff"))
            decision = encode_decision(Decision(alert_id, UNIT, "handset-1", kind, time.time()), phone.signing)
            channel.on_decision(own_topic, decision)
            channel.on_decision(own_topic, decision)  # QoS 1 redelivery: not audited twice
        channel.on_decision(own_topic, b"{not json")
    events = read_events(path)
    assert [e for e in events if isinstance(e, OfficerDecision)] == [
        OfficerDecision(f"a-{n}", "handset-1", kind) for n, kind in enumerate(sent)
    ]
    report = deployment_report(path)
    assert report.decisions == {"engage": 2, "no_action": 1, "false_alert": 1}
    assert report.decisions_refused == 1
    assert "  decided engage:      2" in report.text() and "  decisions refused:   1" in report.text()


def test_the_fault_monitor_writes_one_pair_of_events_per_episode(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    stall = Problem(FaultComponent.CAMERA, "cam0", FaultProblem.STALLED, "no frame for more than 2 s")
    silent = Problem(FaultComponent.BEACON, "/dev/lfr-beacon", FaultProblem.UNRESPONSIVE, "no answer", confirm_s=1.0)
    lost = Problem(FaultComponent.BROKER, "broker:8883", FaultProblem.DISCONNECTED, "the connection is lost")
    # (time, what is wrong then), polled every half second
    timeline: list[tuple[float, list[Problem]]] = [
        (0.0, []),
        (0.5, [stall]),
        (1.0, [stall, silent]),  # the beacon is silent for under confirm_s: not a fault
        (1.5, [stall]),
        (2.0, []),  # the camera flaps: frames for a moment...
        (2.5, [stall]),  # ...then stalled again: the same episode
        (3.0, []),
        (4.0, []),
        (5.0, [lost]),  # the camera's episode ends (healthy since 2.5 + settle_s); the broker is lost for good
        (6.0, [lost]),
    ]
    with AuditLog.open(path, UNIT) as log:
        monitor = FaultMonitor(log, poll_s=0.5, settle_s=2.0, startup_grace_s=0.0)
        for now, problems in timeline:
            monitor.poll(now, functools.partial(list, problems))
    events = [e for e in read_events(path) if isinstance(e, Fault | FaultCleared)]
    assert events == [
        Fault(FaultComponent.CAMERA, "cam0", FaultProblem.STALLED, "no frame for more than 2 s"),
        FaultCleared(FaultComponent.CAMERA, "cam0", FaultProblem.STALLED, 2.0),
        Fault(FaultComponent.BROKER, "broker:8883", FaultProblem.DISCONNECTED, "the connection is lost"),
    ]
    report = deployment_report(path)
    assert [(f.component, f.source, f.problem, f.lasted_s) for f in report.faults] == [
        ("camera", "cam0", "stalled", 2.0),
        ("broker", "broker:8883", "disconnected", None),
    ]
    text = report.text()
    assert "faults:             2" in text
    assert "camera cam0 stalled: no frame for more than 2 s (cleared after 2.0 s)" in text


@dataclass
class Source:
    name: str


@dataclass
class Capture:
    source: Source
    state: str
    stalled: bool = False
    last_error: str = ""
    stall_after_s: float = 2.0


@dataclass(frozen=True)
class Link:
    connected: bool
    responsive: bool


@dataclass
class Beacon:
    link: Link

    def state(self) -> Link:
        return self.link


def test_current_problems_reads_cameras_beacon_and_broker() -> None:
    captures = [
        Capture(Source("cam0"), "streaming", stalled=True),
        Capture(Source("cam1"), "reconnecting", last_error="device unplugged"),
        Capture(Source("cam2"), "ended"),  # a replay that ended is not a fault
        Capture(Source("cam3"), "streaming"),
    ]
    found = current_problems(captures, Beacon(Link(False, False)), "/dev/lfr-beacon", False, "broker:8883")
    assert [(p.component, p.source, p.problem) for p in found] == [
        (FaultComponent.CAMERA, "cam0", FaultProblem.STALLED),
        (FaultComponent.CAMERA, "cam1", FaultProblem.DISCONNECTED),
        (FaultComponent.BEACON, "/dev/lfr-beacon", FaultProblem.DISCONNECTED),
        (FaultComponent.BROKER, "broker:8883", FaultProblem.DISCONNECTED),
    ]
    assert found[1].detail == "device unplugged"
    silent = current_problems([], Beacon(Link(True, False)), "/dev/lfr-beacon", True, "broker:8883")
    assert [(p.problem, p.confirm_s) for p in silent] == [(FaultProblem.UNRESPONSIVE, 1.0)]
    assert current_problems([], None, "", True, "broker:8883") == []


# the command line ---------------------------------------------------------------------------------------


def test_cli_verify_exits_zero_when_intact_and_one_naming_the_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    assert cli.main(["verify", str(path)]) == 0
    assert "chain intact: 6 events" in capsys.readouterr().out
    lines[1] = lines[1].replace(b"0.1.0", b"0.1.1")
    path.write_bytes(b"".join(lines))
    assert cli.main(["verify", str(path)]) == 1
    assert "line 3" in capsys.readouterr().err
    assert cli.main(["report", str(path)]) == 1  # the figures would not cover the whole log
    assert "chain broken at line 3" in capsys.readouterr().out


def test_cli_verify_with_expect_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    head = verify(path).head
    assert head is not None
    assert cli.main(["verify", str(path), "--expect-head", f"{head.seq}:{head.hash}"]) == 0
    wrong = Head(head.seq, "f" * 64)
    assert cli.main(["verify", str(path), "--expect-head", f"{wrong.seq}:{wrong.hash}"]) == 1
    capsys.readouterr()


def test_missing_file_is_reported_by_name(tmp_path: Path) -> None:
    report = verify(tmp_path / "nope.jsonl")
    assert not report.ok and "nope.jsonl" in report.problem


def test_the_wipe_reasons_the_sync_uses_are_declared() -> None:
    assert {r.value for r in WipeReason} == {"expired", "closed", "shutdown"}
    assert WatchlistApplied.name in EVENTS
