"""Roof beacon driver for the "lfr" line protocol (docs/beacon-protocol.md) over a serial port.

The frame pipeline must never wait on a serial line, so the pipeline only sets the wanted state
(`show_alert`, `show_fault`, `clear_fault`) and a thread of this driver owns the port: it sends
commands, waits for their ACK, retries, keeps the beacon's watchdog fed with heartbeats, and when the
port fails (the beacon is unplugged) reopens it with capped backoff and replays the wanted state.
Garbage from the line is skipped and counted; it is logged once per burst, never once per byte.
The thread is supervised (lfr_edge.daemon.supervise): an unexpected error closes the port, is counted and
logged once, and the thread starts again after a backoff; one that keeps failing is down.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import serial

from lfr_contracts import beacon as bp
from lfr_contracts.alerts import Alert
from lfr_contracts.beacon import BadChecksum, DeviceState, Frame, Pattern, Reply
from lfr_contracts.errors import ConfigError
from lfr_edge.alerts.channel import UnitState
from lfr_edge.config import BeaconConfig, quiet_hours
from lfr_edge.daemon.supervise import Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BeaconState:
    """A snapshot of the link for telemetry and self-test; counters only grow."""

    connected: bool  # the serial port is open
    responsive: bool  # the last command was answered (ACK, STATE or a NAK)
    pattern_wanted: Pattern
    pattern_acked: Pattern | None  # what the beacon acknowledged showing since the port was opened
    alert_camera: str | None
    fault_reason: str | None
    last_ack_age_s: float | None
    last_rtt_ms: float | None  # command written to reply decoded, last acknowledged command
    device: DeviceState | None  # from the last successful selftest()
    sent: int
    acked: int
    naks: int
    timeouts: int
    retries: int
    corrupt_replies: int  # replies that failed their CRC
    bad_replies: int  # well-formed replies of the wrong type or content
    garbage_bytes: int
    reconnects: int
    port_errors: int
    beeps: int  # BUZZER commands the beacon acknowledged
    beeps_quiet: int  # beeps left silent because an alert came in quiet hours


class _Result(enum.Enum):
    ACKED = "acked"
    REJECTED = "rejected"  # the beacon answered NAK for a reason a retry cannot fix
    FAILED = "failed"  # no valid answer after every retry


_COUNTERS = (
    "sent",
    "acked",
    "naks",
    "timeouts",
    "retries",
    "corrupt_replies",
    "bad_replies",
    "garbage_bytes",
    "reconnects",
    "port_errors",
    "beeps",
    "beeps_quiet",
)


def local_time_now() -> datetime.time:
    """The unit's local time of day, which quiet hours are written in."""
    return datetime.datetime.now().time()


