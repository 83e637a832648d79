"""Fuzzing photo decoding (lfr_edge.vision.image): JPEG and PNG bytes to an RGB array, or ImageError.

Photos reach the unit's tools from outside (enrolment folders, a handset's saved pictures, offline photo
tools). Every case must decode to an RGB array of at most MAX_PIXELS or raise `ImageError`; the size a
header declares is checked before anything is decoded, so a small file cannot make the decoder allocate
gigabytes, and only JPEG and PNG reach the decoder at all.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz_helpers import bounded, fuzz, holds, mutated
from lfr_edge.vision.image import encode_jpeg
from lfr_tools.photos.image import MAX_PIXELS, ImageError, declared_size, decode_image, read_image

RNG = np.random.default_rng(7)
PICTURE = (RNG.random((48, 64, 3)) * 255).astype(np.uint8)
REAL_JPEG = encode_jpeg(PICTURE)
REAL_PNG = bytes(cv2.imencode(".png", PICTURE)[1].tobytes())
PROGRESSIVE_JPEG = bytes(cv2.imencode(".jpg", PICTURE, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
# A decoded photo is at most MAX_PIXELS of RGB; anything more than that is a bomb getting through.
DECODE_BOUND = 3 * MAX_PIXELS + (64 << 20)


def png(width: int, height: int, rows: bytes = b"") -> bytes:
    """A well-formed PNG header declaring `width` x `height`, with valid CRCs and a tiny compressed body."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """The real JPEG with its start-of-frame rewritten to declare another size."""
    at = REAL_JPEG.index(b"\xff\xc0")
    return REAL_JPEG[: at + 5] + struct.pack(">HH", height, width) + REAL_JPEG[at + 9 :]


def decoded(data: bytes) -> np.ndarray:
    image = decode_image(data, "fuzz")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] * image.shape[1] <= MAX_PIXELS
    return image


# Found or feared, each reproduced first -----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(png(30_000, 30_000), id="png-30000x30000"),
        pytest.param(png(1 << 31, 1), id="png-2^31-wide"),
        pytest.param(jpeg_declaring(60_000, 60_000), id="jpeg-60000x60000"),
        pytest.param(png(0, 10), id="png-zero-wide"),
    ],
)
def test_a_declared_size_too_large_is_refused_before_decoding(data: bytes) -> None:
    with bounded(max_bytes=64 << 20), pytest.raises(ImageError, match="not decoded"):
        decode_image(data, "bomb.png")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(bytes(cv2.imencode(".bmp", PICTURE)[1].tobytes()), id="bmp"),
        pytest.param(bytes(cv2.imencode(".tiff", PICTURE)[1].tobytes()), id="tiff"),
        pytest.param(bytes(cv2.imencode(".ppm", PICTURE)[1].tobytes()), id="ppm"),
        pytest.param(REAL_PNG[:20], id="png-cut-in-its-header"),
    ],
)
def test_only_jpeg_and_png_reach_the_decoder(data: bytes) -> None:
    with pytest.raises(ImageError, match="JPEG or PNG expected"):
        decode_image(data, "photo")


def test_the_declared_size_is_the_decoded_size() -> None:
    for data in (REAL_JPEG, REAL_PNG, PROGRESSIVE_JPEG):
        assert declared_size(data) == (64, 48)
        assert decoded(data).shape == (48, 64, 3)


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    with big.open("wb") as fh:
        fh.write(REAL_JPEG)
        fh.truncate(80 << 20)  # sparse: 80 MiB on paper
    with bounded(max_bytes=(64 << 20) + (16 << 20)), pytest.raises(ImageError, match="too large for a photo"):
        read_image(big)


# Property-based --------------------------------------------------------------------------------------


@fuzz(200)
@given(st.sampled_from([REAL_JPEG, PROGRESSIVE_JPEG, REAL_PNG]).flatmap(mutated))
def test_mutated_real_photos_decode_or_are_refused(data: bytes) -> None:
    holds(ImageError, lambda: decoded(data))


@fuzz(100)
@given(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b""]), st.binary(max_size=2048))
def test_arbitrary_bytes_after_a_magic_decode_or_are_refused(magic: bytes, rest: bytes) -> None:
    holds(ImageError, lambda: decoded(magic + rest))


@fuzz(100)
@given(st.integers(0, 65_535), st.integers(0, 65_535), st.booleans())
def test_any_declared_size_is_checked_before_decoding(width: int, height: int, as_png: bool) -> None:
    data = png(width, height) if as_png else jpeg_declaring(width, height)
    with bounded(max_bytes=DECODE_BOUND):
        try:
            decoded(data)
        except ImageError as refused:
            assert width * height > 0 or "not decoded" in str(refused)
