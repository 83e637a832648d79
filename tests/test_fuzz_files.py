"""Fuzzing the files a unit leaves behind and reads back: its audit log (read by `lfr-audit verify|report`
wherever the log is copied, and by the unit itself when it resumes the chain at start) and its signed
lifecycle record (read at start).

Anyone may hand `lfr-audit` a damaged or forged log: the reader must say where the chain breaks and report
what it can trust, never crash. The unit must resume or set aside whatever tail it finds (a power cut, a full
disk, an edit), and its lifecycle record must load or be refused with LifecycleError.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given

from fuzz_helpers import bounded, fuzz, holds, mutated
from lfr_contracts.alerts import DecisionKind
from lfr_contracts.audit_events import (
    AlertRaised,
    FacesSeen,
    Fault,
    FaultCleared,
    FaultComponent,
    FaultProblem,
    OfficerDecision,
    Started,
    WatchlistApplied,
    WatchlistWiped,
    WipeReason,
)
from lfr_edge.audit.log import AuditChainError, AuditError, AuditLog
from lfr_edge.watchlist import lifecycle
from lfr_edge.watchlist.lifecycle import (
    HeldWatchlist,
    LifecycleError,
    LifecycleState,
    Refusal,
    open_record,
    seal_record,
)
from lfr_tools.audit.report import deployment_report, read_events
from lfr_tools.audit.verify import verify

UNIT = "van-07"
KEY = Ed25519PrivateKey.generate()


def real_log() -> bytes:
    """A deployment's log as the unit's AuditLog writes it."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        with AuditLog.open(path, UNIT) as log:
            log.append(Started(version="0.1.0", cameras=("cam0",)))
            log.append(WatchlistApplied("op-1", 3, "ab" * 32, 12, "2026-12-07T08:00:00Z", "2026-12-07T20:00:00Z", None))
            log.append(FacesSeen(camera="cam0", count=40))
            log.append(AlertRaised("a1b2c3", "cam0", "S-0042", 0.71, 3))
            log.append(OfficerDecision("a1b2c3", "handset-1", DecisionKind.ENGAGE))
            log.append(Fault(FaultComponent.CAMERA, "cam0", FaultProblem.STALLED, "no frame for 5 s"))
            log.append(FaultCleared(FaultComponent.CAMERA, "cam0", FaultProblem.STALLED, 2.5))
            log.append(WatchlistWiped("op-1", 3, 12, WipeReason.CLOSED))
        return path.read_bytes()


LOG = real_log()
RECORD = seal_record(
    UNIT,
    lifecycle.refused(
        lifecycle.ended(
            lifecycle.applied(LifecycleState(), HeldWatchlist("op-1", 3, 12, 1.8e9, 1.8e9 + 3600), "d" * 64),
            "op-0",
            "closed",
        ),
        Refusal("wrong_unit", "the bundle is for unit 'van-08'", 4, 1.8e9),
    ),
    KEY,
)


def test_the_real_log_reads_back_whole() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        path.write_bytes(LOG)
        assert verify(path, UNIT).ok and deployment_report(path, UNIT).ok
        assert [e.name for e in read_events(path, UNIT)][-2:] == ["fault_cleared", "watchlist_wiped"]
    assert open_record(RECORD, UNIT, KEY.public_key()).held == HeldWatchlist("op-1", 3, 12, 1.8e9, 1.8e9 + 3600)


def test_a_line_with_a_huge_number_is_a_broken_chain_not_a_crash() -> None:
    """Found by a long run: a 400-digit seq was quoted whole in the verdict; 5,000 digits raised ValueError in
    the reader and in the unit's own resume at start."""
    lines = LOG.splitlines(keepends=True)
    for digits in (400, 5000):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "audit.jsonl"
            path.write_bytes(b"".join(lines[:-1]) + lines[-1].replace(b'"seq":8', b'"seq":' + b"9" * digits))
            report = verify(path)
            assert not report.ok and report.bad_line == len(lines) and len(report.summary()) < 300
            holds(AuditChainError, functools.partial(reopen, path))
            with AuditLog.open(path, UNIT, on_damage="rotate") as log:
                assert log.append(FacesSeen(camera="cam0", count=1)) is not None


def reopen(path: Path) -> None:
    AuditLog.open(path, UNIT).close()


@fuzz(200)
@given(mutated(LOG, max_mutations=4))
def test_a_damaged_log_is_reported_never_crashes_the_reader(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        path.write_bytes(data)
        with bounded():
            report = verify(path)
            summary = deployment_report(path)
            json.dumps(summary.as_dict())
            assert summary.text() and report.summary()
        if data == LOG:
            assert report.ok
        holds(AuditError, lambda: read_events(path))


@fuzz(150)
@given(mutated(LOG, max_mutations=3))
def test_the_unit_resumes_or_sets_aside_whatever_tail_it_finds(data: bytes) -> None:
    """At start the unit checks its log's tail: it goes on with an intact or cut one, or (the daemon's
    choice) moves a damaged one aside and starts a new chain; either way what it writes then chains."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        path.write_bytes(data)
        with bounded():
            holds(AuditChainError, lambda: AuditLog.open(path, UNIT).close())
            with AuditLog.open(path, UNIT, on_damage="rotate") as log:
                assert log.append(FacesSeen(camera="cam0", count=1)) is not None
            AuditLog.open(path, UNIT).close()  # the tail it left chains: no error now


@fuzz(150)
@given(mutated(RECORD))
def test_a_damaged_lifecycle_record_is_refused_with_a_lifecycle_error(data: bytes) -> None:
    holds(LifecycleError, lambda: open_record(data, UNIT, KEY.public_key()))
