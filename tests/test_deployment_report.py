"""A whole deployment on the simulator, and its report: `lfr-audit report` must say what happened.

A real broker, the real `lfr-edge run` over a simulated street with two watchlisted walkers, the real
handset deciding each alert it receives, two real faults (the camera stalls through its control file,
the beacon's pty is unplugged and plugged back), then the real `lfr-watchlist close`. The unit's own
audit log is then read with the real `lfr-audit verify` and `lfr-audit report`, and every
figure is checked against what the test did and saw: nothing in the log is written by the test.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import queue
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lfr_contracts import bundle
from lfr_contracts.alerts import DecisionKind
from lfr_contracts.audit_events import AuditEvent, FaultCleared, OfficerDecision
from lfr_contracts.telemetry import Telemetry, decode_telemetry
from lfr_edge import keyfiles
from lfr_edge.audit.log import AuditError
from lfr_edge.vision.pipeline import FacePipeline
from lfr_hwsim.broker import COMMAND_CENTRE, Collector
from lfr_hwsim.camera import write_control
from lfr_hwsim.facelocate import default_locator
from lfr_hwsim.plan import PlanRequest, ScenePlan, build_plan
from lfr_hwsim.van import STREET_FALSE_ALERTS, SimulatedVan, Subject
from lfr_tools.audit.report import read_events
from lfr_tools.command_centre.enrol import PipelineEnroller
from lfr_tools.handset.cli import ReceivedAlert

pytestmark = [pytest.mark.slow, pytest.mark.broker]

BIN = Path(sys.executable).parent  # the console scripts of this installation: lfr-edge, lfr-watchlist
KINDS = (DecisionKind.ENGAGE, DecisionKind.FALSE_ALERT, DecisionKind.NO_ACTION)  # the officer's answers, in turn
STALL_S, UNPLUG_S = 5.0, 3.0


def command(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    tool = BIN / name
    assert tool.is_file(), f"{tool} is missing: install the project (pip install -e .)"
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=60, check=False)


def street(faces: Path) -> tuple[ScenePlan, float]:
    """Two watchlisted walkers early in the scene; the time by which both have gone (scene seconds)."""
    plan = build_plan(
        PlanRequest(faces / "wild", seed=5, fps=10.0, duration_s=60.0, watchlisted=2, crowd=1.0), default_locator()
    )
    enter = dict(zip(plan.watchlisted, (2.0, 6.0), strict=True))
    walkers = tuple(
        dataclasses.replace(w, t_enter=enter[w.identity]) if w.identity in enter else w for w in plan.walkers
    )
    gone = max(w.t_enter + w.duration_s for w in walkers if w.identity in enter)
    return dataclasses.replace(plan, walkers=walkers, duration_s=gone + 30.0), gone


def wait_for_events(log: Path, done: Callable[[list[AuditEvent]], bool], timeout_s: float, what: str) -> None:
    """Read the unit's log until `done` holds (a line being written at that moment is read next time)."""
    deadline = time.monotonic() + timeout_s
    events: list[AuditEvent] = []
    while time.monotonic() < deadline:
        try:
            events = read_events(log)
        except AuditError:
            events = []
        if done(events):
            return
        time.sleep(0.2)
    raise AssertionError(f"the unit's audit log shows no {what} within {timeout_s} s: {[e.name for e in events]}")


def latest_telemetry(watch: Collector, topic: str) -> Telemetry | None:
    latest = None
    while True:
        try:
            message = watch.next(timeout=0.2)
        except queue.Empty:
            return latest
        if message.topic == topic:
            latest = decode_telemetry(message.payload)


