"""The hash-chained audit log: tamper detection, resume, biometric refusal, deployment report, CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from lfr_edge.audit import log as audit
from lfr_edge.audit.log import AuditChainError, AuditLog, BiometricFieldError, Head, genesis_hash, verify

UNIT = "van-07"


def write_log(path: Path, events: int = 6) -> list[bytes]:
    with AuditLog.open(path, UNIT) as log:
        log.append(audit.STARTED, version="0.1.0")
        for i in range(events - 2):
            log.append(audit.FACES_SEEN, camera="cam0", count=i)
    return path.read_bytes().splitlines(keepends=True)


def test_fresh_log_verifies_and_starts_from_the_units_genesis(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    first = json.loads(lines[0])
    assert first["event"] == "log_created" and first["unit"] == UNIT and first["seq"] == 0
    assert first["prev"] == genesis_hash(UNIT)
    assert list(first)[:3] == ["seq", "time", "event"] and list(first)[-1] == "prev"
    report = verify(path)
    assert report.ok and report.events == 6
    assert report.summary() == "chain intact: 6 events"
    assert verify(path, unit_id=UNIT).ok
    assert not verify(path, unit_id="van-08").ok


def test_file_is_created_mode_0640_even_under_a_strict_umask(tmp_path: Path) -> None:
    import os

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


def test_broken_last_line_is_detected_and_blocks_resuming(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    data = b"".join(write_log(path))
    path.write_bytes(data[:-10])
    report = verify(path)
    assert not report.ok and report.bad_line == 6 and "incomplete" in report.problem
    with pytest.raises(AuditChainError, match="incomplete"):
        AuditLog.open(path, UNIT)


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
        head = log.append(audit.STOPPED, reason="sigterm")
    assert head.seq == 6
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
    data = b"".join(write_log(path))
    path.write_bytes(data[:-10])
    with AuditLog.open(path, UNIT, on_damage="rotate", clock=lambda: "2025-06-01T10:00:00.000Z") as log:
        log.append(audit.STARTED, version="0.1.0")
    kept = tmp_path / "audit.jsonl.damaged-2025-06-01T100000.000Z"
    assert kept.read_bytes() == data[:-10]
    first = json.loads(path.read_bytes().splitlines()[0])
    assert first["previous_log"] == kept.name and len(first["previous_log_sha256"]) == 64
    assert verify(path).ok


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
    ids=[
        "bytes",
        "bytearray",
        "memoryview",
        "ndarray",
        "np-scalar",
        "floats",
        "ints",
        "nested",
        "base64",
        "long",
    ],
)
def test_biometric_looking_values_are_refused_and_nothing_is_written(tmp_path: Path, value: object) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, UNIT) as log:
        before = path.read_bytes()
        with pytest.raises(BiometricFieldError, match="audit field"):
            log.append(audit.ALERT_RAISED, alert_id="a1", crop=value)
        assert path.read_bytes() == before


def test_plain_identifiers_hashes_and_small_lists_are_allowed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog.open(path, UNIT) as log:
        log.append(
            audit.WATCHLIST_APPLIED,
            deployment_id="op-2025-06-01",
            version=3,
            subjects=42,
            bundle_sha256="ab" * 32,
            box=[10, 20, 30, 40],
        )
    assert verify(path).ok


def test_reserved_field_names_and_bad_event_names_are_refused(tmp_path: Path) -> None:
    with AuditLog.open(tmp_path / "audit.jsonl", UNIT) as log:
        with pytest.raises(audit.AuditError, match="reserved"):
            log.append(audit.FAULT, prev="0" * 64)
        with pytest.raises(audit.AuditError, match="event name"):
            log.append("Alert Raised!")


def deployment_log(path: Path) -> None:
    with AuditLog.open(path, UNIT) as log:
        log.append(audit.STARTED, version="0.1.0")
        log.append(
            audit.WATCHLIST_APPLIED,
            deployment_id="op-1",
            version=2,
            subjects=120,
            valid_from="2025-06-01T08:00:00Z",
            valid_until="2025-06-01T20:00:00Z",
        )
        log.append(audit.FACES_SEEN, camera="cam0", count=500)
        log.append(audit.FACES_SEEN, camera="cam1", count=250)
        for n in range(4):
            log.append(audit.ALERT_RAISED, alert_id=f"a{n}", camera="cam0", subject_id=f"s{n}", score=0.7)
        log.append(audit.DECISION, alert_id="a0", handset_id="h1", decision="engage")
        log.append(audit.DECISION, alert_id="a1", handset_id="h1", decision="false_alert")
        log.append(audit.DECISION, alert_id="a2", handset_id="h2", decision="no_action")
        log.append(audit.FAULT, component="beacon", message="no ack")
        log.append(audit.WATCHLIST_WIPED, reason="deployment closed", deployment_id="op-1", version=2, subjects=120)
        log.append(audit.STOPPED, reason="sigterm")


def test_deployment_report_counts_faces_alerts_decisions_and_watchlists(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    deployment_log(path)
    report = audit.deployment_report(path)
    assert report.chain.ok
    assert report.units == (UNIT,)
    assert report.faces_seen == 750 and report.faces_seen_by_camera == {"cam0": 500, "cam1": 250}
    assert report.alerts == 4
    assert report.decisions == {"engage": 1, "no_action": 1, "false_alert": 1}
    assert report.alerts_without_decision == 1
    assert [w["subjects"] for w in report.watchlists_applied] == [120]
    assert report.watchlists_wiped[0]["reason"] == "deployment closed"
    assert report.faults == 1
    text = report.text()
    assert "faces seen:         750" in text and "decided engage:" in text


def test_cli_verify_exits_zero_when_intact_and_one_naming_the_bad_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "audit.jsonl"
    lines = write_log(path)
    assert audit.main(["verify", str(path)]) == 0
    assert "chain intact: 6 events" in capsys.readouterr().out
    lines[1] = lines[1].replace(b"0.1.0", b"0.1.1")
    path.write_bytes(b"".join(lines))
    assert audit.main(["verify", str(path)]) == 1
    assert "line 3" in capsys.readouterr().err


def test_cli_verify_with_expect_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path)
    head = verify(path).head
    assert head is not None
    assert audit.main(["verify", str(path), "--expect-head", f"{head.seq}:{head.hash}"]) == 0
    wrong = Head(head.seq, "f" * 64)
    assert audit.main(["verify", str(path), "--expect-head", f"{wrong.seq}:{wrong.hash}"]) == 1
    capsys.readouterr()


def test_cli_report_prints_json_without_biometric_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    deployment_log(path)
    assert audit.main(["report", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["alerts"] == 4 and out["chain"]["ok"] is True


def test_missing_file_is_reported_by_name(tmp_path: Path) -> None:
    report = verify(tmp_path / "nope.jsonl")
    assert not report.ok and "nope.jsonl" in report.problem
