"""The roof beacon's line protocol ("lfr"): frame encoding, a resynchronising decoder, command checks.

Pure functions and one small stateful decoder, no I/O: the driver (alerts/beacon.py) and the simulated
beacon (lfr_hwsim/beacon.py) share them, so both sides of the wire speak exactly what
docs/beacon-protocol.md describes.

Frame on the wire: START, then the byte-stuffed body LEN SEQ TYPE ARGS.. CRC_HI CRC_LO, where LEN counts
SEQ, TYPE and ARGS, and the CRC is CRC-16/CCITT-FALSE over LEN..ARGS. START and ESCAPE never appear inside
a frame (they are escaped), so a receiver resynchronises at the next START byte whatever it lost before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

START = 0x7E
ESCAPE = 0x7D
ESCAPE_XOR = 0x20
MAX_ARGS = 8
MIN_LEN = 2  # SEQ + TYPE
MAX_LEN = MIN_LEN + MAX_ARGS
BUZZER_UNTIL_OFF = 0xFFFF  # BUZZER duration meaning "on until a BUZZER 0"
MAX_DURATION_MS = 0xFFFE


class Pattern(IntEnum):
    OFF = 0
    IDLE = 1
    ALERT = 2
    FAULT = 3
    NO_WATCHLIST = 4  # running and scanning, but with no active watchlist: nobody can be found


class Command(IntEnum):
    """Host to beacon."""

    SET_PATTERN = 0x01  # args: pattern (1 byte)
    BUZZER = 0x02  # args: duration_ms (u16 BE); 0 = off, 0xFFFF = on until off
    HEARTBEAT = 0x03  # args: watchdog_ms (u16 BE); 0 = watchdog off (unit parked on purpose)
    QUERY = 0x04  # no args; answered with STATE


class Reply(IntEnum):
    """Beacon to host; SEQ echoes the command's SEQ."""

    ACK = 0x80  # no args
    NAK = 0x81  # args: reason (1 byte)
    STATE = 0x82  # args: pattern, buzzer (0/1), flags (bit 0 watchdog tripped, bit 1 watchdog off)


class NakReason(IntEnum):
    BAD_CHECKSUM = 1
    BAD_LENGTH = 2
    UNKNOWN_COMMAND = 3
    BAD_ARGUMENT = 4


FLAG_WATCHDOG_TRIPPED = 0x01
FLAG_WATCHDOG_OFF = 0x02

# Number of argument bytes each command must carry.
COMMAND_ARGS = {Command.SET_PATTERN: 1, Command.BUZZER: 2, Command.HEARTBEAT: 2, Command.QUERY: 0}


@dataclass(frozen=True)
class Frame:
    seq: int
    kind: int  # a Command or Reply value
    args: bytes = b""


@dataclass(frozen=True)
class BadChecksum:
    """A complete frame whose CRC did not match; `seq` is as received, so it may itself be wrong."""

    seq: int


