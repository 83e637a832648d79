"""The real `lfr-edge run` with its audit log on a small file system that fills up (issue 13, item 4).

Found: the expiry and telemetry threads died on the first failed audit write while WATCHDOG=1 kept flowing,
so a list whose window had ended stayed held until shutdown; a short write left half a line, and after
space returned `audit verify` said the chain was broken. Here the disk fills while a short-lived list is
held: the list expires on time, the unit keeps running and says in telemetry that its log cannot be
written, and once space returns the log has a gap record and `lfr-audit verify` passes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from full_disk import fill, small_filesystem
from lfr_contracts import bundle
from lfr_contracts.status import UnitStatus
from lfr_contracts.telemetry import Telemetry, decode_telemetry
from lfr_edge.vision.pipeline import FacePipeline
from lfr_hwsim.broker import COMMAND_CENTRE
from lfr_hwsim.van import SimulatedVan, Subject
from lfr_tools.command_centre.enrol import PipelineEnroller
from mqtt_fixtures import Collector

pytestmark = [pytest.mark.slow, pytest.mark.broker]

WANTED, STRANGER = "7205", "7204"  # identities of ../shared/faces/wild
VALID_S = 15.0  # the list's window, from when it is published


@pytest.fixture
def van(tmp_path: Path) -> Iterator[SimulatedVan]:
    with SimulatedVan(tmp_path / "van", unit_id="van-01") as running:
        yield running


def next_telemetry(spy: Collector, topic: str, wanted: Callable[[Telemetry], bool], timeout: float) -> Telemetry:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = spy.next(timeout=max(0.1, deadline - time.monotonic()))
        if message.topic == topic:
            telemetry = decode_telemetry(message.payload)
            if wanted(telemetry):
                return telemetry
    raise AssertionError(f"no telemetry as wanted within {timeout} s")


def watchlist_state(van: SimulatedVan) -> str | None:
    reader = Collector(van.broker, COMMAND_CENTRE)
    try:
        reader.subscribe(van.topics.status)
        status = UnitStatus.decode(reader.next_on(van.topics.status, timeout=10).payload)
    finally:
        reader.close()
    return None if status.watchlist is None else status.watchlist.state


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr_tools.audit.cli", *args], capture_output=True, text=True, check=False
    )


def test_on_a_full_disk_the_list_expires_on_time_the_unit_runs_on_and_the_chain_verifies_with_the_gap(
    van: SimulatedVan, faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, image in enumerate(sorted((faces / "wild" / STRANGER).glob("*.jpg"))):
        (frames / f"{i:03d}.jpg").symlink_to(image)
    camera = {"name": "cam0", "source": "replay", "uri": str(frames), "fps": 8.0, "options": {"loop": True}}
    wanted = tuple(sorted((faces / "wild" / WANTED).glob("*.jpg"))[:2])
    van.build_watchlist([Subject("S-1", "wanted", wanted)], PipelineEnroller(pipeline), 0.5)
    with small_filesystem(tmp_path / "audit-fs", size_kib=256) as audit_fs:
        audit_log = audit_fs / "audit.jsonl"
        config = van.write_config(
            [camera], unit={"audit_log": str(audit_log)}, daemon={"telemetry_interval_s": 0.5}
        )  # fmt: skip
        spy = Collector(van.broker, COMMAND_CENTRE)
        spy.subscribe(van.topics.telemetry)
        daemon = van.start_daemon(config)
        try:
            daemon.wait_for("READY", timeout=60)
            payload = van.reissue_watchlist(valid_for_s=VALID_S)
            valid_until = bundle.parse_time(str(bundle.read_envelope(payload, len(payload)).header["valid_until"]))
            ack = van.publish_watchlist(payload, wait_ack_s=30)
            assert ack is not None and ack["status"] == "applied"

            filler = fill(audit_fs)
            full = next_telemetry(spy, van.topics.telemetry, lambda t: not t.audit.writable, timeout=20)
            assert full.watchlist.state == "active" and full.audit.lost > 0  # faces_seen lines could not be written

            expired = next_telemetry(spy, van.topics.telemetry, lambda t: t.watchlist.state != "active", VALID_S + 10)
            assert expired.watchlist.state == "expired"
            assert expired.time < valid_until + 5.0  # on time (one expiry period and a telemetry interval late)
            assert watchlist_state(van) == "expired"
            assert not expired.audit.writable and expired.threads.failures == {} and expired.threads.down == ()
            daemon.wait_for("WATCHDOG", timeout=5)  # still petting: nothing is down

            filler.unlink()
            resumed = next_telemetry(spy, van.topics.telemetry, lambda t: t.audit.writable, timeout=20)
            assert resumed.audit.lost >= full.audit.lost
            assert daemon.terminate(timeout=10) == 0
        finally:
            spy.close()

        verified = run_cli("verify", str(audit_log))  # as the README runs it
        assert verified.returncode == 0, verified.stderr
        assert "chain intact" in verified.stdout and "1 gap(s) recorded" in verified.stdout
        report = run_cli("report", str(audit_log))
        assert report.returncode == 0, report.stdout
        assert "gaps:               1 (" in report.stdout and "watchlist_wiped 1" in report.stdout
        assert "lost in the gap" in report.stdout  # the held list's end is named, not "still held"
        assert not list(audit_fs.glob("*.damaged-*"))
