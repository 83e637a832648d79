"""No thread dies silently: the supervisor, and each long-lived thread of the daemon run under it.

A failing loop is logged once with its traceback, counted (for telemetry), restarted, and down once it keeps
failing; the watchdog then stops petting systemd. The real capture thread, MQTT dispatcher (real broker)
and beacon driver (real pty) each meet an unexpected exception and carry on.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import cv2
import numpy as np
import pytest

from lfr_contracts.beacon import Pattern
from lfr_contracts.camera import CameraConfig, Frame, SourceStats
from lfr_contracts.telemetry import ThreadHealth
from lfr_edge.alerts.beacon import BeaconDriver
from lfr_edge.camera.replay import ReplaySource
from lfr_edge.comms.mqtt import UnitMqttClient
from lfr_edge.config import BeaconConfig
from lfr_edge.daemon.frames import CaptureThread, NewestFrames
from lfr_edge.daemon.notify import Notifier, Watchdog
from lfr_edge.daemon.supervise import NEVER, Restart, Supervisor
from lfr_hwsim.beacon import SimulatedBeacon
from lfr_hwsim.broker import MosquittoBroker
from mqtt_fixtures import Collector, unit_mqtt_config

QUICK = Restart(attempts=2, within_s=60.0, backoff_s=0.01, max_backoff_s=0.02)
WAIT_S = 10.0  # an upper bound for an awaited event; the tests go on as soon as it happens


def wait_until(condition: object, timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.01)
    return False


def tracebacks(caplog: pytest.LogCaptureFixture, thread: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and f"thread {thread}" in r.getMessage()]


def test_a_failing_loop_is_logged_once_with_its_traceback_counted_restarted_then_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor()
    runs: list[int] = []

    def loop() -> None:
        runs.append(1)
        raise ZeroDivisionError("a bug")

    with caplog.at_level(logging.INFO, logger="lfr_edge.daemon.supervise"):
        thread = supervisor.start("expiry", loop, restart=QUICK)
        thread.join(WAIT_S)
    assert not thread.is_alive() and len(runs) == 3  # the first run and two restarts, then it is down
    assert supervisor.health() == ThreadHealth(failures={"expiry": 3}, down=("expiry",))
    reason = supervisor.down_reason()
    assert reason is not None and "expiry" in reason and "ZeroDivisionError: a bug" in reason
    logged = tracebacks(caplog, "expiry")
    assert len(logged) == 1 and "restarting" in logged[0].getMessage()  # the same failure: one traceback
    assert any("is down" in r.getMessage() for r in caplog.records)


def test_a_loop_that_recovers_is_counted_but_stays_up_and_a_normal_return_ends_it() -> None:
    supervisor = Supervisor()
    runs: list[int] = []

    def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise OSError("a passing problem")

    thread = supervisor.start("telemetry", loop, restart=QUICK)
    thread.join(WAIT_S)
    assert len(runs) == 2 and supervisor.health() == ThreadHealth({"telemetry": 1}, ())
    assert supervisor.down_reason() is None


def test_a_stop_during_the_backoff_ends_the_thread_without_another_run() -> None:
    supervisor, stop, runs = Supervisor(), threading.Event(), []

    def loop() -> None:
        runs.append(1)
        stop.set()
        raise RuntimeError("failed while stopping")

    thread = supervisor.start("capture", loop, restart=Restart(backoff_s=30.0), stop=stop)
    thread.join(WAIT_S)
    assert not thread.is_alive() and len(runs) == 1


def test_a_thread_nobody_supervises_is_down_when_it_dies(caplog: pytest.LogCaptureFixture) -> None:
    """paho's network thread is not ours to restart: the hook counts it and the unit restarts."""
    supervisor = Supervisor()
    previous = threading.excepthook
    supervisor.install_excepthook()
    try:

        def network_loop() -> None:
            raise ValueError("inside a library's thread")

        thread = threading.Thread(target=network_loop, name="paho-mqtt-client-x")
        thread.start()
        thread.join(WAIT_S)
    finally:
        threading.excepthook = previous
    assert supervisor.health().down == ("paho-mqtt-client-x",)
    assert len(tracebacks(caplog, "paho-mqtt-client-x")) == 1


@pytest.fixture
def systemd_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(5.0)
    yield sock, path
    sock.close()