@dataclass(frozen=True)
class DeviceState:
    pattern: Pattern
    buzzer_on: bool
    watchdog_tripped: bool
    watchdog_off: bool


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor (check 0x29B1)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Escape START and ESCAPE inside a frame body (everything after the START byte)."""
    out = bytearray()
    for byte in body:
        if byte in (START, ESCAPE):
            out += bytes((ESCAPE, byte ^ ESCAPE_XOR))
        else:
            out.append(byte)
    return bytes(out)


def encode(frame: Frame) -> bytes:
    """The bytes to put on the wire for `frame`; ValueError if a field is out of range."""
    if not 0 <= frame.seq <= 0xFF:
        raise ValueError(f"seq {frame.seq} is not a byte")
    if not 0 <= frame.kind <= 0xFF:
        raise ValueError(f"frame type {frame.kind} is not a byte")
    if len(frame.args) > MAX_ARGS:
        raise ValueError(f"{len(frame.args)} argument bytes, at most {MAX_ARGS}")
    body = bytes((MIN_LEN + len(frame.args), frame.seq, frame.kind)) + frame.args
    return bytes((START,)) + stuff(body + struct.pack(">H", crc16_ccitt(body)))


class FrameDecoder:
    """Turns a byte stream into frames, skipping whatever is not a well-formed frame.

    Resync rule: a START byte always begins a new frame (a partial frame before it is discarded); bytes
    outside a frame, frames with an impossible LEN, bad escapes and failed CRCs are discarded and counted
    in `discarded` (a failed CRC is also reported as BadChecksum so the device can NAK it).
    """

    def __init__(self) -> None:
        self._body = bytearray()
        self._in_frame = False
        self._escaped = False
        self._raw_count = 0  # wire bytes of the current partial frame, START included
        self.discarded = 0

    def take_discarded(self) -> int:
        """Discarded byte count since the last call (for once-per-burst logging)."""
        count, self.discarded = self.discarded, 0
        return count

    def _drop_frame(self) -> None:
        self.discarded += self._raw_count
        self._reset()

    def _reset(self) -> None:
        self._body.clear()
        self._in_frame = False
        self._escaped = False
        self._raw_count = 0

    def feed(self, data: bytes) -> list[Frame | BadChecksum]:
        events: list[Frame | BadChecksum] = []
        for byte in data:
            if byte == START:
                if self._in_frame:
                    self._drop_frame()
                self._in_frame = True
                self._raw_count = 1
                continue
            if not self._in_frame:
                self.discarded += 1
                continue
            self._raw_count += 1
            if self._escaped:
                self._escaped = False
                if byte not in (START ^ ESCAPE_XOR, ESCAPE ^ ESCAPE_XOR):
                    self._drop_frame()  # only START and ESCAPE are ever escaped
                    continue
                byte ^= ESCAPE_XOR
            elif byte == ESCAPE:
                self._escaped = True
                continue
            self._body.append(byte)
            length = self._body[0]
            if not MIN_LEN <= length <= MAX_LEN:
                self._drop_frame()
                continue
            if len(self._body) == 1 + length + 2:
                events.append(self._finish(length))
        return events

    def _finish(self, length: int) -> Frame | BadChecksum:
        payload = bytes(self._body[: 1 + length])
        (crc,) = struct.unpack(">H", self._body[1 + length :])
        if crc != crc16_ccitt(payload):
            self._drop_frame()
            return BadChecksum(seq=payload[1])
        self._reset()
        return Frame(seq=payload[1], kind=payload[2], args=payload[3:])


def check_command(frame: Frame) -> NakReason | None:
    """Why the beacon must refuse this command, or None if it is well formed."""
    try:
        command = Command(frame.kind)
    except ValueError:
        return NakReason.UNKNOWN_COMMAND
    if len(frame.args) != COMMAND_ARGS[command]:
        return NakReason.BAD_LENGTH
    if command is Command.SET_PATTERN and frame.args[0] not in set(Pattern):
        return NakReason.BAD_ARGUMENT
    return None


# Builders: one per frame type, so neither side packs arguments by hand.


def set_pattern(seq: int, pattern: Pattern) -> Frame:
    return Frame(seq, Command.SET_PATTERN, bytes((pattern,)))


def buzzer(seq: int, duration_ms: int) -> Frame:
    if not 0 <= duration_ms <= BUZZER_UNTIL_OFF:
        raise ValueError(f"buzzer duration {duration_ms} ms out of range")
    return Frame(seq, Command.BUZZER, struct.pack(">H", duration_ms))


def heartbeat(seq: int, watchdog_ms: int) -> Frame:
    if not 0 <= watchdog_ms <= 0xFFFF:
        raise ValueError(f"watchdog {watchdog_ms} ms out of range")
    return Frame(seq, Command.HEARTBEAT, struct.pack(">H", watchdog_ms))


def query(seq: int) -> Frame:
    return Frame(seq, Command.QUERY)


def ack(seq: int) -> Frame:
    return Frame(seq, Reply.ACK)


def nak(seq: int, reason: NakReason) -> Frame:
    return Frame(seq, Reply.NAK, bytes((reason,)))


def state_report(seq: int, state: DeviceState) -> Frame:
    flags = (FLAG_WATCHDOG_TRIPPED if state.watchdog_tripped else 0) | (FLAG_WATCHDOG_OFF if state.watchdog_off else 0)
    return Frame(seq, Reply.STATE, bytes((state.pattern, int(state.buzzer_on), flags)))


def u16_arg(frame: Frame) -> int:
    """The u16 argument of a BUZZER or HEARTBEAT frame (already checked by check_command)."""
    (value,) = struct.unpack(">H", frame.args)
    return int(value)


def parse_state(frame: Frame) -> DeviceState:
    """Decode a STATE reply; ValueError naming the field if the beacon sent nonsense."""
    if frame.kind != Reply.STATE or len(frame.args) != 3:
        raise ValueError(f"not a STATE reply: type 0x{frame.kind:02x}, {len(frame.args)} argument bytes")
    pattern, buzzer_on, flags = frame.args
    if pattern not in set(Pattern):
        raise ValueError(f"STATE reply: unknown pattern {pattern}")
    if buzzer_on > 1:
        raise ValueError(f"STATE reply: buzzer byte {buzzer_on} is not 0 or 1")
    return DeviceState(
        pattern=Pattern(pattern),
        buzzer_on=bool(buzzer_on),
        watchdog_tripped=bool(flags & FLAG_WATCHDOG_TRIPPED),
        watchdog_off=bool(flags & FLAG_WATCHDOG_OFF),
    )
