"""The deployment lifecycle across restarts, floods and outages, on the real daemon, broker and CLI (issue 12).

Each test reproduces a finding first: a closed deployment came back after a restart; a refused retained
bundle left a van silently without its list; a decision flood dropped the command centre's close; an
unreachable broker was silent.
"""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lfr_contracts import bundle
from lfr_contracts.beacon import Pattern
from lfr_contracts.status import UnitStatus
from lfr_contracts.telemetry import decode_telemetry
from lfr_edge import keyfiles
from lfr_edge.vision.pipeline import FacePipeline
from lfr_hwsim.broker import COMMAND_CENTRE
from lfr_hwsim.van import DaemonProcess, SimulatedVan, Subject
from lfr_tools.command_centre.cli import main as watchlist_main
from lfr_tools.command_centre.enrol import PipelineEnroller
from lfr_tools.handset.cli import HandsetClient
from lfr_tools.handset.unit_state import status_line
from mqtt_fixtures import Collector

pytestmark = [pytest.mark.slow, pytest.mark.broker]

WANTED = "7205"


@pytest.fixture
def van(tmp_path: Path) -> Iterator[SimulatedVan]:
    with SimulatedVan(tmp_path / "van", unit_id="van-01") as running:
        yield running


def replay_of(faces: Path, tmp: Path, identity: str, skip: int = 2) -> dict[str, object]:
    folder = tmp / f"frames-{identity}"
    folder.mkdir()
    for i, image in enumerate(sorted((faces / "wild" / identity).glob("*.jpg"))[skip:]):
        (folder / f"{i:03d}.jpg").symlink_to(image)
    return {"name": "cam0", "source": "replay", "uri": str(folder), "fps": 8.0, "options": {"loop": True}}


def watchlist_of(van: SimulatedVan, faces: Path, pipeline: FacePipeline) -> bytes:
    photos = sorted((faces / "wild" / WANTED).glob("*.jpg"))[:2]
    return van.build_watchlist([Subject("S-1", "wanted", tuple(photos))], PipelineEnroller(pipeline), 0.5)


def retained_status(van: SimulatedVan) -> UnitStatus:
    reader = Collector(van.broker, COMMAND_CENTRE)
    try:
        reader.subscribe(van.topics.status)
        return UnitStatus.decode(reader.next_on(van.topics.status, timeout=10).payload)
    finally:
        reader.close()


def wait_status(van: SimulatedVan, state: str, timeout: float = 20.0) -> UnitStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = retained_status(van)
        if status.watchlist is not None and status.watchlist.state == state:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"the unit's status never said watchlist {state}: {status}")
        time.sleep(0.3)


