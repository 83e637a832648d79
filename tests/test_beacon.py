"""The beacon driver against the simulated beacon on a real pseudo-terminal, faults included."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial

from lfr_contracts import beacon as bp
from lfr_contracts.alerts import Alert
from lfr_contracts.beacon import Command, Frame, NakReason, Pattern
from lfr_contracts.errors import ConfigError
from lfr_edge.alerts.beacon import BeaconChannel, BeaconDriver, BeaconState
from lfr_edge.alerts.channel import UnitState
from lfr_edge.config import BeaconConfig, parse_config, quiet_hours
from lfr_hwsim.beacon import SimulatedBeacon

WAIT_S = 3.0  # upper bound for an awaited event; tests finish as soon as the event happens

DriverFactory = Callable[..., tuple[BeaconDriver, BeaconConfig]]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatedBeacon]:
    beacon = SimulatedBeacon(tmp_path / "lfr-beacon")
    beacon.start()
    yield beacon
    beacon.stop()


@pytest.fixture
def make_driver(sim: SimulatedBeacon) -> Iterator[DriverFactory]:
    drivers: list[BeaconDriver] = []

    def make(
        local_time: Callable[[], datetime.time] = lambda: datetime.time(12, 0), **overrides: Any
    ) -> tuple[BeaconDriver, BeaconConfig]:
        settings: dict[str, Any] = {
            "port": str(sim.link),
            "heartbeat_s": 0.15,
            "ack_timeout_s": 0.1,
            "retries": 2,
            "alert_hold_s": 0.4,
            "watchdog_beats": 3,
            "reconnect_min_s": 0.01,
            "reconnect_max_s": 0.1,
        }
        cfg = BeaconConfig(**(settings | overrides))
        driver = BeaconDriver(cfg, local_time=local_time)
        driver.start()
        drivers.append(driver)
        return driver, cfg

    yield make
    for driver in drivers:
        driver.close(park=False)


def eventually(driver: BeaconDriver, predicate: Callable[[BeaconState], bool]) -> bool:
    """Poll the driver's state (what telemetry and self-test read) until `predicate` holds, up to WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not predicate(driver.state()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def alert_on(camera: str) -> Alert:
    return Alert("a-1", "unit-a", camera, time.time(), 0.7, 0.5, "S-1", "wanted", "", b"\xff\xd8", b"\xff\xd8")


def ready(driver: BeaconDriver, pattern: Pattern = Pattern.IDLE) -> None:
    assert eventually(driver, lambda s: s.responsive and s.pattern_acked is pattern)


def times_executed(sim: SimulatedBeacon, command: Frame) -> int:
    return sum(1 for f in sim.executed() if (f.kind, f.args) == (command.kind, command.args))


def test_alert_shows_on_beacon_then_returns_to_idle_after_hold(
    sim: SimulatedBeacon, make_driver: DriverFactory
) -> None:
    driver, cfg = make_driver()
    ready(driver)
    shown_at = time.monotonic()
    driver.show_alert("cam0")
    assert sim.wait_for(Pattern.ALERT, WAIT_S)
    assert driver.state().alert_camera == "cam0"
    assert sim.wait_for(Pattern.IDLE, WAIT_S)
    assert time.monotonic() - shown_at >= cfg.alert_hold_s
    assert eventually(driver, lambda s: s.pattern_acked is Pattern.IDLE and s.alert_camera is None)


def test_alert_shows_over_a_fault_and_the_fault_returns_after_hold(
    sim: SimulatedBeacon, make_driver: DriverFactory
) -> None:
    driver, _ = make_driver(alert_hold_s=0.2)
    driver.show_fault("camera stalled")
    assert sim.wait_for(Pattern.FAULT, WAIT_S)
    driver.show_alert("cam1")
    assert sim.wait_for(Pattern.ALERT, WAIT_S)
    assert sim.wait_for(Pattern.FAULT, WAIT_S)
    assert driver.state().fault_reason == "camera stalled"
    assert not sim.state.watchdog_tripped
    driver.clear_fault()
    assert sim.wait_for(Pattern.IDLE, WAIT_S)


def test_the_beacon_channel_shows_each_alert_and_the_units_faults(
    sim: SimulatedBeacon, make_driver: DriverFactory
) -> None:
    driver, _ = make_driver(alert_hold_s=0.2)
    channel = BeaconChannel(driver)
    ready(driver)
    channel.show_state(UnitState(("camera cam0 disconnected", "camera cam1 stalled")))
    assert sim.wait_for(Pattern.FAULT, WAIT_S)
    assert driver.state().fault_reason == "camera cam0 disconnected; camera cam1 stalled"
    channel.deliver(alert_on("cam1"))
    assert sim.wait_for(Pattern.ALERT, WAIT_S)
    assert sim.wait_for(Pattern.FAULT, WAIT_S)  # the fault shows again once the alert's hold is over
    channel.show_state(UnitState())
    assert sim.wait_for(Pattern.IDLE, WAIT_S)
    assert driver.state().fault_reason is None