class BeaconDriver:
    """Drives one roof beacon; every public method returns at once (except selftest and close)."""

    def __init__(
        self,
        cfg: BeaconConfig,
        clock: Callable[[], float] = time.monotonic,
        supervisor: Supervisor | None = None,
        local_time: Callable[[], datetime.time] = local_time_now,
    ) -> None:
        if cfg.protocol != "lfr":
            raise ConfigError(f"beacon.protocol: {cfg.protocol!r} has no driver yet (only 'lfr')")
        self._cfg = cfg
        self._clock = clock
        self._local_time = local_time
        self._quiet = quiet_hours("beacon.buzzer_quiet_hours", cfg.buzzer_quiet_hours)
        self._beeps_due: list[float] = []  # monotonic times the next beeps are due (under _cond)
        self._watchdog_ms = round(cfg.watchdog_beats * cfg.heartbeat_s * 1000)
        self._cond = threading.Condition()
        # Wanted state, set by the pipeline (under _cond).
        self._base = Pattern.IDLE
        self._fault_reason: str | None = None
        self._alert_until = -math.inf
        self._alert_camera: str | None = None
        self._changes = 0
        self._probes_requested = 0
        self._probes_done = 0
        self._probe_ok = False
        self._stopping = False
        self._park = True
        # Link state, written by the thread (under _cond).
        self._connected = False
        self._responsive = False
        self._acked: Pattern | None = None
        self._last_ack: float | None = None
        self._last_rtt_ms: float | None = None
        self._device: DeviceState | None = None
        self._counts = dict.fromkeys(_COUNTERS, 0)
        # Owned by the thread alone.
        self._port: serial.Serial | None = None
        self._decoder = bp.FrameDecoder()
        self._seq = random.randrange(256)  # a restarted unit is unlikely to repeat the last seq
        self._last_tx = -math.inf
        self._next_try_at = -math.inf
        self._ever_opened = False
        self._open_failing = False
        self._garbage_burst = 0
        self._watchdog_armed = False
        self._silence_logged = False
        self._closing = threading.Event()  # ends a supervised restart's backoff
        run = (supervisor or Supervisor()).supervised("beacon", self._drive, stop=self._closing)
        self._thread = threading.Thread(target=run, name="beacon", daemon=True)

    # ---- pipeline side: never blocks on the port ----

    def start(self) -> None:
        self._thread.start()

    def show_alert(self, camera: str) -> None:
        """Show the alert pattern for alert_hold_s (restarted by every new alert), then the base pattern; sound
        the buzzer's beeps (restarted too) unless it is quiet hours."""
        beeps, period_s = self._cfg.buzzer_beeps, (self._cfg.buzzer_beep_ms + self._cfg.buzzer_gap_ms) / 1000
        quiet = self._in_quiet_hours()
        with self._cond:
            now = self._clock()
            self._alert_until = now + self._cfg.alert_hold_s
            self._alert_camera = camera
            self._beeps_due = [] if quiet else [now + i * period_s for i in range(beeps)]
            self._counts["beeps_quiet"] += beeps if quiet else 0
            self._changed()

    def _in_quiet_hours(self) -> bool:
        if self._quiet is None:
            return False
        (start, end), moment = self._quiet, self._local_time()
        minute = moment.hour * 60 + moment.minute
        return start <= minute < end if start < end else (minute >= start or minute < end)

    def show_fault(self, reason: str) -> None:
        """Show the fault pattern until clear_fault(); an alert still shows over it for its hold time."""
        with self._cond:
            self._base, self._fault_reason = Pattern.FAULT, reason
            self._changed()

    def clear_fault(self, watchlist_active: bool = True) -> None:
        """Back to idle once the fault is gone, or to `no_watchlist` while no list is held; an alert being shown
        keeps its hold time."""
        with self._cond:
            self._base = Pattern.IDLE if watchlist_active else Pattern.NO_WATCHLIST
            self._fault_reason = None
            self._changed()

    def state(self) -> BeaconState:
        with self._cond:
            return self._snapshot()

    def selftest(self, timeout_s: float = 2.0) -> bool:
        """Ask the beacon for its state; True if it answered within timeout_s (for `lfr-provision selftest`)."""
        with self._cond:
            self._probes_requested += 1
            target = self._probes_requested
            self._changed()
            done = self._cond.wait_for(lambda: self._probes_done >= target, timeout_s)
            return done and self._probe_ok

    def close(self, park: bool = True, timeout_s: float | None = None) -> None:
        """Stop the thread. park=True first sets idle and switches the beacon's watchdog off, so a
        deliberate stop (SIGTERM) is not shown as a fault; park=False stops as a crash would."""
        self._closing.set()
        with self._cond:
            self._stopping, self._park = True, park
            if park:
                self._base, self._fault_reason = Pattern.IDLE, None
                self._alert_until, self._alert_camera = -math.inf, None
            self._beeps_due = []
            self._changed()
        if self._thread.is_alive():
            worst = 3 * (1 + self._cfg.retries) * self._cfg.ack_timeout_s + 1.0
            self._thread.join(worst if timeout_s is None else timeout_s)
            if self._thread.is_alive():
                log.warning("beacon: driver thread did not stop in time")

    # ---- helpers under _cond ----

    def _changed(self) -> None:
        self._changes += 1
        self._cond.notify_all()

    def _count(self, name: str, n: int = 1) -> None:
        with self._cond:
            self._counts[name] += n
            self._cond.notify_all()

    def _wanted(self, now: float) -> Pattern:
        return Pattern.ALERT if now < self._alert_until else self._base

    def _snapshot(self) -> BeaconState:
        now = self._clock()
        return BeaconState(
            connected=self._connected,
            responsive=self._responsive,
            pattern_wanted=self._wanted(now),
            pattern_acked=self._acked,
            alert_camera=self._alert_camera if now < self._alert_until else None,
            fault_reason=self._fault_reason,
            last_ack_age_s=None if self._last_ack is None else now - self._last_ack,
            last_rtt_ms=self._last_rtt_ms,
            device=self._device,
            **self._counts,
        )

    # ---- the thread ----

    def _drive(self) -> None:
        """The thread's loop; an unexpected error loses the port (and goes to the supervisor)."""
        try:
            self._run()
        except Exception:
            self._lose_port("unexpected error")
            raise

    def _run(self) -> None:
        backoff = self._cfg.reconnect_min_s
        try:
            while True:
                with self._cond:
                    stopping, park = self._stopping, self._park
                if stopping and (not park or self._port is None):
                    return
                if self._port is None:
                    if self._open():
                        backoff = self._cfg.reconnect_min_s
                        continue
                    self._finish_probes(ok=False)
                    with self._cond:
                        self._cond.wait_for(lambda: self._stopping, backoff)
                    backoff = min(backoff * 2, self._cfg.reconnect_max_s)
                    continue
                try:
                    if stopping:
                        self._park_beacon()
                        return
                    self._step()
                except (serial.SerialException, OSError) as exc:
                    self._lose_port(f"serial port error ({exc})")
        finally:
            self._close_port()

    def _open(self) -> bool:
        try:
            port = serial.Serial(
                port=self._cfg.port,
                baudrate=self._cfg.baudrate,
                timeout=self._cfg.ack_timeout_s / 4,
                write_timeout=1.0,
                exclusive=True,
            )
            port.reset_input_buffer()
        except (serial.SerialException, OSError, ValueError) as exc:
            if not self._open_failing:
                log.warning("beacon: cannot open %s (%s); retrying with backoff", self._cfg.port, exc)
                self._open_failing = True
            return False
        self._port = port
        self._decoder = bp.FrameDecoder()
        self._garbage_burst = 0
        self._last_tx = -math.inf
        self._next_try_at = -math.inf
        self._watchdog_armed = False
        self._open_failing = False
        with self._cond:
            self._connected = True
            self._acked = None  # the beacon may have lost power: replay the wanted state
            self._beeps_due = []  # a beep late by a reconnect would no longer say "alert now"
            if self._ever_opened:
                self._counts["reconnects"] += 1
            self._cond.notify_all()
        log.info("beacon: %s %s", "reopened" if self._ever_opened else "opened", self._cfg.port)
        self._ever_opened = True
        return True

    def _lose_port(self, why: str) -> None:
        log.warning("beacon: %s; reopening %s", why, self._cfg.port)
        self._open_failing = True  # this line says it: failed reopen attempts are not logged again
        self._close_port()
        with self._cond:
            self._counts["port_errors"] += 1
            self._connected = False
            self._responsive = False
            self._acked = None
            self._cond.notify_all()

    def _close_port(self) -> None:
        if self._port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._port.close()
            self._port = None
        with self._cond:
            self._connected = False
            self._cond.notify_all()

    def _finish_probes(self, ok: bool, device: DeviceState | None = None) -> None:
        with self._cond:
            if self._probes_done < self._probes_requested:
                self._probes_done = self._probes_requested
                self._probe_ok = ok
                if device is not None:
                    self._device = device
                self._cond.notify_all()

    def _step(self) -> None:
        """Send the one command that is due, or sleep until one is."""
        now = self._clock()
        with self._cond:
            wanted = self._wanted(now)
            probe = self._probes_requested > self._probes_done
            seen = self._changes
            alert_until = self._alert_until
            beep_at = self._beeps_due[0] if self._beeps_due else math.inf
        if probe:
            self._probe()
            return
        if now >= self._next_try_at:
            if not self._watchdog_armed:
                # First thing on a fresh port: arm the watchdog (a parked beacon has it off).
                result, _ = self._transact(bp.heartbeat(self._next_seq(), self._watchdog_ms))
                self._watchdog_armed = result is _Result.ACKED
                self._after(result)
                return
            if wanted != self._acked:
                result, _ = self._transact(bp.set_pattern(self._next_seq(), wanted))
                if result is _Result.ACKED:
                    with self._cond:
                        self._acked = wanted
                        self._cond.notify_all()
                self._after(result)
                return
            if now >= beep_at:
                self._beep()
                return
            if now - self._last_tx >= self._cfg.heartbeat_s:
                result, _ = self._transact(bp.heartbeat(self._next_seq(), self._watchdog_ms))
                self._after(result)
                return
        wake_at = max(self._last_tx + self._cfg.heartbeat_s, self._next_try_at)
        if alert_until > now:
            wake_at = min(wake_at, alert_until)
        wake_at = min(wake_at, max(beep_at, self._next_try_at))
        with self._cond:
            self._cond.wait_for(lambda: self._changes != seen, max(0.0, wake_at - self._clock()))

    def _after(self, result: _Result) -> None:
        # A beacon that did not take a command is tried again at the next heartbeat, not hammered.
        if result is not _Result.ACKED:
            self._next_try_at = self._clock() + self._cfg.heartbeat_s

    def _beep(self) -> None:
        with self._cond:
            if self._beeps_due:
                self._beeps_due.pop(0)
        result, _ = self._transact(bp.buzzer(self._next_seq(), self._cfg.buzzer_beep_ms))
        if result is _Result.ACKED:
            self._count("beeps")
        self._after(result)

    def _probe(self) -> None:
        result, reply = self._transact(bp.query(self._next_seq()))
        if result is not _Result.ACKED or reply is None:
            self._finish_probes(ok=False)
            return
        self._finish_probes(ok=True, device=bp.parse_state(reply))

    def _park_beacon(self) -> None:
        result, _ = self._transact(bp.set_pattern(self._next_seq(), Pattern.IDLE))
        if result is _Result.ACKED:
            with self._cond:
                self._acked = Pattern.IDLE
        self._transact(bp.heartbeat(self._next_seq(), 0))

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _transact(self, command: Frame) -> tuple[_Result, Frame | None]:
        """Send `command` and wait for its answer, re-sending the same frame (same seq) on a timeout,
        a corrupted reply or a NAK for a bad checksum; the beacon executes a repeated seq only once."""
        assert self._port is not None
        data = bp.encode(command)
        expected = Reply.STATE if command.kind == bp.Command.QUERY else Reply.ACK
        for attempt in range(1 + self._cfg.retries):
            if attempt:
                self._count("retries")
            self._drain()
            sent_at = self._clock()
            self._port.write(data)
            self._last_tx = sent_at
            self._count("sent")
            reply = self._await_reply(command.seq, expected, sent_at + self._cfg.ack_timeout_s)
            if reply == "corrupt":
                self._count("corrupt_replies")
                continue
            if reply is None:
                self._count("timeouts")
                continue
            assert isinstance(reply, Frame)
            if reply.kind == Reply.NAK:
                self._count("naks")
                reason = reply.args[0] if len(reply.args) == 1 else None
                if reason == bp.NakReason.BAD_CHECKSUM:
                    continue
                log.error("beacon: refused command 0x%02x (NAK reason %s)", command.kind, reason)
                self._answered(sent_at)
                return _Result.REJECTED, reply
            if expected == Reply.STATE:
                try:
                    bp.parse_state(reply)
                except ValueError as exc:
                    log.warning("beacon: bad state report: %s", exc)
                    self._count("bad_replies")
                    continue
            self._count("acked")
            self._answered(sent_at)
            return _Result.ACKED, reply
        self._unanswered()
        return _Result.FAILED, None

    def _await_reply(self, seq: int, expected: Reply, deadline: float) -> Frame | str | None:
        """The reply to `seq`, "corrupt" for a reply that failed its CRC, or None at the deadline."""
        assert self._port is not None
        while self._clock() < deadline:
            chunk = self._port.read(max(1, self._port.in_waiting))
            for event in self._feed(chunk):
                if isinstance(event, BadChecksum):
                    return "corrupt"
                if event.seq != seq:
                    continue  # a late answer to an earlier try or command
                if event.kind in (expected, Reply.NAK):
                    return event
                self._count("bad_replies")
        return None

    def _drain(self) -> None:
        """Read what arrived while no command was waiting (late replies, noise) before sending."""
        assert self._port is not None
        waiting = self._port.in_waiting
        if waiting:
            self._feed(self._port.read(waiting))

    def _feed(self, chunk: bytes) -> list[Frame | BadChecksum]:
        events = self._decoder.feed(chunk)
        discarded = self._decoder.take_discarded()
        if discarded:
            self._count("garbage_bytes", discarded)
            if not self._garbage_burst:
                log.warning("beacon: unparseable bytes on the line; resynchronising at the next frame")
            self._garbage_burst += discarded
        if self._garbage_burst and any(isinstance(e, Frame) for e in events):
            log.info("beacon: resynchronised after %d unparseable bytes", self._garbage_burst)
            self._garbage_burst = 0
        return events

    def _answered(self, sent_at: float) -> None:
        now = self._clock()
        if not self._responsive or self._silence_logged:
            log.info("beacon: answering on %s", self._cfg.port)
        self._silence_logged = False
        with self._cond:
            self._responsive = True
            self._last_ack = now
            self._last_rtt_ms = (now - sent_at) * 1000
            self._cond.notify_all()

    def _unanswered(self) -> None:
        if not self._silence_logged:
            log.warning(
                "beacon: no answer after %d tries of %.3f s; beacon unresponsive",
                1 + self._cfg.retries,
                self._cfg.ack_timeout_s,
            )
            self._silence_logged = True
        with self._cond:
            self._responsive = False
            self._cond.notify_all()


class BeaconChannel:
    """The roof beacon as an alert channel: the alert pattern for each alert, the fault pattern while the
    unit has a fault (an alert still shows over it)."""

    name = "beacon"

    def __init__(self, driver: BeaconDriver) -> None:
        self._driver = driver

    def deliver(self, alert: Alert) -> None:
        self._driver.show_alert(alert.camera)

    def show_state(self, state: UnitState) -> None:
        if state.ok:
            self._driver.clear_fault(state.watchlist_active)
        else:
            self._driver.show_fault("; ".join(state.faults))
