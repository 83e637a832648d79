"""Fuzzing the beacon's line protocol decoder (lfr_contracts.beacon.FrameDecoder) and the reply checks.

What comes up the serial line is whatever a broken, foreign or hostile device sends. The decoder must never
raise, never hold more than one frame's bytes, resynchronise at the next START whatever came before, and
give the same frames however the stream is cut into reads.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import bounded, fuzz, mutated
from lfr_contracts import beacon
from lfr_contracts.beacon import BadChecksum, DeviceState, Frame, FrameDecoder, Pattern

frames = st.builds(
    Frame,
    seq=st.integers(0, 255),
    kind=st.integers(0, 255),
    args=st.binary(max_size=beacon.MAX_ARGS),
)
# Real traffic: what the driver and the simulated beacon send, START and ESCAPE bytes included.
REAL_STREAM = b"".join(
    beacon.encode(f)
    for f in (
        beacon.heartbeat(0x7E, 3000),
        beacon.set_pattern(1, Pattern.ALERT),
        beacon.ack(0x7D),
        beacon.state_report(2, DeviceState(Pattern.FAULT, True, True, False)),
        beacon.buzzer(3, 0x7E7D),
        beacon.nak(4, beacon.NakReason.BAD_CHECKSUM),
        beacon.query(5),
    )
)


def decode(stream: bytes, cuts: list[int] | None = None) -> tuple[list[Frame | BadChecksum], FrameDecoder]:
    decoder = FrameDecoder()
    events: list[Frame | BadChecksum] = []
    at = 0
    for cut in sorted(cuts or []):
        events += decoder.feed(stream[at:cut])
        at = cut
        assert len(decoder._body) <= 1 + beacon.MAX_LEN + 2, "the decoder holds more than one frame"
    events += decoder.feed(stream[at:])
    return events, decoder


def check_frame(event: Frame | BadChecksum) -> None:
    """What a decoded frame promises the driver; its reply checks return or raise ValueError only."""
    if isinstance(event, BadChecksum):
        assert 0 <= event.seq <= 255
        return
    assert 0 <= event.seq <= 255 and 0 <= event.kind <= 255 and len(event.args) <= beacon.MAX_ARGS
    assert beacon.encode(event)  # a decoded frame is always one that could have been sent
    reason = beacon.check_command(event)
    assert reason is None or isinstance(reason, beacon.NakReason)
    try:
        beacon.parse_state(event)
    except ValueError as refused:
        assert str(refused)


@fuzz(200)
@given(st.binary(max_size=2048), st.lists(st.integers(0, 2048), max_size=8))
def test_any_byte_stream_decodes_without_raising(stream: bytes, cuts: list[int]) -> None:
    with bounded():
        events, _ = decode(stream, cuts)
    for event in events:
        check_frame(event)
    assert decode(stream)[0] == events, "the frames depend on how the stream was cut into reads"


@fuzz(200)
@given(mutated(REAL_STREAM, max_mutations=10), st.lists(st.integers(0, 256), max_size=8))
def test_mutated_real_traffic_decodes_without_raising(stream: bytes, cuts: list[int]) -> None:
    events, _ = decode(stream, cuts)
    for event in events:
        check_frame(event)
    assert decode(stream)[0] == events


@fuzz(200)
@given(st.binary(max_size=512), frames)
def test_a_good_frame_after_any_garbage_is_decoded(garbage: bytes, frame: Frame) -> None:
    """Resynchronisation: whatever was lost before, the next whole frame is read exactly."""
    events, decoder = decode(garbage + beacon.encode(frame))
    assert events[-1] == frame
    assert decoder.take_discarded() >= 0


@fuzz(100)
@given(st.lists(frames, min_size=1, max_size=20), st.lists(st.integers(0, 400), max_size=10))
def test_real_frames_come_out_exactly_however_the_reads_are_cut(sent: list[Frame], cuts: list[int]) -> None:
    events, decoder = decode(b"".join(beacon.encode(f) for f in sent), cuts)
    assert events == sent
    assert decoder.take_discarded() == 0
