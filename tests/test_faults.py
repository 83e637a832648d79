"""The van under faults: the real `lfr-edge run` on the simulator's street, with ground truth.

Three runs, each a real daemon process against a real broker, pty beacon and handset: a clean scene (every
watchlisted walker alerted exactly once, nobody else), a run with infrastructure faults (broker restart
over a watchlisted walker, camera stall, camera disconnect, beacon unplug) and a run with watchlist and
handset faults (corrupted and replayed bundles, handset offline over a walker, validity window ending
before a walker). Each fault has its own test reading the run's record: the daemon stayed up, recovered
when the fault cleared, lost no alert that was due and logged the fault once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lfr_contracts.audit_events import (
    AlertRaised,
    AuditEvent,
    Fault,
    FaultCleared,
    FaultComponent,
    FaultProblem,
    WatchlistRefused,
    WatchlistWiped,
    WipeReason,
)
from lfr_contracts.beacon import Pattern
from lfr_contracts.telemetry import CameraState, Telemetry, decode_telemetry
from lfr_edge.vision.pipeline import FacePipeline
from lfr_hwsim.beacon import LampState
from lfr_hwsim.broker import COMMAND_CENTRE, Collector
from lfr_hwsim.demo import usable_watchlisted
from lfr_hwsim.facelocate import default_locator
from lfr_hwsim.faults import FaultEvent, FaultInjector, FaultScriptError, corrupt, parse_script
from lfr_hwsim.plan import PlanRequest, ScenePlan, Walker, build_plan
from lfr_hwsim.van import STREET_FALSE_ALERTS, SimulatedVan, Subject
from lfr_tools.audit.report import read_events
from lfr_tools.command_centre.enrol import PipelineEnroller
from lfr_tools.handset.cli import ReceivedAlert

ALERT_HOLD_S = 40.0  # the beacon keeps the alert pattern for the whole faults run


# the script --------------------------------------------------------------------------------------------


def test_a_script_becomes_timed_faults_in_order_with_default_durations() -> None:
    faults = parse_script(" 15:camera-stall=3, 8:broker-restart, 30:watchlist-corrupt,, 40:watchlist-expire=5 ")
    assert [(f.at_s, f.kind, f.duration_s) for f in faults] == [
        (8.0, "broker-restart", 3.0),
        (15.0, "camera-stall", 3.0),
        (30.0, "watchlist-corrupt", None),
        (40.0, "watchlist-expire", 5.0),
    ]
    assert str(faults[0]) == "8:broker-restart=3" and faults[0].clears_at_s == 11.0
    assert parse_script("") == ()


@pytest.mark.parametrize(
    ("script", "complaint"),
    [
        ("8:broker-explode=3", "unknown kind 'broker-explode'"),
        ("soon:camera-stall", "time 'soon' is not a number"),
        ("-2:camera-stall", "must be a finite number of seconds >= 0"),
        ("inf:camera-stall", "must be a finite number"),
        ("camera-stall", "expected TIME:KIND"),
        ("3:watchlist-corrupt=2", "watchlist-corrupt is instant and takes no duration"),
        ("3:camera-stall=0", "duration must be more than 0"),
        ("3:camera-stall=x", "duration 'x' is not a number"),
        ("3:camera-stall=5, 6:camera-disconnect=1", "starts before 3:camera-stall=5 has cleared"),
    ],
)
def test_a_bad_script_is_refused_naming_the_item(script: str, complaint: str) -> None:
    with pytest.raises(FaultScriptError, match=complaint.replace("(", r"\(")):
        parse_script(script)


def test_a_corrupted_message_differs_inside_and_keeps_its_length() -> None:
    original = bytes(range(256)) * 4
    damaged = corrupt(original)
    assert len(damaged) == len(original) and damaged[:8] == original[:8]
    assert sum(a != b for a, b in zip(original, damaged, strict=True)) == 3


# running the van ---------------------------------------------------------------------------------------


@dataclass
class Received:
    wall: float
    body: Telemetry


@dataclass
class Run:
    """Everything observed from outside the unit during one run."""

    plan: ScenePlan
    alerts: list[ReceivedAlert] = field(default_factory=list)
    telemetry: list[Received] = field(default_factory=list)
    lamp: list[tuple[float, Pattern, bool]] = field(default_factory=list)  # wall time, pattern, plugged
    acks: list[dict[str, Any]] = field(default_factory=list)
    events: list[FaultEvent] = field(default_factory=list)
    notify: list[tuple[float, dict[str, str]]] = field(default_factory=list)  # wall time, message
    ready_wall: float = 0.0
    ended_wall: float = 0.0
    log: str = ""
    audit: list[AuditEvent] = field(default_factory=list)
    exit_code: int | None = None
    version_before_faults: int | None = None
    broker_address: str = ""
    beacon_port: str = ""

    def event(self, kind: str, action: str) -> FaultEvent:
        found = [e for e in self.events if e.kind == kind and e.action == action]
        assert len(found) == 1, f"{kind} {action}: {self.events}"
        return found[0]

    def log_lines(self, text: str) -> list[str]:
        return [line for line in self.log.splitlines() if text in line]

    def fault_episodes(self) -> list[tuple[FaultComponent, str, FaultProblem, bool]]:
        """(component, source, problem, cleared) of every fault the unit audited, in order."""
        cleared = {(e.component, e.source, e.problem) for e in self.audit if isinstance(e, FaultCleared)}
        return [
            (e.component, e.source, e.problem, (e.component, e.source, e.problem) in cleared)
            for e in self.audit
            if isinstance(e, Fault)
        ]

    def alerts_for(self, identity: str) -> list[ReceivedAlert]:
        return [a for a in self.alerts if a.alert.subject_id == identity]

    def telemetry_between(self, start: float, end: float) -> list[Telemetry]:
        return [t.body for t in self.telemetry if start <= t.wall <= end]

    def lamp_at(self, wall: float) -> Pattern:
        pattern = Pattern.OFF
        for at, p, _ in self.lamp:
            if at <= wall:
                pattern = p
        return pattern


class Watcher:
    """Background threads that record telemetry, watchlist acks and the beacon's lamp as they change."""

    def __init__(self, van: SimulatedVan, run: Run) -> None:
        self.van, self.run = van, run
        self.stop = threading.Event()
        self.scene_ended = threading.Event()  # the unit's telemetry says the camera's stream ended
        self.collector = Collector(van.broker, COMMAND_CENTRE)
        self.collector.subscribe(van.topics.telemetry)
        self.collector.subscribe(van.topics.watchlist_ack)
        self.threads = [
            threading.Thread(target=self._mqtt, daemon=True),
            threading.Thread(target=self._lamp, daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _mqtt(self) -> None:
        while not self.stop.is_set():
            try:
                message = self.collector.next(timeout=0.2)
            except queue.Empty:
                continue
            if message.topic == self.van.topics.telemetry:
                telemetry = decode_telemetry(message.payload)
                self.run.telemetry.append(Received(time.time(), telemetry))
                if telemetry.cameras.get("cam0") == CameraState.ENDED:
                    self.scene_ended.set()
            else:
                self.run.acks.append(json.loads(message.payload))

    def _lamp(self) -> None:
        beacon = self.van.beacon
        assert beacon is not None
        last: tuple[Pattern, bool] | None = None
        while not self.stop.is_set():
            state = beacon.state
            if (state.pattern, state.plugged) != last:
                last = (state.pattern, state.plugged)
                self.run.lamp.append((time.time(), state.pattern, state.plugged))
            beacon.wait_until(functools.partial(_changed, last), 0.2)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        self.collector.close()


def _changed(seen: tuple[Pattern, bool], state: LampState) -> bool:
    return (state.pattern, state.plugged) != seen


def street(faces: Path, seed: int, duration_s: float, watchlisted: int, crowd: float) -> ScenePlan:
    request = PlanRequest(faces / "wild", seed=seed, duration_s=duration_s, watchlisted=watchlisted, crowd=crowd)
    return build_plan(request, default_locator())


def walk_at(plan: ScenePlan, times: dict[str, float]) -> ScenePlan:
    """The same scene with the given watchlisted identities entering at the given times."""
    walkers = tuple(
        dataclasses.replace(w, t_enter=times[w.identity]) if w.identity in times else w for w in plan.walkers
    )
    return dataclasses.replace(plan, walkers=walkers)


def watchlisted_walker(plan: ScenePlan, n: int) -> Walker:
    return [w for w in plan.walkers if w.identity in plan.watchlisted][n]


def run_van(
    tmp: Path,
    plan: ScenePlan,
    pipeline: FacePipeline,
    script: str,
    earlier_version: bool = False,
) -> Run:
    """Provision a van, publish the watchlist, run the daemon over the scene with the faults, stop it."""
    run = Run(plan)
    plan_file = tmp / "plan.json"
    plan.save(plan_file)
    with SimulatedVan(tmp / "van") as van:
        run.broker_address = f"{van.broker.host}:{van.broker.port}"
        run.beacon_port = str(van.beacon.link) if van.beacon is not None else ""
        subjects = [Subject(i, "wanted", tuple(plan.enrolment_photos(i)[:3])) for i in plan.watchlisted]
        bundle = van.build_watchlist(subjects, PipelineEnroller(pipeline), threshold=STREET_FALSE_ALERTS)
        if earlier_version:
            bundle = van.reissue_watchlist()
        van.publish_watchlist(bundle, wait_ack_s=None)
        camera = {
            "name": "cam0",
            "source": "simulator",
            "width": plan.width,
            "height": plan.height,
            "fps": plan.fps,
            "options": {"plan_file": str(plan_file), "realtime": True, "control_file": str(van.camera_control_file)},
        }
        config = van.write_config([camera], daemon={"telemetry_interval_s": 0.5}, beacon={"alert_hold_s": ALERT_HOLD_S})
        phone = van.handset()
        watcher = Watcher(van, run)
        daemon = van.start_daemon(config)
        injector = None
        try:
            daemon.wait_for("READY", timeout=60)
            run.ready_wall = time.time()
            injector = FaultInjector(van, script, handset=phone).start()
            run.version_before_faults = van.watchlist_version
            # The scene ends by itself (end of stream); wait for the unit to say so in its telemetry.
            deadline = time.monotonic() + plan.duration_s + 30
            while not watcher.scene_ended.wait(0.5):
                assert time.monotonic() < deadline, f"the scene did not end:\n{daemon.log_tail()}"
                assert daemon.proc.poll() is None, f"lfr-edge run exited:\n{daemon.log_tail()}"
            run.ended_wall = time.time()
            assert injector.wait_done(30), "the fault script did not finish"
            # Every alert the unit raised reaches the handset (the unit's own count, in its telemetry).
            raised = run.telemetry[-1].body.alerts
            deadline = time.monotonic() + 15
            while len(run.alerts) < raised and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    run.alerts.append(phone.alerts.get(timeout=0.5))
            with pytest.raises(queue.Empty):
                run.alerts.append(phone.alerts.get(timeout=1.0))  # and nothing more, no duplicates
        finally:
            if injector is not None:
                injector.stop()
                run.events = injector.events
            run.exit_code = daemon.terminate(timeout=10)
            watcher.close()
            started_mono, started_wall = time.monotonic(), time.time()
            run.notify = [
                (started_wall - (started_mono - t), m)
                for t, m in zip(daemon.message_times, daemon.messages, strict=True)
            ]
            run.log = daemon.log_path.read_text(errors="replace")
            run.audit = read_events(van.paths.state / "audit.jsonl")
    return run


# a clean street ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_run(faces: Path, pipeline: FacePipeline, tmp_path_factory: pytest.TempPathFactory) -> Run:
    plan = street(faces, seed=11, duration_s=22.0, watchlisted=3, crowd=2.0)
    return run_van(tmp_path_factory.mktemp("clean"), plan, pipeline, "")


@pytest.mark.slow
@pytest.mark.broker
def test_every_usable_watchlisted_walker_is_alerted_once_and_nobody_else(clean_run: Run) -> None:
    windows = usable_watchlisted(clean_run.plan, clean_run.plan.duration_s)
    assert windows, "the scene must have watchlisted walkers to find"
    alerted = sorted(a.alert.subject_id for a in clean_run.alerts)
    assert alerted == sorted(windows), f"alerted {alerted}, due {sorted(windows)}"
    # The beacon follows: it shows the alert pattern just after each alert.
    for a in clean_run.alerts:
        assert clean_run.lamp_at(a.alert.time + 1.0) == Pattern.ALERT, (a.alert.subject_id, clean_run.lamp)
    # Idle green once the list is held; the no-watchlist pattern, if shown at all, only before it was applied.
    first_alert = min(a.alert.time for a in clean_run.alerts)
    shown = [p for at, p, _ in clean_run.lamp if clean_run.ready_wall - 1 <= at < first_alert]
    assert shown and shown[-1] == Pattern.IDLE, clean_run.lamp
    assert_stayed_up(clean_run)
    assert clean_run.fault_episodes() == [], "a clean street must not audit a fault"


def assert_stayed_up(run: Run) -> None:
    """READY once, WATCHDOG every second while the scene ran, a clean exit on SIGTERM."""
    assert sum("READY" in m for _, m in run.notify) == 1
    pets = [t for t, m in run.notify if "WATCHDOG" in m and run.ready_wall <= t <= run.ended_wall]
    gaps = [b - a for a, b in zip([run.ready_wall, *pets], [*pets, run.ended_wall], strict=True)]
    assert max(gaps) < 2.0, f"the watchdog stopped being petted for {max(gaps):.1f} s"
    assert run.exit_code == 0
    assert "Traceback" not in run.log


# infrastructure faults ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def infra_run(faces: Path, pipeline: FacePipeline, tmp_path_factory: pytest.TempPathFactory) -> Run:
    plan = street(faces, seed=5, duration_s=30.0, watchlisted=1, crowd=1.5)
    identity = plan.watchlisted[0]
    plan = walk_at(plan, {identity: 6.0})
    walker_end = 6.0 + watchlisted_walker(plan, 0).duration_s
    broker_up = walker_end + 2.0  # the broker is down from before the walker enters until after it left
    stall = broker_up + 2.0
    script = (
        f"4:broker-restart={broker_up - 4:.1f}, {stall:.1f}:camera-stall=3, {stall:.1f}:beacon-unplug=2, "
        f"{stall + 5:.1f}:camera-disconnect=3"
    )
    assert stall + 8 + 4 < plan.duration_s, "the scene must outlast the faults and the recoveries"
    return run_van(tmp_path_factory.mktemp("infra"), plan, pipeline, script)


@pytest.mark.slow
@pytest.mark.broker
def test_infrastructure_faults_leave_the_daemon_up(infra_run: Run) -> None:
    assert_stayed_up(infra_run)
    assert not [e for e in infra_run.events if e.action == "error"]


@pytest.mark.slow
@pytest.mark.broker
def test_each_infrastructure_fault_is_audited_once_and_its_end_too(infra_run: Run) -> None:
    """One fault episode per injected fault, however many frames or polls it lasted, each one cleared."""
    assert sorted(infra_run.fault_episodes()) == sorted(
        [
            (FaultComponent.BROKER, infra_run.broker_address, FaultProblem.DISCONNECTED, True),
            (FaultComponent.CAMERA, "cam0", FaultProblem.STALLED, True),
            (FaultComponent.BEACON, infra_run.beacon_port, FaultProblem.DISCONNECTED, True),
            (FaultComponent.CAMERA, "cam0", FaultProblem.DISCONNECTED, True),
        ]
    )


@pytest.mark.slow
@pytest.mark.broker
def test_an_alert_raised_while_the_broker_is_down_reaches_the_handset_after_the_restart(infra_run: Run) -> None:
    down, up = infra_run.event("broker-restart", "inject"), infra_run.event("broker-restart", "clear")
    identity = infra_run.plan.watchlisted[0]
    alerts = infra_run.alerts_for(identity)
    assert len(alerts) == 1, infra_run.alerts
    got = alerts[0]
    assert down.wall_time < got.alert.time < up.wall_time, "the alert must have been raised during the outage"
    assert got.received_at > up.wall_time
    # logged once, and the unit is back: a new connection, telemetry flowing again with frames increasing
    assert len(infra_run.log_lines("mqtt: disconnected")) == 1
    assert len(infra_run.log_lines("mqtt: connected")) == 2
    after = infra_run.telemetry_between(up.wall_time, up.wall_time + 5)
    assert len(after) >= 2 and after[-1].frames > after[0].frames
    # the retained watchlist comes back with the broker: not mistaken for a replay
    assert not infra_run.log_lines("watchlist: refused")
    assert not [e for e in infra_run.audit if isinstance(e, WatchlistRefused)]


@pytest.mark.slow
@pytest.mark.broker
def test_a_stalled_camera_is_logged_once_and_frames_resume(infra_run: Run) -> None:
    stalled, cleared = infra_run.event("camera-stall", "inject"), infra_run.event("camera-stall", "clear")
    assert len(infra_run.log_lines("camera cam0 stalled")) == 1
    assert len(infra_run.log_lines("camera cam0: frames again")) == 1
    during = infra_run.telemetry_between(stalled.wall_time + 2.5, cleared.wall_time)
    assert during and all(t.cameras["cam0"] == CameraState.STALLED for t in during)
    assert len({t.frames for t in during}) == 1, "no frame while stalled"
    next_fault = infra_run.event("camera-disconnect", "inject")
    after = infra_run.telemetry_between(cleared.wall_time + 0.5, next_fault.wall_time)
    assert after and after[-1].frames > during[-1].frames and after[-1].cameras["cam0"] == CameraState.STREAMING


@pytest.mark.slow
@pytest.mark.broker
def test_a_disconnected_camera_is_logged_once_and_reconnects(infra_run: Run) -> None:
    lost, back = infra_run.event("camera-disconnect", "inject"), infra_run.event("camera-disconnect", "clear")
    assert len(infra_run.log_lines("camera cam0 lost")) == 1
    assert len(infra_run.log_lines("camera cam0 streaming")) == 2  # at start and after the reconnect
    during = infra_run.telemetry_between(lost.wall_time + 0.5, back.wall_time)
    assert during and all(t.cameras["cam0"] == CameraState.RECONNECTING for t in during)
    after = infra_run.telemetry_between(back.wall_time, back.wall_time + 6)
    streaming = [t for t in after if t.cameras["cam0"] == CameraState.STREAMING]
    assert len(streaming) >= 2 and streaming[-1].frames > during[-1].frames


@pytest.mark.slow
@pytest.mark.broker
def test_an_unplugged_beacon_is_logged_once_and_shows_the_current_alert_after_replug(infra_run: Run) -> None:
    unplugged, replugged = infra_run.event("beacon-unplug", "inject"), infra_run.event("beacon-unplug", "clear")
    assert len(infra_run.log_lines("beacon: serial port error")) == 1
    assert not infra_run.log_lines("beacon: cannot open")
    assert len(infra_run.log_lines("beacon: reopened")) == 1
    # The walker's alert is still being held (alert_hold_s): the replugged lamp comes back showing it.
    assert infra_run.lamp_at(unplugged.wall_time - 0.1) == Pattern.ALERT
    back = [(t, p) for t, p, plugged in infra_run.lamp if t > replugged.wall_time and plugged and p != Pattern.OFF]
    assert back and back[0][1] == Pattern.ALERT and back[0][0] - replugged.wall_time < 3.0
    later = infra_run.telemetry_between(back[0][0] + 1, back[0][0] + 5)
    link = later[-1].beacon if later else None
    assert link is not None and link.connected and link.responsive


# watchlist and handset faults --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def watchlist_run(faces: Path, pipeline: FacePipeline, tmp_path_factory: pytest.TempPathFactory) -> Run:
    plan = street(faces, seed=3, duration_s=30.0, watchlisted=2, crowd=1.5)
    first, second = plan.watchlisted
    plan = walk_at(plan, {first: 7.0})
    first_end = 7.0 + next(w.duration_s for w in plan.walkers if w.identity == first)
    online = first_end + 2.0  # the handset is offline from before the walker enters until after it left
    expire_at = online + 1.0  # a new version valid for 2 s more; the next walker comes after it ended
    plan = walk_at(plan, {first: 7.0, second: expire_at + 4.0})
    assert usable_watchlisted(plan, plan.duration_s).keys() == {first, second}
    script = (
        f"1.5:watchlist-corrupt, 3:watchlist-replay, 5:handset-offline={online - 5:.1f}, "
        f"{expire_at:.1f}:watchlist-expire=2"
    )
    return run_van(tmp_path_factory.mktemp("watchlist"), plan, pipeline, script, earlier_version=True)


@pytest.mark.slow
@pytest.mark.broker
def test_watchlist_and_handset_faults_leave_the_daemon_up(watchlist_run: Run) -> None:
    assert_stayed_up(watchlist_run)
    assert not [e for e in watchlist_run.events if e.action == "error"]


@pytest.mark.slow
@pytest.mark.broker
def test_a_corrupted_and_a_replayed_bundle_are_refused_once_each_and_the_held_list_stays(watchlist_run: Run) -> None:
    refusals = [a for a in watchlist_run.acks if a["status"] == "refused"]
    assert [a["reason"] for a in refusals][1:] == ["rollback"] and refusals[0]["reason"] in (
        "garbled",
        "bad_signature",
    ), refusals
    assert len(watchlist_run.log_lines("watchlist: refused a message")) == 2
    refused = [e for e in watchlist_run.audit if isinstance(e, WatchlistRefused)]
    assert [e.reason for e in refused] == [a["reason"] for a in refusals]
    # the held list did not change: the same version before and after, and it still finds its subject
    replayed = watchlist_run.event("watchlist-replay", "inject")
    held = {
        t.watchlist.version
        for t in watchlist_run.telemetry_between(watchlist_run.ready_wall, replayed.wall_time + 2)
        if t.watchlist.state == "active"
    }
    assert held == {watchlist_run.version_before_faults}
    assert len(watchlist_run.alerts_for(watchlist_run.plan.watchlisted[0])) == 1


@pytest.mark.slow
@pytest.mark.broker
def test_alerts_raised_while_the_handset_is_offline_arrive_when_it_reconnects(watchlist_run: Run) -> None:
    offline, online = watchlist_run.event("handset-offline", "inject"), watchlist_run.event("handset-offline", "clear")
    alerts = watchlist_run.alerts_for(watchlist_run.plan.watchlisted[0])
    assert len(alerts) == 1
    assert offline.wall_time < alerts[0].alert.time < online.wall_time, "raised while the handset was offline"
    assert alerts[0].received_at >= online.wall_time - 0.5
    assert len([e for e in watchlist_run.audit if isinstance(e, AlertRaised)]) == 1


@pytest.mark.slow
@pytest.mark.broker
def test_the_list_is_wiped_once_when_its_window_ends_and_nobody_is_alerted_after(watchlist_run: Run) -> None:
    ended = watchlist_run.event("watchlist-expire", "clear")
    wipes = watchlist_run.log_lines("watchlist: wiped")
    assert len(wipes) == 1 and "(expired)" in wipes[0]
    wiped = [e for e in watchlist_run.audit if isinstance(e, WatchlistWiped)]
    assert [e.reason for e in wiped] == [WipeReason.EXPIRED]
    after = watchlist_run.telemetry_between(ended.wall_time + 1.5, watchlist_run.ended_wall)
    assert after and all(t.watchlist.state == "expired" for t in after)
    # the second watchlisted walker passes after the wipe: no alert, no matter how well they match
    assert not watchlist_run.alerts_for(watchlist_run.plan.watchlisted[1])
    assert all(a.alert.time < ended.wall_time for a in watchlist_run.alerts)