def test_a_fault_that_clears_during_an_alert_leaves_the_alert_its_hold(
    sim: SimulatedBeacon, make_driver: DriverFactory
) -> None:
    driver, _ = make_driver(alert_hold_s=30.0)
    channel = BeaconChannel(driver)
    ready(driver)
    channel.show_state(UnitState(("camera cam0 stalled",)))
    assert sim.wait_for(Pattern.FAULT, WAIT_S)
    channel.deliver(alert_on("cam0"))
    ready(driver, Pattern.ALERT)
    channel.show_state(UnitState())
    assert eventually(driver, lambda s: s.fault_reason is None)
    state = driver.state()
    assert (state.pattern_wanted, state.pattern_acked, state.alert_camera) == (Pattern.ALERT, Pattern.ALERT, "cam0")
    assert sim.state.pattern is Pattern.ALERT


def beeps_sent(sim: SimulatedBeacon) -> list[int]:
    """The durations of the BUZZER commands the simulated beacon carried out, in order."""
    return [bp.u16_arg(f) for f in sim.executed() if f.kind == Command.BUZZER]


def a_heartbeat_after_the_alert(sim: SimulatedBeacon) -> bool:
    """True once the beacon carried out a heartbeat after showing the alert: the driver sends a due beep
    before a heartbeat, so by then every beep that was due has been sent."""

    def seen() -> bool:
        kinds = [(f.kind, f.args) for f in sim.executed()]
        shown = [i for i, k in enumerate(kinds) if k == (Command.SET_PATTERN, bytes((Pattern.ALERT,)))]
        return bool(shown) and any(k[0] == Command.HEARTBEAT for k in kinds[shown[-1] :])

    deadline = time.monotonic() + WAIT_S
    while not seen():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def test_an_alert_sounds_the_buzzers_beeps_over_the_pty(sim: SimulatedBeacon, make_driver: DriverFactory) -> None:
    driver, _ = make_driver(buzzer_beeps=3, buzzer_beep_ms=40, buzzer_gap_ms=30)
    ready(driver)
    assert beeps_sent(sim) == [] and not sim.state.buzzer_on
    driver.show_alert("cam0")
    assert sim.wait_until(lambda s: s.buzzer_on and s.pattern is Pattern.ALERT, WAIT_S)
    assert eventually(driver, lambda s: s.beeps == 3)
    assert beeps_sent(sim) == [40, 40, 40]
    assert sim.wait_until(lambda s: not s.buzzer_on, WAIT_S)  # the beacon ends each beep by itself
    assert driver.state().beeps_quiet == 0


QUIET_NOW = [datetime.time(22, 0), datetime.time(23, 59), datetime.time(3, 0), datetime.time(6, 59)]


@pytest.mark.parametrize("now", QUIET_NOW)
def test_in_quiet_hours_an_alert_shows_its_lights_without_a_beep(
    sim: SimulatedBeacon, make_driver: DriverFactory, now: datetime.time
) -> None:
    clock = [datetime.time(12, 0)]
    driver, _ = make_driver(local_time=lambda: clock[0], buzzer_beeps=2, buzzer_quiet_hours="22:00-07:00")
    ready(driver)
    clock[0] = now
    driver.show_alert("cam0")
    assert sim.wait_for(Pattern.ALERT, WAIT_S)
    assert a_heartbeat_after_the_alert(sim)
    assert beeps_sent(sim) == [] and not sim.state.buzzer_on
    assert driver.state().beeps_quiet == 2 and driver.state().beeps == 0
    # Out of quiet hours again (07:00 is its end), the next alert beeps.
    clock[0] = datetime.time(7, 0)
    driver.show_alert("cam1")
    assert eventually(driver, lambda s: s.beeps == 2)
    assert len(beeps_sent(sim)) == 2


def test_no_beeps_configured_means_the_buzzer_is_never_used(sim: SimulatedBeacon, make_driver: DriverFactory) -> None:
    driver, _ = make_driver(buzzer_beeps=0)
    ready(driver)
    driver.show_alert("cam0")
    assert sim.wait_for(Pattern.ALERT, WAIT_S)
    assert a_heartbeat_after_the_alert(sim)
    assert beeps_sent(sim) == [] and driver.state().beeps == 0