def handset_shows(phone: HandsetClient, state: str, timeout: float = 20.0) -> str:
    """The line `lfr-handset listen` prints for the first status the handset receives with watchlist `state`."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            status = phone.statuses.get(timeout=left)
        except queue.Empty:
            break
        if status.state == "online" and status.watchlist is not None and status.watchlist.state == state:
            return status_line(status)
    raise AssertionError(f"the handset never received a status saying watchlist {state}")


def close_with_the_cli(
    van: SimulatedVan, tmp: Path, capsys: pytest.CaptureFixture[str], deployment: str = "sim-deployment"
) -> int:
    key = tmp / "command-centre.key"
    if not key.exists():
        keyfiles.save_private_key(key, van.command_centre_key)
    tls = van.broker.client(COMMAND_CENTRE)
    done = watchlist_main([
        "close", "--deployment", deployment, "--sign-key", str(key), "--unit", van.unit_id,
        "--broker", f"{van.broker.host}:{van.broker.port}", "--ca", str(tls.ca_file), "--cert", str(tls.cert_file),
        "--key", str(tls.key_file), "--wait-ack", "--timeout", "20",
    ])  # fmt: skip
    assert f"cleared the retained message on {van.topics.watchlist}" in capsys.readouterr().out
    return done


def retained_watchlist(van: SimulatedVan) -> bytes | None:
    """What the broker retains on the unit's watchlist topic, or None, read as the unit (only the unit may read
    it: run it while the daemon is stopped). The broker sends a subscription's retained message before it
    answers the next SUBSCRIBE on the same connection, so once the second is granted the first has come."""
    reader = Collector(van.broker, van.unit_id)
    try:
        assert reader.subscribe(van.topics.watchlist) == [1]
        assert reader.subscribe(van.topics.decisions) == [1]
        return None if reader.messages.empty() else reader.messages.get_nowait().payload
    finally:
        reader.close()


def test_a_closed_deployment_never_comes_back_after_a_restart(
    van: SimulatedVan, faces: Path, pipeline: FacePipeline, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = watchlist_of(van, faces, pipeline)
    van.publish_watchlist(payload, wait_ack_s=None)
    config = van.write_config([replay_of(faces, tmp_path, WANTED)])
    phone = van.handset()
    daemon = van.start_daemon(config)
    daemon.wait_for("READY", timeout=60)
    phone.alerts.get(timeout=60)  # the list works
    assert ": watchlist active: sim-deployment v" in handset_shows(phone, "active")
    assert close_with_the_cli(van, tmp_path, capsys) == 0  # the unit answered closed; then the CLI cleared it
    wait_status(van, "closed")
    assert daemon.terminate() == 0
    assert retained_watchlist(van) is None  # the broker retains neither the bundle nor the close
    while not phone.alerts.empty():
        phone.alerts.get_nowait()

    before = daemon.log_path.stat().st_size
    daemon = van.start_daemon(config)
    try:
        ready = daemon.wait_for("READY", timeout=60)
        # Nothing retained is not a refusal: the record says the deployment was closed, and the officer is told.
        status = wait_status(van, "closed")
        told = handset_shows(phone, "closed")
        assert f"UNIT {van.unit_id} online since " in told and "watchlist closed: sim-deployment" in told
        assert "no alert can come" in told
        assert status.watchlist is not None and status.watchlist.deployment == "sim-deployment"
        assert "watchlist closed" in ready["STATUS"] or "closed" in daemon.wait_for("STATUS", 10)["STATUS"]
        # The broker retains the bundle again (the command centre's copy published again, or an old broker's
        # state restored), as it did when this was found: the unit refuses it and still says closed.
        van.publish_watchlist(payload, wait_ack_s=None)
        with pytest.raises(queue.Empty):
            phone.alerts.get(timeout=8)  # the wanted person walks past again: no prompt
        status = wait_status(van, "closed")
        assert status.watchlist is not None and status.watchlist.deployment == "sim-deployment"
    finally:
        assert daemon.terminate() == 0
    assert retained_watchlist(van) == payload  # what the broker retains is seen when there is something
    after_restart = daemon.log_path.read_bytes()[before:].decode(errors="replace")
    refusals = [line for line in after_restart.splitlines() if "refused a message" in line]
    assert len(refusals) == 1 and "deployment_ended" in refusals[0], refusals  # only the bundle published again


def test_a_refused_retained_bundle_says_refused_after_a_restart(
    van: SimulatedVan, faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    watchlist_of(van, faces, pipeline)
    wrong_unit = van.reissue_watchlist(version=50, unit_id="van-99")
    van.publish_watchlist(wrong_unit, wait_ack_s=None)
    config = van.write_config([replay_of(faces, tmp_path, WANTED)])
    for _ in range(2):  # the first start refuses it; after a restart the status still says why
        daemon = van.start_daemon(config)
        try:
            daemon.wait_for("READY", timeout=60)
            status = wait_status(van, "refused")
            assert status.watchlist is not None and status.watchlist.reason == "wrong_unit"
            assert "van-99" in (status.watchlist.detail or "")
            assert van.beacon is not None and van.beacon.wait_for(Pattern.NO_WATCHLIST, timeout_s=10)
        finally:
            assert daemon.terminate() == 0


def test_a_decision_flood_does_not_delay_the_command_centres_close(
    van: SimulatedVan, faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    van.publish_watchlist(watchlist_of(van, faces, pipeline), wait_ack_s=None)
    config = van.write_config([replay_of(faces, tmp_path, "7204")], daemon={"telemetry_interval_s": 1.0})
    acks = Collector(van.broker, COMMAND_CENTRE)
    acks.subscribe(van.topics.watchlist_ack)
    acks.subscribe(van.topics.telemetry)
    junk = Collector(van.broker, van.handset_ids[0])
    daemon = van.start_daemon(config)
    try:
        daemon.wait_for("READY", timeout=60)
        assert json.loads(acks.next_on(van.topics.watchlist_ack, timeout=30).payload)["status"] == "applied"
        for i in range(2999):
            junk.client.publish(van.topics.decisions, json.dumps({"junk": i}).encode(), qos=0)
        junk.publish(van.topics.decisions, b'{"junk": 2999}')  # QoS 1: the whole flood has reached the broker
        close = bundle.build_close("sim-deployment", van.unit_id, van.command_centre_key, time.time(), "flood")
        sent = time.monotonic()
        acks.publish(van.topics.watchlist, close, retain=True)  # on the command centre's open connection
        ack = json.loads(acks.next_on(van.topics.watchlist_ack, timeout=10).payload)
        took = time.monotonic() - sent
        print(f"close to wipe under a 3,000-decision flood: {took * 1000:.0f} ms")
        assert ack["status"] == "closed" and took < 1.0, took
        # The whole flood reached the unit before the close did (the broker forwards in order), so the next
        # telemetry counts every decision the full queue dropped.
        telemetry = decode_telemetry(acks.next_on(van.topics.telemetry, timeout=10).payload)
        dropped = telemetry.messages_dropped.get(van.topics.decisions, 0)
    finally:
        junk.close()
        acks.close()
        assert daemon.terminate() == 0
    log = daemon.log_path.read_text()
    # Every junk decision was refused or dropped with the queue full, each counted, and reported in a few lines
    # (one per interval and at stop), not one per message. How many the queue dropped depends on the load.
    reports = [line for line in log.splitlines() if "refused" in line and "handset message(s)" in line]
    refused = sum(int(line.split("refused ")[1].split()[0]) for line in reports)
    assert 1 <= len(reports) <= 3 and refused + dropped == 3000, (refused, dropped)
    print(f"the flood: {refused} refused, {dropped} dropped with the decisions queue full")


def log_time(line: str) -> float:
    """The time of a daemon log line (logging's default asctime: `2026-12-04 03:30:00,123`)."""
    stamp = " ".join(line.split()[:2])
    return time.mktime(time.strptime(stamp.split(",")[0], "%Y-%m-%d %H:%M:%S")) + int(stamp.split(",")[1]) / 1000


def test_an_unreachable_broker_is_logged_with_the_reason_within_5_s_and_the_unit_scans_on(
    van: SimulatedVan, tmp_path: Path
) -> None:
    from lfr_hwsim.broker import free_port

    port = free_port()
    config = van.write_config(
        [{"name": "cam0", "source": "simulator", "fps": 5.0, "options": {"seed": 1, "crowd": 1.0}}],
        mqtt={"port": port},
    )
    daemon = DaemonProcess(config, van.dir)
    try:
        deadline = time.monotonic() + 60  # the models load first; the broker is tried when the client starts
        while time.monotonic() < deadline and "connection refused" not in daemon.log_path.read_text():
            time.sleep(0.1)
        lines = daemon.log_path.read_text().splitlines()
        connecting = next(line for line in lines if "mqtt: connecting to" in line)
        refused = [line for line in lines if "connection refused" in line]
        assert refused and f"127.0.0.1:{port}" in refused[0]
        assert log_time(refused[0]) - log_time(connecting) < 5.0
        # The unit scans without its broker: READY, with the broker and its problem named in STATUS=.
        ready = daemon.wait_for("READY", timeout=60)
        assert f":{port}" in ready["STATUS"] and "connection refused" in ready["STATUS"], ready
        time.sleep(3)
        mqtt_lines = [line for line in daemon.log_path.read_text().splitlines() if "lfr_edge.comms.mqtt" in line]
        assert sum("connection refused" in line for line in mqtt_lines) == 1  # said once, not per attempt
    finally:
        daemon.terminate()
