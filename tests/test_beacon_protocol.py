"""The beacon line protocol's codec: round trips, resync after garbage, refusal of bad frames."""

from __future__ import annotations

import random

import pytest

from lfr_contracts import beacon as bp
from lfr_contracts.beacon import BadChecksum, Command, Frame, FrameDecoder, NakReason, Pattern


def random_frame(rng: random.Random) -> Frame:
    # Bias the bytes towards START and ESCAPE so stuffing is exercised in most frames.
    def byte() -> int:
        return rng.choice((bp.START, bp.ESCAPE, rng.randrange(256)))

    return Frame(byte(), byte(), bytes(byte() for _ in range(rng.randrange(bp.MAX_ARGS + 1))))


def test_crc_is_ccitt_false_check_value() -> None:
    assert bp.crc16_ccitt(b"123456789") == 0x29B1


@pytest.mark.parametrize(
    ("frame", "wire"),
    [  # the worked examples in docs/beacon-protocol.md
        (bp.set_pattern(0x05, Pattern.ALERT), "7e 03 05 01 02 e7 9f"),
        (bp.ack(0x05), "7e 02 05 80 cc 81"),
        (bp.set_pattern(0x7E, Pattern.ALERT), "7e 03 7d 5e 01 02 cf 66"),
        (bp.heartbeat(0x06, 3000), "7e 04 06 03 0b b8 1c ea"),
        (bp.nak(0x07, NakReason.BAD_CHECKSUM), "7e 03 07 81 01 a2 04"),
        (bp.query(0x08), "7e 02 08 04 6b d1"),
        (
            bp.state_report(0x08, bp.DeviceState(Pattern.IDLE, False, False, False)),
            "7e 05 08 82 01 00 00 48 5c",
        ),
    ],
)
def test_documented_examples_encode_and_decode_exactly(frame: Frame, wire: str) -> None:
    assert bp.encode(frame) == bytes.fromhex(wire)
    assert FrameDecoder().feed(bytes.fromhex(wire)) == [frame]


def test_random_frames_round_trip_whole_and_byte_by_byte() -> None:
    rng = random.Random(1)
    for _ in range(2000):
        frame = random_frame(rng)
        wire = bp.encode(frame)
        assert bp.START not in wire[1:]  # the start byte never appears inside a frame
        assert FrameDecoder().feed(wire) == [frame]
        decoder = FrameDecoder()
        events = [e for b in wire for e in decoder.feed(bytes((b,)))]
        assert events == [frame]
        assert decoder.discarded == 0


def test_stream_of_frames_split_at_random_points_decodes_in_order() -> None:
    rng = random.Random(2)
    frames = [random_frame(rng) for _ in range(500)]
    stream = b"".join(bp.encode(f) for f in frames)
    decoder = FrameDecoder()
    events: list[Frame | BadChecksum] = []
    pos = 0
    while pos < len(stream):
        step = rng.randrange(1, 40)
        events += decoder.feed(stream[pos : pos + step])
        pos += step
    assert events == frames


def test_decoder_resyncs_after_random_garbage() -> None:
    rng = random.Random(3)
    for _ in range(1000):
        garbage = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60)))
        frame = random_frame(rng)
        decoder = FrameDecoder()
        events = decoder.feed(garbage + bp.encode(frame))
        # The garbage may by chance hold a CRC failure, never a second valid frame.
        assert [e for e in events if isinstance(e, Frame)] == [frame]
        assert events[-1] == frame
        assert decoder.take_discarded() >= 1


def test_any_single_bit_flip_is_never_accepted_as_a_frame() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        frame = random_frame(rng)
        wire = bytearray(bp.encode(frame))
        index = rng.randrange(1, len(wire))
        wire[index] ^= 1 << rng.randrange(8)
        events = FrameDecoder().feed(bytes(wire))
        assert all(isinstance(e, BadChecksum) for e in events), (frame, bytes(wire).hex())


def test_bad_checksum_is_reported_with_received_seq() -> None:
    wire = bytearray(bp.encode(bp.heartbeat(0x42, 300)))
    wire[-1] ^= 0x01 if wire[-1] not in (0x7F, 0x7C) else 0x02
    decoder = FrameDecoder()
    assert decoder.feed(bytes(wire)) == [BadChecksum(seq=0x42)]
    assert decoder.discarded == len(wire)