def test_the_watchdog_stops_petting_systemd_once_a_thread_is_down(systemd_socket: tuple[socket.socket, str]) -> None:
    sock, path = systemd_socket
    supervisor = Supervisor()
    with closing(Notifier({"NOTIFY_SOCKET": path})) as notifier:
        watchdog = Watchdog(notifier, interval_s=1.0, stall_s=60.0, unhealthy=supervisor.down_reason)
        assert watchdog.tick() and sock.recv(4096) == b"WATCHDOG=1"

        def expiry() -> None:
            raise ZeroDivisionError("a bug")

        supervisor.start("watchlist-expiry", expiry, restart=NEVER).join(WAIT_S)
        watchdog.progress()  # frames still flow: the pipeline is fine, but a thread is down
        assert not watchdog.tick()
        status = sock.recv(4096).decode()
        assert status.startswith("STATUS=restart needed: thread down: watchlist-expiry")
        assert not watchdog.tick() and watchdog.pets == 1
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(4096)  # no WATCHDOG=1 and no second STATUS: systemd restarts the unit


class BuggySource:
    """A real replay camera whose plugin has a bug: its third read raises something that is no CameraError."""

    def __init__(self, folder: Path) -> None:
        self.inner = ReplaySource(
            CameraConfig(name="cam0", source="replay", uri=str(folder), fps=50.0, options={"loop": True})
        )
        self.name, self.stats = "cam0", SourceStats()
        self.reads, self.opens, self.closes = 0, 0, 0

    def open(self) -> None:
        self.opens += 1
        self.inner.open()

    def read(self) -> Frame:
        self.reads += 1
        if self.reads == 3:
            raise KeyError("the plugin's own bug")
        return self.inner.read()

    def close(self) -> None:
        self.closes += 1
        self.inner.close()

    def describe(self) -> str:
        return "buggy replay"


def test_a_camera_source_with_a_bug_is_closed_and_reopened_and_frames_go_on(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    source, frames, stop, supervisor = BuggySource(folder), NewestFrames(), threading.Event(), Supervisor()
    capture = CaptureThread(source, frames, stop, supervisor=supervisor)
    capture.start()
    try:
        got: list[Frame] = []
        while len(got) + frames.skipped["cam0"] < 4 and (taken := frames.take(timeout=WAIT_S)):
            got += taken
        assert len(got) + frames.skipped["cam0"] >= 4  # two before the bug, two after the reopen (taken or skipped)
        assert source.opens == 2 and source.closes >= 1
        assert supervisor.health() == ThreadHealth({"capture-cam0": 1}, ())
    finally:
        stop.set()
        capture.join(WAIT_S)
    assert capture.state == "stopped"


def test_an_mqtt_handler_that_raises_is_counted_and_the_next_message_is_handled(
    broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    supervisor = Supervisor()
    unit = UnitMqttClient("unit-a", unit_mqtt_config(broker, "unit-a"), supervisor=supervisor)
    handled: queue.Queue[bytes] = queue.Queue()

    def handler(topic: str, payload: bytes) -> None:
        if payload.startswith(b"bad"):
            raise IndexError("a handler bug")
        handled.put(payload)

    decisions = unit.topics.every_sender(unit.topics.decisions)
    unit.subscribe(decisions, handler, max_bytes=4096)
    unit.start()
    handset = Collector(broker, "handset-1")
    try:
        assert unit.connected.wait(WAIT_S)
        for payload in (b"bad 1", b"bad 2", b"good"):
            handset.publish(unit.topics.decision_from("handset-1"), payload)
        assert handled.get(timeout=WAIT_S) == b"good"
        assert unit.subscription_stats()[decisions].handler_errors == 2
        assert supervisor.health() == ThreadHealth({"mqtt-decisions": 2}, ())
        assert len(tracebacks(caplog, "mqtt-decisions")) == 1
    finally:
        handset.close()
        unit.stop()


def test_the_beacon_driver_comes_back_from_a_bug_and_shows_the_wanted_pattern_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = SimulatedBeacon(tmp_path / "lfr-beacon")
    sim.start()
    supervisor = Supervisor()
    cfg = BeaconConfig(
        port=str(sim.link), heartbeat_s=0.15, ack_timeout_s=0.1, retries=2, watchdog_beats=3,
        reconnect_min_s=0.01, reconnect_max_s=0.1,
    )  # fmt: skip
    driver = BeaconDriver(cfg, supervisor=supervisor)
    real_step, steps = driver._step, []

    def step_with_a_bug() -> None:
        steps.append(1)
        if len(steps) == 3:
            raise AttributeError("a bug in the driver")
        real_step()

    monkeypatch.setattr(driver, "_step", step_with_a_bug)
    driver.start()
    try:
        assert wait_until(lambda: supervisor.health().failures == {"beacon": 1})
        driver.show_fault("camera cam0 stalled")
        assert wait_until(lambda: driver.state().pattern_acked is Pattern.FAULT)
        assert driver.state().reconnects >= 1 and supervisor.down_reason() is None
    finally:
        driver.close(park=True)
        sim.stop()
