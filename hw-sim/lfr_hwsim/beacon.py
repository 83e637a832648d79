"""A simulated roof beacon on a real pseudo-terminal: the device side of docs/beacon-protocol.md.

The driver opens `link`, a symlink to the pty's slave end, the way a unit opens the udev symlink
/dev/lfr-beacon; unplug closes the pty (the driver's port errors) and replug makes a new pty and
re-points the link, as udev does for a re-enumerated USB beacon. Tests read the lamp state and wait for
changes; fault injection covers garbage, corrupted replies, lost ACKs, silence and unplug/replug.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import operator
import os
import select
import struct
import sys
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from lfr_contracts import beacon as bp
from lfr_contracts.beacon import BadChecksum, Command, DeviceState, Frame, NakReason, Pattern

POWER_ON_WATCHDOG_S = 5.0  # watchdog before the first HEARTBEAT sets one (docs/beacon-protocol.md)


@dataclass(frozen=True)
class LampState:
    """What someone in the street would see and hear, plus the watchdog's state."""

    pattern: Pattern
    buzzer_on: bool
    watchdog_tripped: bool
    watchdog_ms: int  # 0 = the unit parked the beacon (watchdog off)
    plugged: bool


@dataclass
class _ReplyFault:
    count: int = 0
    command: Command | None = None  # None: any command

    def take(self, command: int) -> bool:
        if self.count > 0 and (self.command is None or self.command == command):
            self.count -= 1
            return True
        return False


