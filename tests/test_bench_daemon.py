"""The daemon-level bench parts: how alerts are paired with beacon commands, how telemetry windows become
rates, the timestamps the simulated beacon and the handset keep, and one real latency run (slow)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import serial

from lfr_bench.common import BenchContext
from lfr_bench.daemon_harness import Sample, rates, van_missing
from lfr_bench.latency import beacon_latencies, percentiles
from lfr_bench.report import write_results
from lfr_contracts import beacon as bp
from lfr_contracts.alerts import Alert
from lfr_contracts.status import WatchlistStatus
from lfr_contracts.telemetry import AuditHealth, CameraState, Telemetry, ThreadHealth
from lfr_hwsim.beacon import SimulatedBeacon
from lfr_tools.handset.cli import ReceivedAlert

MACHINE = {"cpu": "test cpu", "cores": 2, "python": "3.11", "platform": "linux", "libraries": {}}


def test_each_alert_is_paired_with_the_first_alert_pattern_after_its_frame() -> None:
    frames = [10.0, 10.2, 10.4]
    executions = [9.95, 10.03, 10.25, 10.43]  # 9.95 belongs to an earlier alert, not to the first one
    assert beacon_latencies(frames, executions) == pytest.approx([30.0, 50.0, 30.0])


def test_an_alert_that_sent_no_beacon_command_of_its_own_gets_no_latency() -> None:
    # The second alert came while the lamps still showed the first: only one SET_PATTERN(alert).
    frames = [10.0, 10.02, 10.4]
    executions = [10.05, 10.45]
    assert beacon_latencies(frames, executions) == pytest.approx([50.0, 50.0])


def test_percentiles_use_the_nearest_rank() -> None:
    stats = percentiles([float(v) for v in range(1, 101)])
    assert (stats["n"], stats["p50_ms"], stats["p95_ms"], stats["p99_ms"], stats["max_ms"]) == (100, 50, 95, 99, 100)
    assert percentiles([])["n"] == 0


def telemetry(t: float, frames: int, faces: int, dropped: int, camera_dropped: int) -> Telemetry:
    return Telemetry(
        unit="unit-a",
        time=t,
        uptime_s=t - 990.0,
        fps=20.0,
        frames=frames,
        faces_seen=faces,
        faces_embedded=faces // 2,
        faces_rejected={},
        tracks_started=3,
        tracks_ended_unmatched=1,
        alerts=0,
        stage_ms={"frame": 40.0},
        frames_skipped={"cam0": dropped},
        camera_fps={"cam0": 20.0},
        cpu_temp_c=None,
        watchlist=WatchlistStatus("none"),
        cameras={"cam0": CameraState.STREAMING},
        camera_dropped={"cam0": camera_dropped},
        beacon=None,
        alerts_outbox={},
        threads=ThreadHealth({}, ()),
        audit=AuditHealth(True, 0, None),
    )


def test_rates_come_from_counter_differences_over_the_window() -> None:
    window = [
        Sample(100.0, 5.0, telemetry(1000.0, 50, 100, 3, 1)),
        Sample(101.0, 5.8, telemetry(1001.0, 70, 140, 3, 1)),
        Sample(102.0, 6.6, telemetry(1002.0, 90, 180, 10, 2)),
    ]
    r = rates(window, os.getpid())
    assert (r.fps, r.faces_per_s, r.frames, r.dropped) == (20.0, 40.0, 40, 8)
    assert r.cpu_percent == pytest.approx(80.0)
    assert r.rss_mb > 0 and r.hwm_mb >= r.rss_mb


def test_the_report_marks_the_steady_memory_target(tmp_path: Path) -> None:
    from lfr_bench.common import PartResult

    part = PartResult(
        "memory", True, summary={"daemon_rss_mb_10k": 420.0, "daemon_rss_steady_mb_10k": 290.0}, table="| a |"
    )
    write_results(tmp_path, MACHINE, "bench", [part])
    report = (tmp_path / "REPORT.md").read_text()
    assert "(peak VmRSS at steady state): NOT met" in report
    assert "(steady VmRSS): met" in report


def test_the_simulated_beacon_records_when_it_carried_out_each_command(tmp_path: Path) -> None:
    beacon = SimulatedBeacon(tmp_path / "lfr-beacon")
    beacon.start()
    try:
        with serial.Serial(str(beacon.link), timeout=2.0) as port:
            before = time.time()
            port.write(bp.encode(bp.set_pattern(7, bp.Pattern.ALERT)))
            decoder = bp.FrameDecoder()
            replies: list[bp.Frame | bp.BadChecksum] = []
            while not replies:
                chunk = port.read(max(1, port.in_waiting))
                assert chunk, "the simulated beacon did not answer"
                replies = decoder.feed(chunk)
            after = time.time()
        ((when, command),) = beacon.executed_at()
        assert command.kind == bp.Command.SET_PATTERN and command.seq == 7
        assert before <= when <= after
    finally:
        beacon.stop()


def test_the_handset_age_after_decryption_is_measured_from_the_frame_time() -> None:
    alert = Alert(
        alert_id="a1",
        unit="van",
        camera="cam0",
        time=1000.0,
        score=0.8,
        threshold=0.5,
        subject_id="S1",
        category="wanted",
        reference="",
        live_jpeg=b"x",
        watchlist_jpeg=b"y",
    )
    received = ReceivedAlert(alert, 1000.020, 1000.023)
    assert received.age_ms == pytest.approx(20.0)
    assert received.decoded_age_ms == pytest.approx(23.0)
    assert ReceivedAlert(alert, 1000.02).decoded_age_ms is None


@pytest.mark.slow
def test_the_latency_part_measures_alerts_from_the_real_daemon(tmp_path: Path) -> None:
    from lfr_bench import latency

    faces = Path(os.environ.get("LFR_FACES", Path(__file__).resolve().parents[2] / "shared" / "faces"))
    ctx = BenchContext(tmp_path, True, faces.resolve(), Path(__file__).resolve().parents[1])
    missing = van_missing(ctx)
    if missing is not None:
        pytest.skip(missing)
    result = latency.run(ctx)
    assert result.measured, result.reason
    stats = result.data["stats"]
    assert stats["handset"]["n"] >= 40
    assert 0 < stats["handset"]["p50_ms"] <= stats["handset"]["p99_ms"] < 5000
    assert stats["beacon"]["n"] >= 1 and stats["beacon"]["p50_ms"] > 0
    assert (tmp_path / "latency.png").is_file()
    json.dumps(result.to_json())