def test_quiet_hours_parse_to_minutes_and_may_run_past_midnight() -> None:
    assert quiet_hours("k", "") is None
    assert quiet_hours("k", "22:00-07:00") == (22 * 60, 7 * 60)
    assert quiet_hours("k", "01:30-05:15") == (90, 315)
    with pytest.raises(ConfigError, match=r'k: expected "HH:MM-HH:MM"'):
        quiet_hours("k", "22:00 - 07:00")


def test_beacon_shows_fault_by_itself_when_heartbeats_stop(sim: SimulatedBeacon, make_driver: DriverFactory) -> None:
    driver, cfg = make_driver()
    watchdog_ms = round(cfg.watchdog_beats * cfg.heartbeat_s * 1000)
    ready(driver)
    assert sim.wait_until(lambda s: s.watchdog_ms == watchdog_ms, WAIT_S)
    assert eventually(driver, lambda s: s.acked >= 4)  # heartbeats are flowing
    assert not sim.state.watchdog_tripped
    driver.close(park=False)  # as if the daemon crashed: no goodbye to the beacon
    assert sim.wait_until(lambda s: s.watchdog_tripped, WAIT_S)
    assert sim.state.pattern is Pattern.FAULT


def test_clean_close_parks_the_beacon_idle_with_its_watchdog_off(
    sim: SimulatedBeacon, make_driver: DriverFactory
) -> None:
    driver, _ = make_driver()
    driver.show_fault("camera stalled")
    assert sim.wait_for(Pattern.FAULT, WAIT_S)
    driver.close()
    state = sim.state
    assert (state.pattern, state.watchdog_ms, state.watchdog_tripped) == (Pattern.IDLE, 0, False)


def test_corrupted_reply_is_retried_and_the_command_runs_once(sim: SimulatedBeacon, make_driver: DriverFactory) -> None:
    driver, _ = make_driver()
    ready(driver)
    sim.corrupt_next_replies(1, Command.SET_PATTERN)
    driver.show_alert("cam0")
    ready(driver, Pattern.ALERT)
    state = driver.state()
    assert state.corrupt_replies == 1
    assert state.retries >= 1
    assert sim.duplicates >= 1
    assert times_executed(sim, bp.set_pattern(0, Pattern.ALERT)) == 1


def test_lost_ack_is_resent_and_the_beacon_does_not_execute_twice(
    sim: SimulatedBeacon, make_driver: DriverFactory
) -> None:
    driver, _ = make_driver(alert_hold_s=30.0)
    ready(driver)
    sim.drop_next_acks(1, Command.SET_PATTERN)
    driver.show_alert("cam0")
    assert sim.wait_for(Pattern.ALERT, WAIT_S)
    assert sim.wait_for_duplicates(1, WAIT_S)
    assert eventually(driver, lambda s: s.timeouts >= 1 and s.retries >= 1 and s.pattern_acked is Pattern.ALERT)
    assert times_executed(sim, bp.set_pattern(0, Pattern.ALERT)) == 1


def test_garbage_from_beacon_is_skipped_counted_and_logged_once(
    sim: SimulatedBeacon, make_driver: DriverFactory, caplog: pytest.LogCaptureFixture
) -> None:
    driver, _ = make_driver()
    ready(driver)
    caplog.set_level(logging.INFO, logger="lfr_edge.alerts.beacon")
    rng = random.Random(7)
    garbage = bytes(rng.choice((bp.START, bp.ESCAPE, rng.randrange(256))) for _ in range(1000))
    sim.send_garbage(garbage)
    driver.show_alert("cam0")
    ready(driver, Pattern.ALERT)
    assert sim.state.pattern is Pattern.ALERT
    assert driver.state().garbage_bytes >= len(garbage)
    garbage_logs = [r for r in caplog.records if "unparseable" in r.getMessage()]
    # One warning when the burst starts, one line when the driver is back in step: not one per byte.
    assert [r.levelno for r in garbage_logs] == [logging.WARNING, logging.INFO]
    assert driver.selftest(WAIT_S)


def test_silent_beacon_is_reported_unresponsive_and_recovers(sim: SimulatedBeacon, make_driver: DriverFactory) -> None:
    driver, cfg = make_driver()
    ready(driver)
    sim.go_silent()
    assert eventually(driver, lambda s: not s.responsive)
    state = driver.state()
    assert state.connected
    assert state.timeouts >= 1 + cfg.retries
    assert not driver.selftest(WAIT_S)
    sim.resume()
    assert eventually(driver, lambda s: s.responsive)
    assert driver.selftest(WAIT_S)