class SimulatedBeacon:
    def __init__(self, link: Path, power_on_watchdog_s: float = POWER_ON_WATCHDOG_S) -> None:
        self.link = link
        self._power_on_watchdog_s = power_on_watchdog_s
        self._cond = threading.Condition()
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path = ""
        self._wake_r, self._wake_w = os.pipe()
        self._stop = False
        self._unplug_requested = False
        self._silent = False
        self._corrupt = _ReplyFault()
        self._drop = _ReplyFault()
        self._decoder = bp.FrameDecoder()
        self._state = LampState(Pattern.OFF, False, False, round(power_on_watchdog_s * 1000), False)
        self._commanded = Pattern.OFF
        self._watchdog_at = 0.0
        self._buzzer_until: float | None = None
        self._last_command: Frame | None = None
        self._last_reply: Frame | None = None
        self._executed: list[Frame] = []
        self._executed_at: list[float] = []  # wall-clock time each executed command was carried out
        self.duplicates = 0
        self.naks_sent = 0
        self._thread = threading.Thread(target=self._run, name="sim-beacon", daemon=True)

    # ---- lifecycle ----

    def start(self) -> None:
        self.replug()
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
        os.write(self._wake_w, b"x")
        if self._thread.is_alive():
            self._thread.join(2.0)
        with self._cond:
            self._close_pty()
        os.close(self._wake_r)
        os.close(self._wake_w)

    @property
    def slave_path(self) -> str:
        with self._cond:
            return self._slave_path

    # ---- what tests look at ----

    @property
    def state(self) -> LampState:
        with self._cond:
            return self._state

    def executed(self) -> list[Frame]:
        """Every command the beacon carried out (duplicates and refused commands are not in it)."""
        with self._cond:
            return list(self._executed)

    def executed_at(self) -> list[tuple[float, Frame]]:
        """Every executed command with the wall-clock time (time.time()) the beacon carried it out, just
        before it answered ACK: for latency measurements against an alert's frame time."""
        with self._cond:
            return list(zip(self._executed_at, self._executed, strict=True))

    def wait_until(self, predicate: Callable[[LampState], bool], timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._state), timeout_s)

    def wait_for_duplicates(self, count: int, timeout_s: float) -> bool:
        """True once `count` re-sent commands have been answered without being executed again."""
        with self._cond:
            return self._cond.wait_for(lambda: self.duplicates >= count, timeout_s)

    def wait_for(self, pattern: Pattern, timeout_s: float) -> bool:
        """True once the lamps show `pattern` (at once if they already do), False at the timeout."""
        return self.wait_until(lambda s: s.pattern == pattern, timeout_s)

    # ---- fault injection ----

    def send_garbage(self, data: bytes) -> None:
        with self._cond:
            if self._master is not None:
                os.write(self._master, data)

    def corrupt_next_replies(self, count: int, command: Command | None = None) -> None:
        """The next `count` replies (to `command` only, if given) go out with a wrong CRC."""
        with self._cond:
            self._corrupt = _ReplyFault(count, command)

    def drop_next_acks(self, count: int, command: Command | None = None) -> None:
        """The next `count` commands (of kind `command`, if given) are executed but not answered."""
        with self._cond:
            self._drop = _ReplyFault(count, command)

    def go_silent(self) -> None:
        """Hear nothing and answer nothing (a cut wire); the watchdog trips as on a real beacon."""
        with self._cond:
            self._silent = True

    def resume(self) -> None:
        with self._cond:
            self._silent = False

    def unplug(self, timeout_s: float = 2.0) -> None:
        """Close the pty and remove the link: the driver's next read or write fails."""
        with self._cond:
            if self._master is None:
                return
            self._unplug_requested = True
        os.write(self._wake_w, b"x")
        with self._cond:
            if not self._cond.wait_for(lambda: self._master is None, timeout_s):
                raise TimeoutError("simulated beacon did not unplug")

    def replug(self) -> None:
        """A new pty (a new slave path) behind the same link; the beacon powers up: lamps off."""
        if self._thread.is_alive():
            self.unplug()  # the device thread must close the old pty, not us under its select()
        master, slave = os.openpty()
        tty.setraw(slave)
        slave_path = os.ttyname(slave)
        tmp_link = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        tmp_link.symlink_to(slave_path)
        with self._cond:
            self._close_pty()
            os.replace(tmp_link, self.link)  # atomic, as udev re-points /dev/lfr-beacon
            self._master, self._slave, self._slave_path = master, slave, slave_path
            self._decoder = bp.FrameDecoder()
            self._commanded = Pattern.OFF
            self._buzzer_until = None
            self._last_command = self._last_reply = None
            self._watchdog_at = time.monotonic() + self._power_on_watchdog_s
            self._set(LampState(Pattern.OFF, False, False, round(self._power_on_watchdog_s * 1000), True))
        os.write(self._wake_w, b"x")

    # ---- the device ----

    def _set(self, state: LampState) -> None:
        if state != self._state:
            self._state = state
            self._cond.notify_all()

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        self._slave_path = ""
        if self.link.is_symlink():
            self.link.unlink()
        self._set(replace(self._state, pattern=Pattern.OFF, buzzer_on=False, plugged=False))

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                if self._unplug_requested:
                    self._unplug_requested = False
                    self._close_pty()
                self._tick(time.monotonic())
                master = self._master
                timeout = self._next_deadline(time.monotonic())
            fds = [self._wake_r] if master is None else [self._wake_r, master]
            readable, _, _ = select.select(fds, [], [], timeout)
            if self._wake_r in readable:
                os.read(self._wake_r, 64)
            if master is not None and master in readable:
                with self._cond:
                    if self._master != master:
                        continue  # unplugged or replugged meanwhile
                    try:
                        data = os.read(master, 4096)
                    except OSError:
                        continue
                    if not self._silent:
                        for event in self._decoder.feed(data):
                            self._receive(event)

    def _next_deadline(self, now: float) -> float:
        deadlines = [now + 0.5]
        if self._master is not None and self._state.watchdog_ms and not self._state.watchdog_tripped:
            deadlines.append(self._watchdog_at)
        if self._buzzer_until is not None:
            deadlines.append(self._buzzer_until)
        return max(0.0, min(deadlines) - now)

    def _tick(self, now: float) -> None:
        state = self._state
        if self._buzzer_until is not None and now >= self._buzzer_until:
            self._buzzer_until = None
            state = replace(state, buzzer_on=False)
        watching = self._master is not None and state.watchdog_ms and not state.watchdog_tripped
        if watching and now >= self._watchdog_at:
            self._buzzer_until = None
            state = replace(state, pattern=Pattern.FAULT, buzzer_on=False, watchdog_tripped=True)
        self._set(state)

    def _receive(self, event: Frame | BadChecksum) -> None:
        if isinstance(event, BadChecksum):
            self._reply(0, bp.nak(event.seq, NakReason.BAD_CHECKSUM))
            return
        now = time.monotonic()
        self._watchdog_at = now + self._state.watchdog_ms / 1000
        if self._state.watchdog_tripped:
            self._set(replace(self._state, pattern=self._commanded, watchdog_tripped=False))
        reason = bp.check_command(event)
        if reason is not None:
            self._reply(event.kind, bp.nak(event.seq, reason))
            return
        if event == self._last_command and self._last_reply is not None:
            self.duplicates += 1  # a re-send whose answer was lost: answer again, do not execute again
            self._cond.notify_all()
            self._reply(event.kind, self._last_reply)
            return
        reply = self._execute(event, now)
        self._last_command, self._last_reply = event, reply
        self._reply(event.kind, reply)

    def _execute(self, command: Frame, now: float) -> Frame:
        self._executed.append(command)
        self._executed_at.append(time.time())
        state = self._state
        if command.kind == Command.SET_PATTERN:
            self._commanded = Pattern(command.args[0])
            state = replace(state, pattern=self._commanded)
        elif command.kind == Command.BUZZER:
            duration_ms = bp.u16_arg(command)
            self._buzzer_until = None
            if duration_ms not in (0, bp.BUZZER_UNTIL_OFF):
                self._buzzer_until = now + duration_ms / 1000
            state = replace(state, buzzer_on=duration_ms != 0)
        elif command.kind == Command.HEARTBEAT:
            state = replace(state, watchdog_ms=bp.u16_arg(command))
            self._watchdog_at = now + state.watchdog_ms / 1000
        self._set(state)
        if command.kind == Command.QUERY:
            return bp.state_report(
                command.seq,
                DeviceState(
                    pattern=state.pattern,
                    buzzer_on=state.buzzer_on,
                    watchdog_tripped=state.watchdog_tripped,
                    watchdog_off=state.watchdog_ms == 0,
                ),
            )
        return bp.ack(command.seq)

    def _reply(self, command_kind: int, reply: Frame) -> None:
        if self._master is None:
            return
        if reply.kind == bp.Reply.NAK:
            self.naks_sent += 1
        elif self._drop.take(command_kind):
            return
        corrupt = self._corrupt.take(command_kind)
        data = _encode_with_bad_crc(reply) if corrupt else bp.encode(reply)
        with contextlib.suppress(OSError):
            os.write(self._master, data)


