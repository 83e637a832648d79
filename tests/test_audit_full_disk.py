"""The audit log on a real full file system (a small tmpfs, filled): records whole or absent, the failure
reported once, a gap record when space returns, a chain that verifies across it; and the real watchlist
sync, whose list expires on time while the log cannot be written. Where no file system can be mounted (not
root), those tests skip saying so, and a file size limit (RLIMIT_FSIZE) makes the writes fail instead.

(tests/test_daemon_full_disk.py does the same with the real daemon.)
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from full_disk import fill, small_filesystem
from lfr_contracts.audit_events import (
    FacesSeen,
    RecordsLost,
    Started,
    Stopped,
    WatchlistApplied,
    WatchlistRefused,
    WatchlistRefusedRepeats,
)
from lfr_edge.audit.log import AuditLog
from lfr_edge.daemon.supervise import Supervisor
from lfr_edge.watchlist.lifecycle import LifecycleFile
from lfr_edge.watchlist.store import WatchlistUnavailable
from lfr_edge.watchlist.sync import WatchlistSync
from lfr_tools.audit.report import deployment_report, read_events
from lfr_tools.audit.verify import verify
from watchlist_helpers import DIM, MODEL, Keys, make_bundle

UNIT = "unit-a"


def whole_lines_only(path: Path) -> bool:
    data = path.read_bytes()
    return data.endswith(b"\n") and verify(path).ok


def test_on_a_full_disk_each_record_is_whole_or_absent_and_the_gap_is_recorded_when_space_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with small_filesystem(tmp_path / "state") as state:
        path = state / "audit.jsonl"
        audit = AuditLog.open(path, UNIT)
        audit.append(Started(version="0.1.0", cameras=("cam0",)))
        filler = fill(state)
        outcomes = []
        with caplog.at_level(logging.WARNING, logger="lfr_edge.audit.log"):
            for i in range(40):
                size = path.stat().st_size
                head = audit.append(FacesSeen(camera="cam0", count=i))
                outcomes.append(head is not None)
                assert whole_lines_only(path)  # after every try: whole, chained lines only
                if head is None:
                    assert path.stat().st_size == size  # a short write was cut back
            lost, first_lost = outcomes.count(False), outcomes.index(False)
            assert lost >= 10 and not any(outcomes[first_lost:])  # the page's slack took a few, then none fit
            health = audit.health()
            assert not health.writable and health.lost == lost and health.failing_since is not None
            assert not audit.retry()  # still full
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()  # once per episode

            filler.unlink()  # space returns
            assert audit.retry()
            assert audit.health().writable and audit.health().lost == lost
            assert any("again" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        head = audit.append(Stopped(reason="signal", frames=1))
        assert head is not None
        audit.close()

        report = verify(path)
        assert report.ok and (report.gaps, report.lost) == (1, lost)
        events = read_events(path)
        gap = next(e for e in events if isinstance(e, RecordsLost))
        assert gap.lost == lost and gap.lost_events == {"faces_seen": lost} and gap.error == "No space left on device"
        assert gap.since <= gap.until
        written = [e.count for e in events if isinstance(e, FacesSeen)]
        assert written == [i for i, ok in enumerate(outcomes) if ok]

        # The next start goes on with the same chain: nothing is set aside.
        with AuditLog.open(path, UNIT, on_damage="rotate") as again:
            assert again.head is not None and again.head == report.head
            again.append(Started(version="0.1.0", cameras=("cam0",)))
        assert verify(path).ok and not list(state.glob("*.damaged-*"))
        cli = subprocess.run(
            [sys.executable, "-m", "lfr_tools.audit.cli", "verify", str(path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert f"1 gap(s) recorded, {lost} record(s) lost" in cli.stdout


def test_a_new_log_on_a_full_disk_starts_its_chain_once_space_returns(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "state") as state:
        filler = fill(state)
        audit = AuditLog.open(state / "audit.jsonl", UNIT)  # opening needs no space
        assert audit.append(Started(version="0.1.0", cameras=("cam0",))) is None
        assert audit.head is None and not audit.health().writable
        filler.unlink()
        assert audit.retry()
        audit.close()
        events = read_events(state / "audit.jsonl", unit_id=UNIT)
        assert [e.name for e in events] == ["log_created", "gap"]
        assert isinstance(events[1], RecordsLost) and events[1].lost_events == {"started": 1}


def wait_until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_the_real_sync_expires_its_list_on_time_while_the_audit_log_is_full(tmp_path: Path) -> None:
    """The issue's fault: the first failed audit write ended the expiry thread and the list stayed held."""
    keys, supervisor = Keys(), Supervisor()
    wall = [time.time()]  # the unit's clock, stepped past the window once the disk is full: no race
    with small_filesystem(tmp_path / "state", size_kib=128) as state:
        audit = AuditLog.open(state / "audit.jsonl", UNIT)
        sync = WatchlistSync(
            unit_id=UNIT, model_id=MODEL, command_centre_key=keys.centre.public_key(), unit_key=keys.unit,
            max_bundle_bytes=100_000, ack_topic="ack", publish=lambda topic, payload: True, audit=audit,
            record=LifecycleFile(state / "lifecycle.json", UNIT, Ed25519PrivateKey.generate()),
            supervisor=supervisor, clock=lambda: wall[0],
        )  # fmt: skip
        now = wall[0]
        valid_until = now + 3.0
        sync.handle_message(
            "t", make_bundle(keys, version=5, valid_from=now - 60, valid_until=valid_until, issued_at=now)
        )
        held = sync.store
        assert held is not None
        sync.start_expiry_timer(period_s=0.1)
        filler = fill(state)
        while audit.append(FacesSeen(camera="cam0", count=1)) is not None:
            pass  # the log file's last page had room for a few more lines
        for version in range(20):  # a flood of bundles for another unit while the disk is full
            sync.handle_message("t", make_bundle(keys, version=100 + version, unit_id="unit-b"))

        assert sync.store is held  # the window has not ended yet
        wall[0] = valid_until + 0.5  # it ends now, with the disk full
        assert wait_until(lambda: sync.store is None, timeout=5.0)  # wiped by the timer, not at shutdown
        with pytest.raises(WatchlistUnavailable):
            held.search(np.ones((1, DIM), np.float32), now=now)  # zeroed, not just dropped
        assert sync.status().state == "expired"
        assert audit.health().lost >= 2  # the wipe and the first refusal
        assert supervisor.health().failures == {}  # no thread died, none was restarted
        assert any(t.name == "watchlist-expiry" and t.is_alive() for t in threading.enumerate())

        filler.unlink()
        assert audit.retry()
        sync.shutdown()
        audit.close()

        report = deployment_report(state / "audit.jsonl")
        assert report.ok and report.chain.gaps == 1
        (gap,) = report.gaps
        assert gap.lost_events == {"faces_seen": 1, "watchlist_refused": 1, "watchlist_wiped": 1}
        (period,) = report.watchlists
        assert period.version == 5 and period.ended_by is not None and "lost in the gap" in period.ended_by
        assert report.watchlists_refused == {"wrong_unit": 19}  # the first was lost; the 19 repeats, one line
        events = read_events(state / "audit.jsonl")
        assert [type(e) for e in events if not isinstance(e, FacesSeen)] == [
            type(events[0]), WatchlistApplied, RecordsLost, WatchlistRefusedRepeats
        ]  # fmt: skip
        assert not any(isinstance(e, WatchlistRefused) for e in events)