def test_the_deployment_report_says_what_happened_on_a_real_simulated_deployment(
    faces: Path, pipeline: FacePipeline, tmp_path: Path
) -> None:
    plan, walkers_gone = street(faces)
    plan_file = tmp_path / "plan.json"
    plan.save(plan_file)
    with SimulatedVan(tmp_path / "van", unit_id="van-01") as van:
        assert van.beacon is not None
        subjects = [Subject(i, "wanted", tuple(plan.enrolment_photos(i)[:3])) for i in plan.watchlisted]
        published = van.build_watchlist(subjects, PipelineEnroller(pipeline), threshold=STREET_FALSE_ALERTS)
        van.publish_watchlist(published, wait_ack_s=None)  # retained: applied when the unit connects
        header = bundle.read_envelope(published, len(published)).header
        camera = {
            "name": "cam0",
            "source": "simulator",
            "width": plan.width,
            "height": plan.height,
            "fps": plan.fps,
            "options": {"plan_file": str(plan_file), "control_file": str(van.camera_control_file)},
        }
        config = van.write_config([camera], daemon={"telemetry_interval_s": 1.0})
        audit_log = van.paths.state / "audit.jsonl"
        phone = van.handset()
        watch = Collector(van.broker, COMMAND_CENTRE)
        watch.subscribe(van.topics.telemetry)
        watching = True
        daemon = van.start_daemon(config)
        received: list[ReceivedAlert] = []
        decided: collections.Counter[str] = collections.Counter()
        try:
            daemon.wait_for("READY", timeout=90)
            ready = time.monotonic()
            # the walkers pass; the officer answers every alert the handset receives
            while time.monotonic() - ready < walkers_gone + 3.0:
                try:
                    got = phone.alerts.get(timeout=0.5)
                except queue.Empty:
                    continue
                kind = KINDS[len(received) % len(KINDS)]
                received.append(got)
                phone.decide(got.alert.alert_id, kind)
                decided[kind.value] += 1
            assert received, f"no alert reached the handset:\n{daemon.log_tail()}"
            wait_for_events(
                audit_log,
                lambda events: sum(isinstance(e, OfficerDecision) for e in events) == len(received),
                20,
                f"{len(received)} decisions",
            )
            # two faults at once, on two parts: the camera stalls, the beacon is unplugged and plugged back
            write_control(van.camera_control_file, "stall")
            van.beacon.unplug()
            time.sleep(UNPLUG_S)
            van.beacon.replug()
            time.sleep(STALL_S - UNPLUG_S)
            write_control(van.camera_control_file, "ok")
            wait_for_events(
                audit_log, lambda events: sum(isinstance(e, FaultCleared) for e in events) == 2, 30, "2 faults cleared"
            )
            seen_by_telemetry = latest_telemetry(watch, van.topics.telemetry)
            # The broker binds a client id to its certificate: the command centre's tool takes this identity's
            # one connection, so the watcher gives it up first (two would knock each other off).
            watch.close()
            watching = False
            # the command centre closes the deployment with its own tool
            sign_key = tmp_path / "command-centre.key"
            keyfiles.save_private_key(sign_key, van.command_centre_key)
            tls = van.broker.client(COMMAND_CENTRE)
            closed = command(
                "lfr-watchlist", "close", "--deployment", header["deployment"], "--unit", van.unit_id,
                "--sign-key", str(sign_key), "--broker", f"{van.broker.host}:{van.broker.port}",
                "--ca", str(tls.ca_file), "--cert", str(tls.cert_file), "--key", str(tls.key_file),
                "--prefix", van.broker.prefix, "--wait-ack", "--timeout", "30",
            )  # fmt: skip
            assert closed.returncode == 0 and '"status": "closed"' in closed.stdout, closed.stdout + closed.stderr
            assert daemon.terminate(timeout=10) == 0
            while True:  # an alert the handset got after the walkers had gone is counted, undecided
                try:
                    received.append(phone.alerts.get(timeout=1.0))
                except queue.Empty:
                    break
        finally:
            if watching:
                watch.close()
        beacon_port = str(van.beacon.link)

    verified = command("lfr-audit", "verify", str(audit_log))
    assert verified.returncode == 0 and "chain intact" in verified.stdout, verified.stdout + verified.stderr
    text = command("lfr-audit", "report", str(audit_log))
    print(f"\nlfr-audit report {audit_log.name}:\n{text.stdout}")
    assert text.returncode == 0, text.stdout + text.stderr
    as_json = command("lfr-audit", "report", str(audit_log), "--json")
    assert as_json.returncode == 0, as_json.stderr
    report: dict[str, Any] = json.loads(as_json.stdout)

    assert report["ok"] and report["unreadable"] == [] and report["units"] == ["van-01"]
    # the watchlist: the one the command centre built, applied once and ended by its close
    assert report["deployments"] == [header["deployment"]]
    [held] = report["watchlists"]
    assert (held["deployment"], held["version"], held["subjects"]) == (
        header["deployment"],
        header["version"],
        len(subjects),
    )
    assert (held["valid_from"], held["valid_until"]) == (header["valid_from"], header["valid_until"])
    assert held["ended_by"] == "closed" and held["applied_at"] < held["ended_at"]
    assert (report["watchlists_applied"], report["watchlists_closed"], report["watchlists_expired"]) == (1, 1, 0)
    assert (report["watchlists_replaced"], report["watchlists_wiped_at_shutdown"]) == (0, 0)
    assert report["watchlists_refused"] == {}
    # faces, alerts and decisions: what the unit counted, what the handset got, what the officer sent
    assert seen_by_telemetry is not None and seen_by_telemetry.faces_seen > 0
    assert report["faces_seen"] >= seen_by_telemetry.faces_seen and set(report["faces_seen_by_camera"]) == {"cam0"}
    assert report["alerts"] == len({r.alert.alert_id for r in received}) == len(received)
    assert report["decisions"] == {kind.value: decided[kind.value] for kind in DecisionKind}
    assert report["alerts_without_decision"] == len(received) - sum(decided.values())
    assert report["decisions_refused"] == 0
    # the two faults: one episode each, both cleared, nothing else
    faults = [(f["component"], f["source"], f["problem"]) for f in report["faults"]]
    assert sorted(faults) == [("beacon", beacon_port, "disconnected"), ("camera", "cam0", "stalled")]
    assert all(f["lasted_s"] is not None and 0 < f["lasted_s"] <= STALL_S + 1 for f in report["faults"])
    # and the table says the same
    assert f"deployment(s):      {header['deployment']}" in text.stdout
    assert f"{len(subjects)} subjects, valid {header['valid_from']} .. {header['valid_until']}" in text.stdout
    assert "watchlists:         applied 1, closed 1, expired 0, refused 0" in text.stdout
    assert f"alerts:             {len(received)}" in text.stdout and "faults:             2" in text.stdout