def test_unplug_is_reported_and_replug_replays_the_current_state(
    sim: SimulatedBeacon, make_driver: DriverFactory
) -> None:
    driver, _ = make_driver(alert_hold_s=30.0)
    ready(driver)
    driver.show_alert("cam2")
    assert sim.wait_for(Pattern.ALERT, WAIT_S)
    sim.unplug()
    assert eventually(driver, lambda s: not s.connected)
    assert not driver.selftest(WAIT_S)
    sim.replug()  # a new pty behind the same link; the beacon powers up with its lamps off
    assert sim.wait_for(Pattern.ALERT, WAIT_S)
    state = driver.state()
    assert (state.connected, state.reconnects, state.port_errors) == (True, 1, 1)
    assert driver.selftest(WAIT_S)


def test_driver_started_before_the_beacon_is_plugged_in_connects_later(
    sim: SimulatedBeacon, make_driver: DriverFactory
) -> None:
    sim.unplug()
    driver, _ = make_driver()
    assert not driver.selftest(0.2)
    assert not driver.state().connected
    sim.replug()
    ready(driver)
    assert sim.state.pattern is Pattern.IDLE


def test_selftest_reports_the_beacons_own_state(sim: SimulatedBeacon, make_driver: DriverFactory) -> None:
    driver, _ = make_driver()
    ready(driver)
    assert driver.selftest(WAIT_S)
    device = driver.state().device
    assert device is not None
    assert (device.pattern, device.watchdog_tripped, device.watchdog_off) == (Pattern.IDLE, False, False)


def read_reply(port: serial.Serial) -> Frame | bp.BadChecksum:
    decoder = bp.FrameDecoder()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        events = decoder.feed(port.read(1))
        if events:
            return events[0]
    raise AssertionError("no reply from the simulated beacon")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (bp.encode(bp.set_pattern(3, Pattern.ALERT))[:-1] + b"\x00", NakReason.BAD_CHECKSUM),
        (bp.encode(Frame(3, 0x55)), NakReason.UNKNOWN_COMMAND),
        (bp.encode(Frame(3, Command.SET_PATTERN, b"\x09")), NakReason.BAD_ARGUMENT),
        (bp.encode(Frame(3, Command.SET_PATTERN)), NakReason.BAD_LENGTH),
    ],
)
def test_simulated_beacon_naks_bad_commands_and_executes_nothing(
    sim: SimulatedBeacon, wire: bytes, reason: NakReason
) -> None:
    with serial.Serial(str(sim.link), timeout=0.1) as port:
        port.write(wire)
        assert read_reply(port) == bp.nak(3, reason)
        port.write(bp.encode(bp.query(4)))
        reply = read_reply(port)
    assert isinstance(reply, Frame)
    assert bp.parse_state(reply).pattern is Pattern.OFF
    assert [f.kind for f in sim.executed()] == [Command.QUERY]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"retries": -1}, "beacon.retries"),
        ({"watchdog_beats": 1}, "beacon.watchdog_beats"),
        ({"ack_timeout_s": 1.0, "retries": 3, "heartbeat_s": 1.0}, "beacon.ack_timeout_s"),
        ({"reconnect_min_s": 2.0, "reconnect_max_s": 1.0}, "beacon.reconnect_max_s"),
        ({"heartbeat_s": 30.0}, "beacon.heartbeat_s"),
        ({"protocol": "x10"}, "beacon.protocol"),
        ({"alert_hold_s": 0}, "beacon.alert_hold_s"),
        ({"buzzer_beeps": 11}, "beacon.buzzer_beeps"),
        ({"buzzer_beep_ms": 10}, "beacon.buzzer_beep_ms"),
        ({"buzzer_quiet_hours": "22:00"}, "beacon.buzzer_quiet_hours"),
        ({"buzzer_quiet_hours": "24:00-07:00"}, "beacon.buzzer_quiet_hours"),
        ({"buzzer_quiet_hours": "7:00-8:00"}, "beacon.buzzer_quiet_hours"),
        ({"buzzer_quiet_hours": "22:00-22:00"}, "beacon.buzzer_quiet_hours"),
    ],
)
def test_bad_beacon_config_is_refused_naming_the_key(overrides: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config({"beacon": overrides})


def test_default_beacon_config_is_valid() -> None:
    cfg = parse_config({"beacon": {}}).beacon
    assert cfg == BeaconConfig()
    assert dataclasses.replace(cfg, retries=0).retries == 0


def test_a_protocol_without_a_driver_is_refused_by_the_config() -> None:
    """The "patlite" protocol has no driver, so the config refuses it rather than the driver at start-up."""
    with pytest.raises(ConfigError, match=r"beacon\.protocol: 'patlite' is not one of 'lfr'"):
        parse_config({"beacon": {"protocol": "patlite"}})