FILE_SIZE_LIMIT = r"""
import json, resource, signal, sys
from pathlib import Path
from lfr_contracts.audit_events import FacesSeen, Started
from lfr_edge.audit.log import AuditLog
from lfr_tools.audit.verify import verify

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG) instead of killing
path = Path(sys.argv[1])
audit = AuditLog.open(path, "unit-a")
audit.append(Started(version="0.1.0", cameras=("cam0",)))
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 200, resource.RLIM_INFINITY))
written, whole = [], []
for i in range(6):
    written.append(audit.append(FacesSeen(camera="cam0", count=i)) is not None)
    whole.append(path.read_bytes().endswith(b"\n") and verify(path).ok)
health = audit.health()
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print(json.dumps({"written": written, "whole": whole, "lost": health.lost, "retried": audit.retry()}))
audit.close()
"""


def test_where_no_file_system_can_be_mounted_a_file_size_limit_fails_the_writes_the_same_way(tmp_path: Path) -> None:
    """Runs without root: RLIMIT_FSIZE makes a real write stop short, then fail (EFBIG), in a child process."""
    path = tmp_path / "audit.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", FILE_SIZE_LIMIT, str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["written"][0] and not any(outcome["written"][2:])  # a line fits, then a short write
    assert all(outcome["whole"]) and outcome["lost"] == outcome["written"].count(False) and outcome["retried"]
    assert "File too large" in result.stderr  # the one error line of the episode
    report = verify(path)
    assert report.ok and (report.gaps, report.lost) == (1, outcome["lost"])