def _encode_with_bad_crc(frame: Frame) -> bytes:
    body = bytes((bp.MIN_LEN + len(frame.args), frame.seq, frame.kind)) + frame.args
    return bytes((bp.START,)) + bp.stuff(body + struct.pack(">H", bp.crc16_ccitt(body) ^ 0x5A5A))


def main(argv: list[str] | None = None) -> int:
    """Run a simulated beacon until Ctrl-C, printing every lamp change (lfr-hwsim beacon)."""
    parser = argparse.ArgumentParser(prog="lfr-hwsim beacon", description=main.__doc__)
    parser.add_argument("--link", type=Path, default=Path("/tmp/lfr-beacon"), help="symlink to the pty")
    parser.add_argument("--power-on-watchdog-s", type=float, default=POWER_ON_WATCHDOG_S)
    args = parser.parse_args(argv)
    beacon = SimulatedBeacon(args.link, power_on_watchdog_s=args.power_on_watchdog_s)
    beacon.start()
    print(f"simulated beacon on {beacon.slave_path}, linked at {args.link} (set beacon.port to it)")
    last = None
    started = time.monotonic()
    try:
        while True:
            current = beacon.state
            if current != last:
                print(
                    f"{time.monotonic() - started:8.2f}s  pattern={current.pattern.name.lower()}"
                    f" buzzer={'on' if current.buzzer_on else 'off'}"
                    f" watchdog={'TRIPPED' if current.watchdog_tripped else current.watchdog_ms or 'off'}",
                    flush=True,
                )
                last = current
            beacon.wait_until(functools.partial(operator.ne, current), 1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        beacon.stop()


if __name__ == "__main__":
    sys.exit(main())