@pytest.mark.parametrize("length", [0, 1, bp.MAX_LEN + 1, 0xFF])
def test_impossible_length_is_skipped_and_next_frame_decoded(length: int) -> None:
    good = bp.encode(bp.query(9))
    bogus = bytes((bp.START, length, 1, 2, 3, 4, 5))
    decoder = FrameDecoder()
    assert decoder.feed(bogus + good) == [Frame(9, Command.QUERY)]
    assert decoder.discarded == len(bogus)


def test_truncated_frame_is_dropped_at_next_start_byte() -> None:
    first = bp.encode(bp.set_pattern(1, Pattern.FAULT))
    second = bp.encode(bp.set_pattern(2, Pattern.IDLE))
    decoder = FrameDecoder()
    assert decoder.feed(first[:-2] + second) == [bp.set_pattern(2, Pattern.IDLE)]


def test_invalid_escape_sequence_drops_frame() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(bytes((bp.START, bp.ESCAPE, 0x00, 0x01, 0x02))) == []
    assert decoder.feed(bp.encode(bp.ack(3))) == [bp.ack(3)]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (Frame(1, 0x00), NakReason.UNKNOWN_COMMAND),
        (Frame(1, 0x7F, b"\x01"), NakReason.UNKNOWN_COMMAND),
        (Frame(1, bp.Reply.ACK), NakReason.UNKNOWN_COMMAND),  # a reply is not a command
        (Frame(1, Command.SET_PATTERN), NakReason.BAD_LENGTH),
        (Frame(1, Command.SET_PATTERN, b"\x01\x01"), NakReason.BAD_LENGTH),
        (Frame(1, Command.BUZZER, b"\x01"), NakReason.BAD_LENGTH),
        (Frame(1, Command.HEARTBEAT, b""), NakReason.BAD_LENGTH),
        (Frame(1, Command.QUERY, b"\x00"), NakReason.BAD_LENGTH),
        (Frame(1, Command.SET_PATTERN, b"\x05"), NakReason.BAD_ARGUMENT),
        (Frame(1, Command.SET_PATTERN, b"\xff"), NakReason.BAD_ARGUMENT),
    ],
)
def test_bad_commands_are_refused_with_the_right_reason(frame: Frame, reason: NakReason) -> None:
    assert bp.check_command(frame) is reason


def test_every_well_formed_command_is_accepted() -> None:
    good = [bp.set_pattern(0, p) for p in Pattern]
    good += [bp.buzzer(1, 0), bp.buzzer(2, 500), bp.buzzer(3, bp.BUZZER_UNTIL_OFF)]
    good += [bp.heartbeat(4, 0), bp.heartbeat(5, 3000), bp.query(6)]
    assert [bp.check_command(f) for f in good] == [None] * len(good)


def test_random_commands_are_either_accepted_or_refused_never_crash() -> None:
    rng = random.Random(5)
    for _ in range(5000):
        frame = random_frame(rng)
        reason = bp.check_command(frame)
        assert reason is None or isinstance(reason, NakReason)
        if reason is None:
            assert frame.kind in set(Command)


def test_encode_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="argument bytes"):
        bp.encode(Frame(1, 1, bytes(bp.MAX_ARGS + 1)))
    with pytest.raises(ValueError, match="seq"):
        bp.encode(Frame(256, 1))
    with pytest.raises(ValueError, match="type"):
        bp.encode(Frame(1, -1))
    with pytest.raises(ValueError, match="buzzer"):
        bp.buzzer(1, 0x10000)


def test_state_report_round_trips_and_nonsense_is_refused() -> None:
    state = bp.DeviceState(Pattern.FAULT, buzzer_on=True, watchdog_tripped=True, watchdog_off=False)
    assert bp.parse_state(bp.state_report(7, state)) == state
    with pytest.raises(ValueError, match="unknown pattern"):
        bp.parse_state(Frame(7, bp.Reply.STATE, b"\x09\x00\x00"))
    with pytest.raises(ValueError, match="buzzer"):
        bp.parse_state(Frame(7, bp.Reply.STATE, b"\x01\x02\x00"))
    with pytest.raises(ValueError, match="not a STATE"):
        bp.parse_state(bp.ack(7))
